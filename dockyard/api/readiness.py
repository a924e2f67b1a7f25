"""The readiness answer and the cache that keeps it, so ``/readyz`` stays cheap.

``/readyz`` is public: the dependencies' state is checked by one task at a time and the
answer kept for ``READINESS_TTL`` seconds. However many probes (or anonymous callers)
ask at once, at most one round of checks is spent per second; the pool cannot be
drained through it. The checks themselves are the health routes' (``routes.health``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from pydantic import BaseModel, Field

READINESS_TTL = 1.0


class DependencyCheck(BaseModel):
    """The state of one dependency."""

    name: str = Field(description="the dependency: postgres, kubernetes or redis")
    ready: bool = Field(description="whether it answered in time")
    required: bool = Field(
        default=True,
        description=(
            "whether this replica cannot serve without it; a dependency it runs without "
            "(Redis, or the apiserver while the watch caches are synced) only degrades it"
        ),
    )
    reason: str | None = Field(default=None, description="why it is not ready")


class Readiness(BaseModel):
    """Whether this replica can serve: every dependency it cannot do without answers."""

    status: Literal["ready", "not-ready"] = Field(
        description="ready when every required dependency answered"
    )
    degraded: list[str] = Field(
        default_factory=list,
        description="dependencies that are down but which this replica serves without",
    )
    checks: list[DependencyCheck] = Field(description="one entry per dependency")

    @classmethod
    def of(cls, checks: list[DependencyCheck]) -> Readiness:
        ready = all(check.ready or not check.required for check in checks)
        return cls(
            status="ready" if ready else "not-ready",
            degraded=[check.name for check in checks if not check.ready and not check.required],
            checks=checks,
        )


class ReadinessCache:
    """The last answer of ``check`` for ``ttl`` seconds, and the one check in flight."""

    def __init__(
        self, check: Callable[[], Awaitable[Readiness]], ttl: float = READINESS_TTL
    ) -> None:
        self.check = check
        self.ttl = ttl
        self._answer: Readiness | None = None
        self._checked_at = float("-inf")
        self._running: asyncio.Task[Readiness] | None = None

    def last(self, within: float = 10.0) -> Readiness | None:
        """The latest answer if it is at most ``within`` seconds old (probes come every
        few seconds), else None."""
        if time.monotonic() - self._checked_at > within:
            return None
        return self._answer

    async def get(self) -> Readiness:
        if self._answer is not None and time.monotonic() - self._checked_at < self.ttl:
            return self._answer
        if self._running is None:
            self._running = asyncio.create_task(self._refresh(), name="readiness-check")
        # shield: a probe that disconnects must not cancel the check others wait on.
        return await asyncio.shield(self._running)

    async def _refresh(self) -> Readiness:
        try:
            self._answer = await self.check()
            self._checked_at = time.monotonic()
            return self._answer
        finally:
            self._running = None
