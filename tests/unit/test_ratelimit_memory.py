"""The in-memory limiter's bound: a flood of fresh keys cannot grow it past its capacity,
nor push out the buckets nearest their limits."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry

from dockyard.api.errors import Problem
from dockyard.api.ratelimit.backends import Bucket, BucketResult, LimiterUnavailable, MemoryLimiter
from dockyard.api.ratelimit.gcra import Quota
from dockyard.api.ratelimit.lifecycle import _evictions
from dockyard.api.ratelimit.metrics import RateLimitMetrics
from dockyard.api.ratelimit.reviews import ReviewCap
from dockyard.api.ratelimit.rules import PolicyIndex, Target
from dockyard.api.ratelimit.service import FailureMode, RateLimiting, Request
from dockyard.api.ratelimit.status import ThrottleLedger
from dockyard.core.settings import Settings

PER_MINUTE = Quota(requests=5, period=60.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def charge(limiter: MemoryLimiter, key: str, quota: Quota = PER_MINUTE) -> bool:
    [result] = limiter.check_now([Bucket(key=key, quota=quota, cost=1, enforced=True)])
    return result.allowed


def test_a_flood_of_fresh_keys_stays_under_the_capacity_and_keeps_the_busiest_bucket() -> None:
    evicted: list[int] = []
    limiter = MemoryLimiter(Clock(), capacity=1000, on_evict=evicted.append)
    assert all(charge(limiter, "victim") for _ in range(5))
    assert not charge(limiter, "victim")

    sizes = []
    for n in range(20_000):
        assert charge(limiter, f"fresh-{n}")
        sizes.append(len(limiter))

    assert max(sizes) <= 1000 + 1  # one request's own bucket may land before the sweep
    assert evicted, "a flood past the capacity drops buckets"
    assert sum(evicted) + len(limiter) == 20_000 + 1  # every live bucket held or counted
    # The victim's bucket, the one with the least left, is still there: still refused.
    assert not charge(limiter, "victim")


def test_fresh_keys_of_a_slow_rule_do_not_push_out_a_bucket_at_its_limit() -> None:
    """One charge of a 10-a-day rule leaves its TAT hours ahead; a spent 600-a-minute
    bucket's is a minute ahead. Buckets rank by how much of their own rule is spent."""
    evicted: list[int] = []
    limiter = MemoryLimiter(Clock(), capacity=8, on_evict=evicted.append)
    per_subject = Quota(requests=600, period=60.0, burst=100)
    daily = Quota(requests=10, period=86400.0)
    assert all(charge(limiter, "alice", per_subject) for _ in range(700))
    assert not charge(limiter, "alice", per_subject)

    for n in range(8):
        assert charge(limiter, f"header-{n}", daily)

    assert evicted, "the capacity was passed"
    assert not charge(limiter, "alice", per_subject)  # still at her limit


def test_a_bucket_keeps_its_state_when_its_rules_limit_changes() -> None:
    limiter = MemoryLimiter(Clock(), capacity=8)
    assert all(charge(limiter, "alice", PER_MINUTE) for _ in range(5))
    wider = Quota(requests=6, period=60.0)  # the policy was edited: one more a minute
    # Still spent (a fresh bucket would allow 6 at once): her charges carried over.
    assert not charge(limiter, "alice", wider)
    assert charge(limiter, "bob", wider)
    assert len(limiter) == 2


def test_full_buckets_go_first_and_live_ones_are_not_dropped_for_them() -> None:
    clock = Clock()
    evicted: list[int] = []
    limiter = MemoryLimiter(clock, capacity=100, on_evict=evicted.append)
    for n in range(100):
        charge(limiter, f"old-{n}")
    clock.now += 60.0  # every one of them is full again
    for n in range(60):
        charge(limiter, f"new-{n}")
    assert evicted == []
    assert len(limiter) <= 100
    # The new ones all count: each has one request fewer left.
    [result] = limiter.check_now(
        [Bucket(key="new-0", quota=PER_MINUTE, cost=1, enforced=True)], charge=False
    )
    assert result.remaining == 3


def test_a_dropped_bucket_reads_as_full_so_the_error_is_to_allow() -> None:
    limiter = MemoryLimiter(Clock(), capacity=8)
    for n in range(5):
        charge(limiter, f"k{n}")  # each one used once: TAT = now + 12 s
    assert all(charge(limiter, "busy") for _ in range(5))
    for n in range(5, 40):
        charge(limiter, f"k{n}")
    assert len(limiter) <= 8
    assert not charge(limiter, "busy")
    # Some once-used key was dropped: all five of its requests are back.
    full_again = [n for n in range(40) if all(charge(limiter, f"k{n}") for _ in range(5))]
    assert full_again


def test_the_capacity_must_leave_room_to_keep() -> None:
    with pytest.raises(ValueError, match="capacity must be at least 4"):
        MemoryLimiter(capacity=3)


@pytest.mark.parametrize("value", [999, 50_000_001])
def test_the_setting_is_bounded(value: int) -> None:
    with pytest.raises(ValueError, match="ratelimit_memory_buckets"):
        Settings(ratelimit_memory_buckets=value)


def test_evictions_are_counted_and_logged_as_a_security_event(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    instruments = RateLimitMetrics(registry)
    limiter = MemoryLimiter(Clock(), capacity=10, on_evict=_evictions(instruments))
    with caplog.at_level(logging.WARNING, logger="dockyard.api.ratelimit.lifecycle"):
        for n in range(50):
            charge(limiter, f"k{n}")
    counted = registry.get_sample_value("dockyard_api_ratelimit_memory_evictions_total")
    assert counted == 50 - len(limiter)
    events = [r for r in caplog.records if getattr(r, "security_event", None)]
    assert {r.security_event for r in events} == {"ratelimit.memory_evicted"}  # type: ignore[attr-defined]
    assert sum(r.evicted for r in events) == counted  # type: ignore[attr-defined]


class DownRedis:
    """A shared limiter whose backend is unreachable (what ``RedisLimiter`` raises then)."""

    name = "redis"

    async def check(self, buckets: object, *, charge: bool = True) -> list[BucketResult]:
        raise LimiterUnavailable("connection refused")


async def test_while_redis_is_down_the_stand_ins_count_in_the_bounded_limiter_given() -> None:
    memory = MemoryLimiter(capacity=10)
    cap = ReviewCap(DownRedis(), per_minute=1, scope="t", local=memory)
    await cap.admit("192.0.2.1")
    assert len(memory) == 1
    with pytest.raises(Problem):
        await cap.admit("192.0.2.1")

    index = PolicyIndex("dockyard-system", frozenset({"/x"}))
    index.rebuild([POLICY])
    limiting = RateLimiting(
        index=index,
        limiter=DownRedis(),
        instruments=RateLimitMetrics(CollectorRegistry()),
        ledger=ThrottleLedger(),
        failure_mode=FailureMode.CLOSED,
        fallback=memory,
    )
    request = Request(address="192.0.2.9", headers={}, authorization=None, path="/x")
    rules = index.candidates(Target("GET", "/x", "/x", None))
    verdict = await limiting.judge(request, rules, None)
    assert verdict is not None
    assert verdict.allowed
    assert len(memory) == 2


POLICY = {
    "apiVersion": "dockyard.io/v1alpha1",
    "kind": "RateLimitPolicy",
    "metadata": {"namespace": "dockyard-system", "name": "all", "uid": "u1", "generation": 1},
    "spec": {
        "mode": "Enforce",
        "rules": [{"name": "all", "limit": {"requests": 5, "period": "minute"}}],
    },
}
