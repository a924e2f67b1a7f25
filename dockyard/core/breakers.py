"""One circuit breaker per dependency: PostgreSQL, the apiserver, Redis and S3.

A dependency that times out or refuses connections several times in a row is *open*
for a few seconds: calls to it fail at once with :class:`DependencyUnavailable`
instead of each waiting out its own deadline, and the API answers 503 with
``Retry-After``. After ``open_seconds`` the next calls go through (half-open); the first
success closes the breaker, the first failure opens it again.

Only failures of the dependency itself count: a timeout, a refused or dropped
connection. An answer the dependency gives (a 404 from the apiserver, a unique
violation from PostgreSQL) is the caller's business and leaves the breaker alone.

The breakers are purgatory's (``AsyncCircuitBreakerFactory``, in memory: each replica
judges its own connections). Each breaker's state is the gauge
``dockyard_dependency_breaker_state`` (0 closed, 1 half-open, 2 open).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any, Final

import aiohttp
import asyncpg
import botocore.exceptions
import redis.exceptions
from prometheus_client import CollectorRegistry, Gauge
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

STATE_VALUES: Final = {"closed": 0, "half-opened": 1, "opened": 2}


class Dependency(StrEnum):
    """What a breaker guards."""

    POSTGRES = "postgres"
    KUBERNETES = "kubernetes"
    REDIS = "redis"
    S3 = "s3"
    WEBHOOK = "webhook"


class DependencyUnavailable(Exception):
    """``dependency`` failed or did not answer in time; ask again in ``retry_after`` seconds."""

    def __init__(self, dependency: Dependency, retry_after: float, reason: str) -> None:
        super().__init__(f"{dependency} is unavailable: {reason}")
        self.dependency = dependency
        self.retry_after = retry_after
        self.reason = reason


# Each client library's words for "down or hung". TimeoutError covers asyncio's
# wait_for, asyncpg's command_timeout and the pool's acquire timeout; OSError covers a
# refused or reset connection (aiohttp's ClientOSError too).
_OUTAGES: Final = (
    TimeoutError,
    OSError,
    DependencyUnavailable,
    aiohttp.ServerDisconnectedError,
    aiohttp.ServerTimeoutError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    # S3 through botocore: an endpoint that refuses, drops or does not answer.
    botocore.exceptions.ConnectionError,
    botocore.exceptions.ConnectionClosedError,
    botocore.exceptions.ReadTimeoutError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the dependency is down or hung, rather than answering."""
    return isinstance(exc, _OUTAGES)


class Breakers:
    """The process's breakers, one per :class:`Dependency`, and their state gauge."""

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        open_seconds: float = 3.0,
        is_failure: Callable[[BaseException], bool] = is_outage,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.open_seconds = open_seconds
        self._is_failure = is_failure
        # purgatory counts every exception it is not told to exclude: exclude the rest.
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=failure_threshold,
            default_ttl=open_seconds,
            exclude=[(BaseException, lambda exc: not is_failure(exc))],
        )
        self._opened_at: dict[str, float] = {}
        self._states: dict[str, str] = {}
        self.state = Gauge(
            "dockyard_dependency_breaker_state",
            "Each dependency's circuit breaker: 0 closed, 1 half-open, 2 open.",
            ["dependency"],
            registry=registry,
        )
        for dependency in Dependency:
            self.state.labels(dependency.value).set(0)
        self._factory.add_listener(self._changed)

    def _changed(self, name: str, event_name: str, event: Any) -> None:
        if event_name != "state_changed":
            return
        self._states[name] = event.state
        self.state.labels(name).set(STATE_VALUES.get(event.state, 0))
        if event.state == "opened":
            self._opened_at[name] = time.monotonic()

    def retry_after(self, dependency: Dependency, key: str | None = None) -> float:
        """Seconds until an open breaker lets calls through again (at least 1)."""
        opened = self._opened_at.get(_name(dependency, key))
        if opened is None:
            return 1.0
        return max(1.0, self.open_seconds - (time.monotonic() - opened))

    def forget(self, dependency: Dependency, key: str) -> None:
        """Drop the breaker of one instance that is gone (a deleted Webhook): its state,
        its gauge series and purgatory's record of it, which purgatory never drops."""
        name = _name(dependency, key)
        self._states.pop(name, None)
        self._opened_at.pop(name, None)
        with contextlib.suppress(KeyError):
            self.state.remove(name)
        records = getattr(getattr(self._factory.uow, "contexts", None), "breakers", None)
        if isinstance(records, dict):
            records.pop(name, None)

    def state_of(self, dependency: Dependency, key: str | None = None) -> str:
        """purgatory's name of the breaker's state: closed, half-opened or opened."""
        return self._states.get(_name(dependency, key), "closed")

    def is_open(self, dependency: Dependency, key: str | None = None) -> bool:
        """Whether calls to ``dependency`` (at ``key``) are refused right now."""
        return self._states.get(_name(dependency, key)) == "opened"

    @asynccontextmanager
    async def guard(self, dependency: Dependency, key: str | None = None) -> AsyncIterator[None]:
        """Run the block as one call to ``dependency``.

        ``key`` gives one instance of a dependency a breaker of its own (an S3 endpoint:
        one tenant's dead endpoint must not refuse another tenant's calls); its state is
        the gauge's ``dependency="s3:<key>"``.

        Raises :class:`DependencyUnavailable` at once while the breaker is open, and in
        place of a timeout or connection failure inside the block (which the breaker
        counts); other exceptions pass through unchanged and uncounted.
        """
        breaker = await self._factory.get_breaker(_name(dependency, key))
        try:
            async with breaker:
                yield
        except OpenedState:
            raise DependencyUnavailable(
                dependency, self.retry_after(dependency, key), "circuit breaker open"
            ) from None
        except DependencyUnavailable:
            raise
        except BaseException as exc:
            if not self._is_failure(exc):
                raise
            raise DependencyUnavailable(
                dependency, self.retry_after(dependency, key), _describe(exc)
            ) from exc


def _name(dependency: Dependency, key: str | None) -> str:
    return dependency.value if key is None else f"{dependency.value}:{key}"


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError | botocore.exceptions.ReadTimeoutError):
        return "no answer in time"
    return f"connection failed ({type(exc).__name__})"


__all__ = ["Breakers", "Dependency", "DependencyUnavailable", "is_outage"]
