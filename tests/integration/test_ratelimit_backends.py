"""The Redis script and the in-memory limiter give the same answers (the test bed's Redis)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.crc import key_slot

from dockyard.api.ratelimit.backends import Bucket, BucketResult, MemoryLimiter, RedisLimiter
from dockyard.api.ratelimit.gcra import Quota
from dockyard.testbed.cluster import State


@pytest.fixture
async def redis(testbed_state: State) -> AsyncIterator[Redis]:
    client = Redis.from_url(testbed_state.redis_url)
    yield client
    await client.aclose()


def buckets(prefix: str) -> list[Bucket]:
    return [
        Bucket(f"{prefix}:tight", Quota(5, 60.0), cost=1, enforced=True),
        Bucket(f"{prefix}:wide", Quota(10, 60.0, burst=2), cost=2, enforced=True),
        Bucket(f"{prefix}:shadow", Quota(3, 60.0), cost=1, enforced=False),
    ]


def summary(results: list[BucketResult]) -> list[tuple[bool, int, int, int]]:
    # Times rounded to whole seconds: the two clocks differ by the round trip.
    return [(r.allowed, r.remaining, round(r.reset), round(r.retry_after)) for r in results]


async def test_redis_and_memory_agree_request_after_request(redis: Redis) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    shared, local = RedisLimiter(redis), MemoryLimiter()
    for _ in range(8):
        from_redis = await shared.check(buckets(prefix))
        from_memory = await local.check(buckets(prefix))
        assert summary(from_redis) == summary(from_memory)


async def test_looking_charges_nothing(redis: Redis) -> None:
    prefix = f"test:{uuid.uuid4().hex}"
    limiter = RedisLimiter(redis)
    for _ in range(3):
        (looked,) = await limiter.check(buckets(prefix)[:1], charge=False)
        assert (looked.allowed, looked.remaining) == (True, 4)
    assert await redis.exists(f"dockyard:rl:{{rl}}:{prefix}:tight") == 0


async def test_the_keys_of_one_request_share_a_cluster_slot(redis: Redis) -> None:
    # Redis Cluster refuses a script whose keys span slots (CROSSSLOT): one request's
    # buckets, whatever rule or caller they belong to, must hash to one slot.
    prefix = f"test:{uuid.uuid4().hex}"
    mixed = [
        *buckets(prefix),
        Bucket(f"other:{prefix}:{{brace}}", Quota(5, 60.0), cost=1, enforced=True),
    ]
    await RedisLimiter(redis).check(mixed)
    stored = [key async for key in redis.scan_iter(match=f"*{prefix}*")]
    assert len(stored) == len(mixed)
    assert len({key_slot(key) for key in stored}) == 1, stored
