"""Where buckets live: in this process's memory, or in Redis shared by every replica.

Both backends answer the same question, ``check(buckets)``, with the same semantics:
every bucket of one request is evaluated against the same clock, enforced buckets are
charged all-or-nothing, and shadow buckets each on its own, but only for a request the
enforced ones let through (``gcra.commits``): a refused request stores nothing.

- ``MemoryLimiter``: one replica. A dict of TATs; no I/O, nothing to fail. It holds at
  most ``capacity`` buckets: past that, it keeps the three quarters furthest from full
  and drops the rest (a dropped bucket is full, which errs towards allowing).
- ``RedisLimiter``: several replicas sharing one budget. One Lua script (loaded once,
  then run by EVALSHA) evaluates and charges every bucket of a request atomically,
  with Redis's clock, so replicas with skewed clocks still agree and the limit does
  not multiply with replicas. A TAT is stored with a ``PX`` expiry of TAT - now: past
  it the bucket is full, which is what a missing key means.

When Redis fails, ``RedisLimiter`` raises ``LimiterUnavailable``. Each call runs inside
Redis's circuit breaker (``dockyard.core.breakers``): once a few calls in a row have
timed out or failed to connect, it refuses without trying for a few seconds, so that a
dead or hung Redis costs requests nothing more than the failure mode's decision, rather
than a socket timeout each.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from dockyard.api.ratelimit import gcra
from dockyard.core.breakers import Breakers, Dependency, DependencyUnavailable

# One hash tag for every bucket: a request's buckets (of different rules, keyed by
# subject, address or header) go to the script together, and Redis Cluster runs a script
# only on keys of one slot. The first {...} of a key is its tag, so the bucket's own key
# (which may hold braces) cannot change it.
KEY_PREFIX = "dockyard:rl:{rl}:"
_MICROS = 1_000_000
# Buckets one in-memory limiter holds at the most, by default (about 250 bytes each).
MEMORY_BUCKETS: Final = 250_000
# Below this, full buckets are left alone: a sweep costs more than they do.
_PRUNE_FLOOR: Final = 4096


class LimiterUnavailable(Exception):
    """The shared counters cannot be reached; the failure mode decides what happens."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One rule's bucket for one request: where it is stored and what it allows."""

    key: str
    quota: gcra.Quota
    cost: int
    enforced: bool


@dataclass(frozen=True, slots=True)
class BucketResult:
    """One bucket's answer; times in seconds."""

    allowed: bool
    remaining: int
    reset: float
    retry_after: float


class Limiter(Protocol):
    """Evaluates, and charges, the buckets of one request at once."""

    name: str

    async def check(self, buckets: Sequence[Bucket], *, charge: bool = True) -> list[BucketResult]:
        """Each bucket's answer; ``charge=False`` only looks (nothing is stored)."""
        ...


class MemoryLimiter:
    """GCRA buckets in a dict: exact and cheap, for a single replica, and bounded.

    Clients choose some keys (a ``Header`` rule's values, their addresses), so the
    dict is capped at ``capacity`` buckets. When a new bucket would pass it, the full
    ones go first; if more than three quarters of ``capacity`` are still live, only the
    three quarters furthest from full are kept. A dropped bucket reads as full, so the
    error is a few requests allowed, never one refused; and the buckets kept are the
    ones nearest their limits, which a flood of fresh keys (each charged once) cannot
    push out. ``on_evict`` hears how many live buckets each such pass dropped.
    """

    name = "memory"

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        *,
        capacity: int = MEMORY_BUCKETS,
        on_evict: Callable[[int], object] | None = None,
    ) -> None:
        if capacity < 4:
            raise ValueError(f"capacity must be at least 4, got {capacity}")
        self._clock = clock
        # Each bucket's TAT, grouped by its rule's tolerance (how far ahead the TAT runs
        # when the bucket is empty), which says how spent it is whatever the rule's
        # period; grouped rather than kept beside each TAT, which would cost a tuple a
        # bucket, and rules are few.
        self._groups: dict[float, dict[str, float]] = {}
        self._capacity = capacity
        self._on_evict = on_evict
        self._prune_above = min(capacity, _PRUNE_FLOOR)

    def __len__(self) -> int:
        """Buckets held (some may be full again, until the next prune): what this
        limiter's memory grows with."""
        return sum(len(group) for group in self._groups.values())

    async def check(self, buckets: Sequence[Bucket], *, charge: bool = True) -> list[BucketResult]:
        return self.check_now(buckets, charge=charge)

    def check_now(self, buckets: Sequence[Bucket], *, charge: bool = True) -> list[BucketResult]:
        """``check`` without the coroutine: no await, so no other request interleaves."""
        now = self._clock()
        outcomes = [gcra.evaluate(b.quota, self._tat(b), now, b.cost) for b in buckets]
        charged = gcra.commits([o.allowed for o in outcomes], [b.enforced for b in buckets])
        results: list[BucketResult] = []
        for bucket, outcome, taken in zip(buckets, outcomes, charged, strict=True):
            if taken:
                if charge:
                    self._store(bucket, outcome.tat)
                results.append(
                    BucketResult(True, outcome.remaining, outcome.reset, outcome.retry_after)
                )
            else:
                # Not charged (refused, or an enforced rule refused): report the
                # bucket as it stays, with this bucket's own answer.
                stays = max(self._tat(bucket) or now, now)
                results.append(
                    BucketResult(
                        outcome.allowed,
                        gcra.remaining(bucket.quota, stays, now),
                        stays - now,
                        outcome.retry_after,
                    )
                )
        if len(self) > self._prune_above:
            self._prune(now)
        return results

    def _tat(self, bucket: Bucket) -> float | None:
        group = self._groups.get(bucket.quota.tolerance)
        if group is not None and bucket.key in group:
            return group[bucket.key]
        if len(self._groups) > 1:  # its rule's limit may have changed since its charge
            for other in self._groups.values():
                if bucket.key in other:
                    return other[bucket.key]
        return None

    def _store(self, bucket: Bucket, tat: float) -> None:
        span = bucket.quota.tolerance
        group = self._groups.setdefault(span, {})
        if bucket.key not in group and len(self._groups) > 1:
            for other_span, other in self._groups.items():
                if other_span != span:
                    other.pop(bucket.key, None)
        group[bucket.key] = tat

    def _prune(self, now: float) -> None:
        keep = self._capacity * 3 // 4
        # A bucket's share spent is (TAT - now) / its rule's tolerance; a TAT in the past
        # is a full bucket, the same as no entry. Absolute TATs would rank one charge of
        # a 10-a-day rule above a spent 600-a-minute bucket, and fresh keys of a slow
        # rule would push out the buckets at their limits. ``limits``: where each
        # group's kept buckets start, as a TAT (past ``now`` at least).
        limits = dict.fromkeys(self._groups, now)
        ties = 0
        if len(self) > self._capacity:
            # Sorting bare floats, not items, keeps this pass short (docs/ratelimits.md
            # gives its pause): at the capacity, only the ``keep`` most spent stay. One
            # rule's buckets rank by their TATs as they are, with nothing to allocate.
            single = len(self._groups) == 1
            if single:
                live = sorted(
                    tat for group in self._groups.values() for tat in group.values() if tat > now
                )
            else:
                live = sorted(
                    (tat - now) / span
                    for span, group in self._groups.items()
                    for tat in group.values()
                    if tat > now
                )
            if len(live) > keep:
                floor = live[-keep]  # a TAT for one rule's buckets, else a share spent
                # Of the buckets at exactly the floor, as many as fit in ``keep`` stay.
                ties = bisect.bisect_right(live, floor) - (len(live) - keep)
                limits = {span: floor if single else now + floor * span for span in self._groups}
                if self._on_evict is not None:
                    self._on_evict(len(live) - keep)
        groups: dict[float, dict[str, float]] = {}
        for span, group in self._groups.items():
            limit = limits[span]
            kept = {key: tat for key, tat in group.items() if tat > limit}
            if ties:
                for key, tat in group.items():
                    if tat == limit and key not in kept:
                        kept[key] = tat
                        ties -= 1
                        if not ties:
                            break
            if kept:
                groups[span] = kept
        self._groups = groups
        kept_count = len(self)
        # Sweep again once the live ones have doubled, and at the capacity at the latest.
        self._prune_above = min(self._capacity, max(_PRUNE_FLOOR, 2 * kept_count))


# KEYS: one per bucket. ARGV[1]: "1" to charge, "0" to only look; then four values per
# bucket: emission interval (µs), tolerance (µs), cost, enforced ("1"/"0").
# Returns four integers per bucket: allowed (1/0), remaining, reset (µs), retry (µs).
GCRA_SCRIPT = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local slack = 1
local charge = ARGV[1] == '1'
local n = #KEYS
local base, pushed, allowed, enforced = {}, {}, {}, {}
local every = true
for i = 1, n do
  local a = 1 + (i - 1) * 4
  local interval = tonumber(ARGV[a + 1])
  local tolerance = tonumber(ARGV[a + 2])
  local cost = tonumber(ARGV[a + 3])
  enforced[i] = ARGV[a + 4] == '1'
  local tat = tonumber(redis.call('GET', KEYS[i]))
  if tat == nil or tat < now then tat = now end
  base[i] = tat
  pushed[i] = tat + cost * interval
  allowed[i] = pushed[i] - tolerance <= now + slack
  if enforced[i] and not allowed[i] then every = false end
end
local out = {}
for i = 1, n do
  local a = 1 + (i - 1) * 4
  local interval = tonumber(ARGV[a + 1])
  local tolerance = tonumber(ARGV[a + 2])
  local tat = base[i]
  if allowed[i] and every then
    tat = pushed[i]
    if charge then
      local ttl = math.max(1, math.ceil((tat - now) / 1000))
      redis.call('SET', KEYS[i], string.format('%.17g', tat), 'PX', ttl)
    end
  end
  local ahead = tat - now
  local capacity = math.floor(tolerance / interval + 0.5)
  local remaining = math.floor((tolerance - ahead + slack) / interval)
  remaining = math.max(0, math.min(capacity, remaining))
  local retry = 0
  if not allowed[i] then retry = pushed[i] - tolerance - now end
  out[#out + 1] = allowed[i] and 1 or 0
  out[#out + 1] = remaining
  out[#out + 1] = math.ceil(ahead)
  out[#out + 1] = math.ceil(retry)
end
return out
"""


class RedisLimiter:
    """GCRA buckets in Redis, shared by every replica, one round trip per request."""

    name = "redis"

    def __init__(self, client: Redis, *, breakers: Breakers | None = None) -> None:
        self._script = client.register_script(GCRA_SCRIPT)
        # Redis's breaker: while it is open, each request skips Redis at once (the
        # failure mode applies) instead of waiting out the socket timeout.
        self._breakers = breakers if breakers is not None else Breakers()

    async def check(self, buckets: Sequence[Bucket], *, charge: bool = True) -> list[BucketResult]:
        args: list[str | int] = ["1" if charge else "0"]
        for bucket in buckets:
            args += [
                repr(bucket.quota.interval * _MICROS),
                repr(bucket.quota.tolerance * _MICROS),
                bucket.cost,
                "1" if bucket.enforced else "0",
            ]
        try:
            async with self._breakers.guard(Dependency.REDIS):
                raw = await self._script(keys=[KEY_PREFIX + b.key for b in buckets], args=args)
        except DependencyUnavailable as exc:
            raise LimiterUnavailable(f"redis: {exc.reason}") from exc
        except RedisError as exc:  # an answer, not an outage (a script error, OOM)
            raise LimiterUnavailable(f"redis: {type(exc).__name__}") from exc
        values = [int(v) for v in raw]
        return [
            BucketResult(
                allowed=values[i] == 1,
                remaining=values[i + 1],
                reset=max(values[i + 2], 0) / _MICROS,
                retry_after=max(values[i + 3], 0) / _MICROS,
            )
            for i in range(0, len(values), 4)
        ]


def ceil_seconds(seconds: float) -> int:
    """Whole seconds, rounded up, as headers carry them."""
    return max(0, math.ceil(seconds - 1e-9))
