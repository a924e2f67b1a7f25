"""RateLimitPolicy status: ``Accepted``, rules in force, and throttles per rule and hour.

Every replica counts the throttles it decides in a ``ThrottleLedger`` and, every
``ratelimit_status_interval`` seconds, adds them to a shared tally: a Redis hash per
policy and hour (``HINCRBY``), or this process's memory when there is no Redis (one
replica). Then one replica, the holder of a lease (``SET NX PX`` in Redis; always this
one without Redis), reads the tallies and patches each policy's status subresource,
only when it would change, so idle policies cost the apiserver nothing.

``status_patch`` is the pure part: an object, the index's report on it and the tally
in, the merge patch (or None) out.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import aiohttp
from pydantic import ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from dockyard.api.cache import WatchCache
from dockyard.api.ratelimit.rules import PolicyIndex, PolicyReport
from dockyard.core import conditions
from dockyard.core.breakers import DependencyUnavailable
from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.ratelimit import (
    RateLimitConditionType,
    RateLimitPolicyStatus,
    ThrottleCount,
)
from dockyard.core.resources import RATE_LIMIT_POLICIES

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 3600
TALLY_PREFIX = "dockyard:rl:throttled:"
LEASE_KEY = "dockyard:rl:status-writer"

# (window start in epoch seconds, policy uid, rule) -> (count, last throttle epoch seconds)
Counts = dict[tuple[int, str, str], tuple[int, float]]
# rule -> (count, last throttle epoch seconds)
RuleTally = dict[str, tuple[int, float]]


def window_of(epoch: float) -> int:
    """Start (epoch seconds) of the hour ``epoch`` falls in."""
    return int(epoch // WINDOW_SECONDS) * WINDOW_SECONDS


@dataclass
class ThrottleLedger:
    """Throttles this replica decided since its last flush."""

    _counts: Counts = field(default_factory=dict)

    def record(self, uid: str, rule: str, at: float) -> None:
        key = (window_of(at), uid, rule)
        count, last = self._counts.get(key, (0, 0.0))
        self._counts[key] = (count + 1, max(last, at))

    def drain(self) -> Counts:
        counts, self._counts = self._counts, {}
        return counts

    def restore(self, counts: Counts) -> None:
        """Put back counts a failed flush could not deliver."""
        for key, (count, last) in counts.items():
            mine, my_last = self._counts.get(key, (0, 0.0))
            self._counts[key] = (mine + count, max(last, my_last))


class ThrottleTally(Protocol):
    """Throttle counts summed over every replica."""

    async def add(self, counts: Counts) -> None: ...

    async def read(self, window: int, uid: str) -> RuleTally: ...


@dataclass
class MemoryTally:
    """The tally of a single replica: its own counts."""

    _windows: dict[tuple[int, str], RuleTally] = field(default_factory=lambda: defaultdict(dict))

    async def add(self, counts: Counts) -> None:
        for (window, uid, rule), (count, last) in counts.items():
            tally = self._windows[(window, uid)]
            mine, my_last = tally.get(rule, (0, 0.0))
            tally[rule] = (mine + count, max(last, my_last))
        current = max((window for window, _ in self._windows), default=0)
        for key in [k for k in self._windows if k[0] < current - WINDOW_SECONDS]:
            del self._windows[key]

    async def read(self, window: int, uid: str) -> RuleTally:
        return dict(self._windows.get((window, uid), {}))


class RedisTally:
    """The tally in Redis: a hash per policy and hour, ``<rule>`` and ``<rule>:last``."""

    def __init__(self, client: Redis) -> None:
        self._client = client

    async def add(self, counts: Counts) -> None:
        if not counts:
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for (window, uid, rule), (count, last) in counts.items():
                key = f"{TALLY_PREFIX}{uid}:{window}"
                pipe.hincrby(key, rule, count)
                # Replicas flush at different moments; the latest flush's time is close
                # enough to the latest throttle for a status field.
                pipe.hset(key, f"{rule}:last", repr(last))
                pipe.expire(key, 2 * WINDOW_SECONDS)
            await pipe.execute()

    async def read(self, window: int, uid: str) -> RuleTally:
        raw = await self._client.hgetall(f"{TALLY_PREFIX}{uid}:{window}")
        fields = {_text(k): _text(v) for k, v in raw.items()}
        return {
            name: (int(value), float(fields.get(f"{name}:last", "0")))
            for name, value in fields.items()
            if not name.endswith(":last")
        }


def _text(value: bytes | str) -> str:
    # The client answers bytes unless it was built with decode_responses=True.
    return value.decode() if isinstance(value, bytes) else value


class Lease(Protocol):
    """Whether this replica is the one that writes status this round."""

    async def acquire(self) -> bool: ...


class SoleReplica:
    """Without Redis there is one replica, and it writes."""

    async def acquire(self) -> bool:
        return True


class RedisLease:
    """A lease in Redis: taken with ``SET NX PX``, renewed by its holder each round."""

    def __init__(self, client: Redis, ttl_seconds: float, *, scope: str) -> None:
        # One writer per installation: replicas share the platform namespace, and two
        # installations sharing a Redis must not take turns with different views.
        self._key = f"{LEASE_KEY}:{scope}"
        self._client = client
        self._holder = uuid.uuid4().hex
        self._ttl_ms = max(1000, int(ttl_seconds * 1000))

    async def acquire(self) -> bool:
        if await self._client.set(self._key, self._holder, nx=True, px=self._ttl_ms):
            return True
        holder = await self._client.get(self._key)
        if holder is not None and _text(holder) == self._holder:
            # Between GET and PEXPIRE the lease may lapse and another replica take it;
            # both then write one round of identical status, which is harmless.
            await self._client.pexpire(self._key, self._ttl_ms)
            return True
        return False


def status_patch(
    obj: Mapping[str, Any],
    report: PolicyReport,
    tally: RuleTally,
    *,
    window: int,
    now: datetime,
) -> dict[str, Any] | None:
    """The status merge patch that brings ``obj`` up to date, or None if it is."""
    try:
        current = RateLimitPolicyStatus.model_validate(obj.get("status") or {})
    except ValidationError:
        current = RateLimitPolicyStatus()  # written by someone else, wrongly: rewrite it
    accepted = conditions.set_condition(
        current.conditions,
        type=RateLimitConditionType.ACCEPTED,
        status=ConditionStatus.TRUE if report.accepted else ConditionStatus.FALSE,
        reason=report.reason,
        message=report.message,
        generation=report.generation,
        now=now,
    )
    rule_order = [r.get("name") for r in (obj.get("spec") or {}).get("rules") or []]
    start = datetime.fromtimestamp(window, UTC)
    throttled = [
        ThrottleCount(
            rule=rule,
            count=tally[rule][0],
            window_start=start,
            last_throttle_time=datetime.fromtimestamp(tally[rule][1], UTC)
            if tally[rule][1]
            else None,
        )
        for rule in rule_order
        if isinstance(rule, str) and tally.get(rule, (0, 0.0))[0] > 0
    ]
    desired = RateLimitPolicyStatus(
        observed_generation=report.generation,
        conditions=accepted,
        rules=report.rules,
        throttled=throttled,
    )
    before = current.model_dump(mode="json", exclude_none=True)
    after = desired.model_dump(mode="json", exclude_none=True)
    if before == after:
        return None
    return {"status": after}


@dataclass(frozen=True, kw_only=True)
class StatusReporter:
    """The periodic flush of throttle counts and, on the lease holder, status writes."""

    kube: KubeClient
    cache: WatchCache
    index: PolicyIndex
    ledger: ThrottleLedger
    tally: ThrottleTally
    lease: Lease
    interval: float

    async def run(self) -> None:
        task = asyncio.current_task()
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.report()
            except (
                KubeError,
                DependencyUnavailable,
                aiohttp.ClientError,
                RedisError,
                OSError,
                TimeoutError,
            ) as exc:
                if task is not None and task.cancelling():
                    # A client turned our cancellation into its own error (Python 3.11's
                    # asyncio.timeout can); stopping must still stop the loop.
                    raise asyncio.CancelledError from exc
                # The next round retries; counts that were not flushed were put back.
                logger.warning("rate limit status round failed: %s", type(exc).__name__)
            if task is not None and task.cancelling():
                # A client swallowed our cancellation and returned (seen with a Redis
                # call cut short): without this the loop sleeps on, and shutdown, which
                # awaits it, waits forever.
                raise asyncio.CancelledError

    async def report(self, now: datetime | None = None) -> int:
        """One round: flush, and if this replica holds the lease, patch what changed.
        Returns the number of policies patched."""
        counts = self.ledger.drain()
        try:
            await self.tally.add(counts)
        except (RedisError, OSError, TimeoutError):
            self.ledger.restore(counts)
            raise
        if not await self.lease.acquire():
            return 0
        now = now or datetime.now(UTC)
        window = window_of(now.timestamp())
        patched = 0
        for (namespace, name), report in list(self.index.reports.items()):
            obj = self.cache.get(namespace, name)
            if obj is None or (obj.get("metadata") or {}).get("uid", report.uid) != report.uid:
                continue
            tally = await self.tally.read(window, report.uid)
            patch = status_patch(obj, report, tally, window=window, now=now)
            if patch is None:
                continue
            # Bound to the object the cache holds (the status subresource drops a uid):
            # one made again under the name, or a cache behind, answers 409, and the
            # next round reports from a fresher cache.
            version = (obj.get("metadata") or {}).get("resourceVersion")
            if version:
                patch = {**patch, "metadata": {"resourceVersion": version}}
            try:
                await self.kube.merge_patch(
                    RATE_LIMIT_POLICIES.path(namespace, name, "status"), patch
                )
            except KubeError as exc:
                if exc.status not in (404, 409):  # 404: deleted meanwhile
                    raise
                continue
            patched += 1
        return patched
