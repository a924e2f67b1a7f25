"""Typed application keys: everything the app holds, declared in one place."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp import web
from opentelemetry.trace import Tracer
from redis.asyncio import Redis

from dockyard.api.auth import Authenticator, Authorizer, Principal
from dockyard.api.cache import WatchCache
from dockyard.api.cursors import Sealer
from dockyard.api.event_tail import EventTail
from dockyard.api.idempotency import IdempotencyStore
from dockyard.api.metrics import ApiMetrics
from dockyard.api.namespace_births import NamespaceBirths
from dockyard.api.openapi import Operation
from dockyard.api.ratelimit.decisions import Verdict
from dockyard.api.ratelimit.reviews import ReviewCap
from dockyard.api.ratelimit.service import RateLimiting
from dockyard.api.readiness import ReadinessCache
from dockyard.api.stream_slots import OpenStreams
from dockyard.core.audit_rows import OwnWriters
from dockyard.core.breakers import Breakers
from dockyard.core.events import Event
from dockyard.core.kube import KubeClient
from dockyard.core.settings import Settings
from dockyard.core.telemetry import Tracing

SETTINGS = web.AppKey("settings", Settings)
DB_POOL = web.AppKey("db_pool", asyncpg.Pool)
KUBE = web.AppKey("kube", KubeClient)
OWN_WRITERS = web.AppKey("own_writers", OwnWriters)
OPENAPI_DOCUMENT = web.AppKey("openapi_document", dict[str, Any])
OPERATIONS = web.AppKey("operations", dict[str, Operation])
AUTHENTICATOR = web.AppKey("authenticator", Authenticator)
AUTHORIZER = web.AppKey("authorizer", Authorizer)
NAMESPACE_BIRTHS = web.AppKey("namespace_births", NamespaceBirths)
# Seals the cursors of lists that may pass what their caller cannot read.
CURSORS = web.AppKey("cursors", Sealer)
# The event streams each user holds open on this replica.
STREAMS = web.AppKey("streams", OpenStreams)
# None when DOCKYARD_REDIS_URL is unset (one replica: counters in memory).
REDIS = web.AppKey[Redis | None]("redis")
METRICS = web.AppKey("metrics", ApiMetrics)
# One circuit breaker per dependency, shared by the pool, the clients and the limiter.
BREAKERS = web.AppKey("breakers", Breakers)
TRACING = web.AppKey("tracing", Tracing)
TRACER = web.AppKey("tracer", Tracer)
ENVIRONMENT_CACHE = web.AppKey("environment_cache", WatchCache)
IDEMPOTENCY = web.AppKey("idempotency", IdempotencyStore)
EVENT_TAIL = web.AppKey("event_tail", EventTail)
RATE_LIMITING = web.AppKey("rate_limiting", RateLimiting)
READINESS = web.AppKey("readiness", ReadinessCache)
REVIEW_CAP = web.AppKey("review_cap", ReviewCap)
RATE_LIMIT_POLICY_CACHE = web.AppKey("rate_limit_policy_cache", WatchCache)
SCALING_POLICY_CACHE = web.AppKey("scaling_policy_cache", WatchCache)
BACKUP_CACHE = web.AppKey("backup_cache", WatchCache)
BACKUP_SCHEDULE_CACHE = web.AppKey("backup_schedule_cache", WatchCache)
RESTORE_CACHE = web.AppKey("restore_cache", WatchCache)
RESTORE_DRILL_CACHE = web.AppKey("restore_drill_cache", WatchCache)
WEBHOOK_CACHE = web.AppKey("webhook_cache", WatchCache)
BACKUP_STORE_CACHE = web.AppKey("backup_store_cache", WatchCache)
# Every cache above that reads are served from (readiness asks whether they synced).
WATCH_CACHES = web.AppKey("watch_caches", list[WatchCache])

# Per-request state, set by the middlewares.
REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)
OPERATION = web.RequestKey("operation", Operation)
AUDIT = web.RequestKey("audit", dict[str, Any])
# The name of the object a create made (or was refused): its path names only the collection.
AUDIT_NAME = web.RequestKey("audit_name", str)
# The events a write announces; the audit middleware logs them with its row.
EVENTS = web.RequestKey("events", list[Event])
RATE_LIMIT = web.RequestKey("rate_limit", Verdict)
# Set once authenticate_and_authorize let the request through (the rate limit's headers
# name a tenant's rules only then).
AUTHORIZED = web.RequestKey("authorized", bool)
# The watch cache a read was answered from (see middlewares.add_staleness_headers).
READ_FROM = web.RequestKey("read_from", WatchCache)
