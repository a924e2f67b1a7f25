"""The app factory: routes, middlewares and the resources held for the app's lifetime.

Pools and clients are ``cleanup_ctx`` generators, so they are created when the app
starts on its event loop and closed when it stops, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence

from aiohttp import web
from opentelemetry.sdk.trace import SpanProcessor
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from dockyard.api import keys, middlewares, paths, telemetry, transport
from dockyard.api.audit import middleware as audit_middleware
from dockyard.api.audit import retention as audit_retention
from dockyard.api.auth import Authenticator, Authorizer
from dockyard.api.cache import WatchCache
from dockyard.api.cursors import Sealer
from dockyard.api.event_tail import EventTail
from dockyard.api.idempotency import IdempotencyStore
from dockyard.api.metrics import ApiMetrics
from dockyard.api.namespace_births import NamespaceBirths
from dockyard.api.openapi import OperationRegistry, build_document
from dockyard.api.ratelimit import lifecycle as rate_limits
from dockyard.api.ratelimit import middleware as rate_limit_middleware
from dockyard.api.readiness import ReadinessCache
from dockyard.api.routes import audit as audit_routes
from dockyard.api.routes import (
    backups,
    backupschedules,
    backupstores,
    docs,
    environments,
    health,
    kubernetes_audit,
    me,
    meta,
    policies,
    restoredrills,
    restores,
    webhooks,
)
from dockyard.api.stream_slots import OpenStreams
from dockyard.core import db
from dockyard.core.audit_rows import OwnWriters
from dockyard.core.breakers import Breakers
from dockyard.core.kube import KubeClient, KubeTimeouts, load_config
from dockyard.core.resources import (
    BACKUP_SCHEDULES,
    BACKUP_STORES,
    BACKUPS,
    ENVIRONMENTS,
    RESTORE_DRILLS,
    RESTORES,
    SCALING_POLICIES,
    WEBHOOKS,
    ResourceType,
)
from dockyard.core.settings import Settings

API_USER_AGENT = "dockyard-api"


def registry() -> OperationRegistry:
    """Every operation of the API, in a stable order."""
    ops = OperationRegistry()
    for module in (
        health,
        meta,
        me,
        environments,
        policies,
        backups,
        backupschedules,
        backupstores,
        restores,
        restoredrills,
        webhooks,
        audit_routes,
        kubernetes_audit,
    ):
        module.register(ops)
    return ops


async def _database(app: web.Application) -> AsyncIterator[None]:
    provider = app[keys.TRACING].provider
    async with db.pool_context(
        app[keys.SETTINGS], tracer_provider=provider, breakers=app[keys.BREAKERS]
    ) as pool:
        app[keys.DB_POOL] = pool
        yield


async def _idempotency(app: web.Application) -> AsyncIterator[None]:
    app[keys.IDEMPOTENCY] = IdempotencyStore(app[keys.DB_POOL])
    yield


async def _event_tail(app: web.Application) -> AsyncIterator[None]:
    tail = app[keys.EVENT_TAIL] = EventTail(app[keys.DB_POOL])
    await tail.start()
    yield
    await tail.stop()


# The kinds the API reads from a watch cache, with the key each is held under.
# (RateLimitPolicies have their own cache, owned by the rate limiter.)
CACHED_KINDS: dict[ResourceType, web.AppKey[WatchCache]] = {
    ENVIRONMENTS: keys.ENVIRONMENT_CACHE,
    SCALING_POLICIES: keys.SCALING_POLICY_CACHE,
    BACKUPS: keys.BACKUP_CACHE,
    BACKUP_SCHEDULES: keys.BACKUP_SCHEDULE_CACHE,
    RESTORES: keys.RESTORE_CACHE,
    RESTORE_DRILLS: keys.RESTORE_DRILL_CACHE,
    WEBHOOKS: keys.WEBHOOK_CACHE,
    BACKUP_STORES: keys.BACKUP_STORE_CACHE,
}


async def _watch_caches(app: web.Application) -> AsyncIterator[None]:
    caches = [WatchCache(app[keys.KUBE], resource) for resource in CACHED_KINDS]
    for cache, key in zip(caches, CACHED_KINDS.values(), strict=True):
        app[key] = cache
    app[keys.WATCH_CACHES] = caches
    for cache in caches:
        await cache.start()
    yield
    for cache in reversed(caches):
        await cache.stop()


async def _kubernetes(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    client = KubeClient.connect(
        load_config(settings.kubeconfig, os.environ),
        tracer_provider=app[keys.TRACING].provider,
        timeouts=KubeTimeouts.of(settings),
        breakers=app[keys.BREAKERS],
        # With its identity, the apiserver's audit sink tells this API's own calls apart.
        user_agent=API_USER_AGENT,
    )
    app[keys.KUBE] = client
    app[keys.OWN_WRITERS] = OwnWriters(settings.audit_own_users, client)
    app[keys.AUTHENTICATOR] = Authenticator(
        client, ttl=settings.auth_cache_ttl, audiences=settings.token_audiences
    )
    app[keys.AUTHORIZER] = Authorizer(client, ttl=settings.authz_cache_ttl)
    app[keys.NAMESPACE_BIRTHS] = NamespaceBirths(client)
    yield
    await client.close()


async def _redis(app: web.Application) -> AsyncIterator[None]:
    dsn = app[keys.SETTINGS].redis_dsn()
    if dsn is None:
        app[keys.REDIS] = None
        yield
        return
    # Connects lazily: Redis being down is for /readyz to report, not a start-up failure.
    # Deadlines in milliseconds (the limiter's budget) and one immediate retry (a dropped
    # idle connection), because requests wait on it: the default backoff adds seconds.
    settings = app[keys.SETTINGS]
    client = Redis.from_url(
        dsn,
        socket_connect_timeout=settings.redis_connect_timeout,
        socket_timeout=settings.redis_socket_timeout,
        retry=Retry(NoBackoff(), 1),
    )
    app[keys.REDIS] = client
    yield
    await client.aclose()


def create_app(
    settings: Settings,
    *,
    metrics_host: str = "127.0.0.1",
    span_processors: Sequence[SpanProcessor] = (),
) -> web.Application:
    """The API app.

    ``/metrics`` is served on ``metrics_host`` (the API's own bind address) at
    ``settings.metrics_port``; ``span_processors`` receive every span, beside the OTLP
    exporter when one is configured (tests pass an in-memory one).
    """
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            middlewares.request_context,
            telemetry.trace_requests,
            telemetry.measure_requests,
            middlewares.problems,
            transport.transport_security,
            transport.cors,
            # Names are checked before anything (the limiter, audit, authorization) reads them.
            paths.validate_path_parameters,
            # Before audit and authentication: see dockyard.api.ratelimit.middleware.
            rate_limit_middleware.limit_requests,
            audit_middleware.audit_trail,
            middlewares.authenticate_and_authorize,
        ],
    )
    app[keys.SETTINGS] = settings
    key = settings.cursor_key
    app[keys.CURSORS] = Sealer(key.get_secret_value() if key is not None else None)
    app[keys.STREAMS] = OpenStreams(settings.streams_per_user)
    app[keys.METRICS] = ApiMetrics()
    app[keys.BREAKERS] = Breakers(
        failure_threshold=settings.breaker_failure_threshold,
        open_seconds=settings.breaker_open_seconds,
        registry=app[keys.METRICS].registry,
    )
    app[keys.READINESS] = ReadinessCache(lambda: health.check_all(app))
    ops = registry()
    ops.install(app)
    app[keys.OPERATIONS] = {op.operation_id: op for op in ops.operations}
    app[keys.OPENAPI_DOCUMENT] = build_document(ops.operations)
    docs.install(app)  # plain routes: the docs UI is not part of the API contract
    app.on_response_prepare.append(middlewares.add_request_id_header)
    app.on_response_prepare.append(middlewares.add_staleness_headers)
    app.on_response_prepare.extend([transport.add_hsts_header, transport.add_cors_headers])
    app.on_response_prepare.append(rate_limit_middleware.add_rate_limit_headers)
    # Tracing first: the pool and the clients trace through it, and it flushes last.
    app.cleanup_ctx.extend(
        [telemetry.tracing(span_processors), telemetry.metrics_endpoint(metrics_host), _redis]
    )
    app.cleanup_ctx.extend([_database, _kubernetes, _idempotency, _event_tail, _watch_caches])
    app.cleanup_ctx.append(audit_retention.retention)  # after _database: it uses the pool
    app.cleanup_ctx.append(rate_limits.rate_limiting)  # after _kubernetes and _redis
    return app
