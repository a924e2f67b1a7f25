"""The Generic Cell Rate Algorithm (GCRA), as pure functions over one number per bucket.

GCRA is a token bucket that stores, instead of a token count and a refill time, a
single *theoretical arrival time* (TAT): the moment at which the bucket would be full
again if no more requests came. A request of ``cost`` units pushes the TAT forward by
``cost`` emission intervals; it is allowed when the pushed TAT is no further ahead of
now than the bucket's capacity. One number per key makes the Redis script short and
its state cheap to expire (``PX`` = TAT - now: past it, the key means "full").

Units: ``Quota`` is in requests and seconds. The Redis script
(``backends.GCRA_SCRIPT``) does the same arithmetic in microseconds with the server's
clock, and the integration tests check that both agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Rounding slack for float TAT arithmetic: a request this much early still passes, so
# a bucket drained exactly to its capacity in one instant is not refused by an ulp.
SLACK_SECONDS = 1e-6


@dataclass(frozen=True, slots=True)
class Quota:
    """``requests`` per ``period`` seconds in the long run, ``requests + burst`` at once."""

    requests: int
    period: float
    burst: int = 0

    def __post_init__(self) -> None:
        if self.requests <= 0 or self.period <= 0 or self.burst < 0:
            raise ValueError("a quota needs requests > 0, period > 0 and burst >= 0")

    @property
    def interval(self) -> float:
        """Seconds one unit of cost occupies (the emission interval, T)."""
        return self.period / self.requests

    @property
    def capacity(self) -> int:
        """Units a bucket at rest holds: what a client may spend at once."""
        return self.requests + self.burst

    @property
    def tolerance(self) -> float:
        """How far ahead of now the TAT may run (the delay variation tolerance, tau)."""
        return self.capacity * self.interval


@dataclass(frozen=True, slots=True)
class Outcome:
    """One bucket's answer to one request."""

    allowed: bool
    tat: float
    """The TAT to store if this outcome is committed (the old one when not allowed)."""
    remaining: int
    """Units left after this request (before it, when it was refused)."""
    reset: float
    """Seconds until the bucket is full again."""
    retry_after: float
    """Seconds until a request of the same cost would pass; 0 when allowed."""


def remaining(quota: Quota, tat: float, now: float) -> int:
    """Whole units left in a bucket whose TAT is ``tat``."""
    ahead = max(tat - now, 0.0)
    units = math.floor((quota.tolerance - ahead + SLACK_SECONDS) / quota.interval)
    return max(0, min(quota.capacity, units))


def evaluate(quota: Quota, tat: float | None, now: float, cost: int = 1) -> Outcome:
    """Whether a request of ``cost`` units passes a bucket whose stored TAT is ``tat``
    (None: never used, or expired, which both mean full)."""
    base = now if tat is None or tat < now else tat
    pushed = base + cost * quota.interval
    allow_at = pushed - quota.tolerance
    if allow_at <= now + SLACK_SECONDS:
        return Outcome(True, pushed, remaining(quota, pushed, now), pushed - now, 0.0)
    return Outcome(False, base, remaining(quota, base, now), base - now, allow_at - now)


def commits(allowed: Sequence[bool], enforced: Sequence[bool]) -> list[bool]:
    """Which buckets of one request take its cost, given each bucket's own answer.

    Enforced buckets are all-or-nothing: when any of them refuses, the request is
    rejected and none of them is charged, so a request refused by one rule does not
    also eat into another rule's quota. A rejected request charges no shadow bucket
    either: it reached nothing, and what a client can make the limiter store must
    grow with the requests it is let through, not with those it sends (a flood of
    refused requests, each with a new value of a shadow rule's header, would leave a
    bucket per value). A shadow bucket is charged when the request passes the enforced
    rules and it alone would let it through, so it measures what it would do if it
    were enforced on top of them.
    """
    every_enforced_allows = all(a for a, e in zip(allowed, enforced, strict=True) if e)
    return [every_enforced_allows and a for a in allowed]
