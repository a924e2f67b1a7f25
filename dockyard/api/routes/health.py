"""Liveness and readiness probes; the only routes that need no authentication."""

from __future__ import annotations

import asyncio
from typing import Literal

from aiohttp import web
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from dockyard.api import keys
from dockyard.api.openapi import Operation, OperationRegistry

_CHECK_TIMEOUT = 2.0


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


async def readyz(request: web.Request) -> web.Response:
    probes = [_check_postgres(request.app), _check_kubernetes(request.app)]
    redis = request.app[keys.REDIS]
    if redis is not None:  # only checked when configured (several replicas share it)
        probes.append(_check_redis(redis))
    checks = await asyncio.gather(*probes)
    ready = all(c.ready for c in checks)
    body = Readiness(status="ready" if ready else "not-ready", checks=list(checks))
    return web.json_response(body.model_dump(exclude_none=True), status=200 if ready else 503)


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
