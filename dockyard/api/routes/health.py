"""Liveness and readiness probes; the only routes that need no authentication.

``/readyz`` is public, so it must be cheap: its answer comes from the app's
``ReadinessCache`` (``dockyard.api.readiness``), which runs ``check_all`` at most once
per second, so however many probes ask, at most one database connection, one
apiserver request and one Redis ping are spent per second.

Readiness means "this replica can serve its core job" (``docs/operations.md``): it
fails when PostgreSQL (which every audited write needs) is down, or when the apiserver
is down before the watch caches have synced. Redis, and the apiserver once the caches
hold the kinds, only degrade the replica: ``degraded`` and the gauge
``dockyard_api_dependency_ready`` say so, the status stays ready. Liveness checks no
dependency at all. Each check has ``CHECK_TIMEOUT`` seconds, so ``/readyz`` answers
within a second whatever hangs.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from dockyard.api import keys
from dockyard.api.openapi import Operation, OperationRegistry
from dockyard.api.readiness import DependencyCheck, Readiness

CHECK_TIMEOUT = 0.8


class Liveness(BaseModel):
    """The process is alive and serving."""

    status: Literal["ok"] = Field(description="always ok when the process answers")


async def healthz(_: web.Request) -> web.Response:
    return web.json_response(Liveness(status="ok").model_dump())


async def _check_postgres(app: web.Application) -> DependencyCheck:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await app[keys.DB_POOL].fetchval("SELECT 1")
    except Exception as exc:  # any failure means not ready; the reason says which
        return DependencyCheck(name="postgres", ready=False, reason=type(exc).__name__)
    return DependencyCheck(name="postgres", ready=True)


async def _check_kubernetes(app: web.Application) -> DependencyCheck:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            ok = await app[keys.KUBE].healthy()
    except TimeoutError:
        ok = False
    if ok:
        return DependencyCheck(name="kubernetes", ready=True)
    # Reads are served from the watch caches; only before they synced is there nothing
    # to serve.
    caches = app.get(keys.WATCH_CACHES)
    synced = bool(caches) and all(cache.synced.is_set() for cache in caches or ())
    reason = "apiserver /readyz failed"
    if synced:
        reason += "; reads are served from the watch caches"
    return DependencyCheck(name="kubernetes", ready=False, required=not synced, reason=reason)


async def _check_redis(client: Redis) -> DependencyCheck:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await client.ping()
    except Exception as exc:  # any failure means not ready; the reason says which
        # The limiter runs without it (DOCKYARD_RATELIMIT_FAILURE_MODE): degraded only.
        return DependencyCheck(name="redis", ready=False, required=False, reason=type(exc).__name__)
    return DependencyCheck(name="redis", ready=True, required=False)


async def check_all(app: web.Application) -> Readiness:
    """Check every dependency at once: Postgres, the apiserver and Redis when configured."""
    probes = [_check_postgres(app), _check_kubernetes(app)]
    redis = app[keys.REDIS]
    if redis is not None:  # only checked when configured (several replicas share it)
        probes.append(_check_redis(redis))
    checks = list(await asyncio.gather(*probes))
    for check in checks:
        app[keys.METRICS].dependency_ready.labels(check.name).set(1 if check.ready else 0)
    return Readiness.of(checks)


async def readyz(request: web.Request) -> web.Response:
    body = await request.app[keys.READINESS].get()
    status = 200 if body.status == "ready" else 503
    return web.json_response(body.model_dump(exclude_none=True), status=status)


def register(registry: OperationRegistry) -> None:
    registry.add(
        Operation(
            "GET",
            "/healthz",
            "getLiveness",
            "Liveness probe",
            "health",
            healthz,
            response_model=Liveness,
            authenticated=False,
        )
    )
    registry.add(
        Operation(
            "GET",
            "/readyz",
            "getReadiness",
            "Readiness probe",
            "health",
            readyz,
            response_model=Readiness,
            authenticated=False,
            responses={503: "A dependency is not ready"},
            model_statuses=frozenset({503}),
        )
    )
