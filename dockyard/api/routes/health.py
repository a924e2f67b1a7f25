"""Liveness and readiness probes; the only routes that need no authentication.

``/readyz`` is public, so it must be cheap: the dependencies' state is checked by one
task at a time and the answer kept for ``READINESS_TTL`` seconds. However many probes
(or anonymous callers) ask at once, at most one database connection, one apiserver
request and one Redis ping are spent per second; the pool cannot be drained through it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from dockyard.api import keys
from dockyard.api.openapi import Operation, OperationRegistry

_CHECK_TIMEOUT = 2.0
READINESS_TTL = 1.0


class Liveness(BaseModel):
    """The process is alive and serving."""

    status: Literal["ok"] = Field(description="always ok when the process answers")


class DependencyCheck(BaseModel):
    """The state of one dependency."""

    name: str = Field(description="the dependency: postgres, kubernetes or redis")
    ready: bool = Field(description="whether it answered in time")
    reason: str | None = Field(default=None, description="why it is not ready")


class Readiness(BaseModel):
    """Whether every dependency the API needs answers."""

    status: Literal["ready", "not-ready"] = Field(description="ready when every check passed")
    checks: list[DependencyCheck] = Field(description="one entry per dependency")


async def healthz(_: web.Request) -> web.Response:
    return web.json_response(Liveness(status="ok").model_dump())


async def _check_postgres(app: web.Application) -> DependencyCheck:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            await app[keys.DB_POOL].fetchval("SELECT 1")
    except Exception as exc:  # any failure means not ready; the reason says which
        return DependencyCheck(name="postgres", ready=False, reason=type(exc).__name__)
    return DependencyCheck(name="postgres", ready=True)


async def _check_kubernetes(app: web.Application) -> DependencyCheck:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            ok = await app[keys.KUBE].healthy()
    except TimeoutError:
        ok = False
    if ok:
        return DependencyCheck(name="kubernetes", ready=True)
    return DependencyCheck(name="kubernetes", ready=False, reason="apiserver /readyz failed")


async def _check_redis(client: Redis) -> DependencyCheck:
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT):
            await client.ping()
    except Exception as exc:  # any failure means not ready; the reason says which
        return DependencyCheck(name="redis", ready=False, reason=type(exc).__name__)
    return DependencyCheck(name="redis", ready=True)


async def _check_all(app: web.Application) -> Readiness:
    probes = [_check_postgres(app), _check_kubernetes(app)]
    redis = app[keys.REDIS]
    if redis is not None:  # only checked when configured (several replicas share it)
        probes.append(_check_redis(redis))
    checks = await asyncio.gather(*probes)
    ready = all(c.ready for c in checks)
    return Readiness(status="ready" if ready else "not-ready", checks=list(checks))


class ReadinessCache:
    """The last readiness answer for ``ttl`` seconds, and the one check in flight."""

    def __init__(self, ttl: float = READINESS_TTL) -> None:
        self.ttl = ttl
        self._answer: Readiness | None = None
        self._checked_at = float("-inf")
        self._running: asyncio.Task[Readiness] | None = None

    async def get(self, app: web.Application) -> Readiness:
        if self._answer is not None and time.monotonic() - self._checked_at < self.ttl:
            return self._answer
        if self._running is None:
            self._running = asyncio.create_task(self._refresh(app), name="readiness-check")
        # shield: a probe that disconnects must not cancel the check others wait on.
        return await asyncio.shield(self._running)

    async def _refresh(self, app: web.Application) -> Readiness:
        try:
            self._answer = await _check_all(app)
            self._checked_at = time.monotonic()
            return self._answer
        finally:
            self._running = None


async def readyz(request: web.Request) -> web.Response:
    body = await request.app[keys.READINESS].get(request.app)
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
        )
    )
