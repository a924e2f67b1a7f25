"""The rate limiter's life in the app: built at start-up, fed by a watch, torn down at stop.

``rate_limiting`` is a ``cleanup_ctx`` (after the Kubernetes client and Redis exist). It
starts a ``WatchCache`` of RateLimitPolicy objects in every namespace and a task that
rebuilds the ``PolicyIndex`` whenever the cache reports a change, so an edit made with
``kubectl apply`` is in force within the watch's latency, without a restart. The
counters are in Redis when ``DOCKYARD_REDIS_URL`` is set (replicas share one budget)
and in memory otherwise (one replica). The status reporter runs beside them.

Until the cache's first list has arrived no rule is known and nothing is limited: a
start-up that waited for the apiserver would turn its outage into the API's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from dockyard.api import keys
from dockyard.api.cache import WatchCache
from dockyard.api.ratelimit.backends import Limiter, MemoryLimiter, RedisLimiter
from dockyard.api.ratelimit.metrics import RateLimitMetrics
from dockyard.api.ratelimit.reviews import ReviewCap
from dockyard.api.ratelimit.rules import PolicyIndex
from dockyard.api.ratelimit.service import FailureMode, RateLimiting
from dockyard.api.ratelimit.status import (
    Lease,
    MemoryTally,
    RedisLease,
    RedisTally,
    SoleReplica,
    StatusReporter,
    ThrottleLedger,
    ThrottleTally,
)
from dockyard.core import logs
from dockyard.core.resources import RATE_LIMIT_POLICIES

logger = logging.getLogger(__name__)

# How long shutdown waits for the background tasks once they are cancelled.
SHUTDOWN_SECONDS = 5.0


async def follow_policies(
    cache: WatchCache,
    index: PolicyIndex,
    instruments: RateLimitMetrics,
    subscribed: asyncio.Event,
    limiting: RateLimiting,
) -> None:
    """Rebuild ``index`` from the cache after every change it publishes."""
    async with cache.subscribe() as queue:
        subscribed.set()
        while True:
            await queue.get()
            # A re-list publishes a burst of changes: one rebuild covers them all.
            while not queue.empty():
                queue.get_nowait()
            index.rebuild(cache.list())
            limiting.forget_removed_rules()
            instruments.rules.set(
                len(index.everywhere) + sum(map(len, index.by_namespace.values()))
            )
            logger.info(
                "rate limit policies changed",
                extra={"policies": len(index.reports), "index_generation": index.generation},
            )


def _evictions(instruments: RateLimitMetrics) -> Callable[[int], None]:
    """What the in-memory limiter does when it drops live buckets at its capacity: count
    them, and log it as a security event (many fresh keys: a flood, or a capacity set
    too low for the traffic)."""

    def evicted(count: int) -> None:
        instruments.memory_evictions.inc(count)
        logs.security_event(
            logger,
            "ratelimit.memory_evicted",
            evicted=count,
            setting="DOCKYARD_RATELIMIT_MEMORY_BUCKETS",
        )

    return evicted


async def rate_limiting(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    kube = app[keys.KUBE]
    redis = app[keys.REDIS]
    cache = WatchCache(kube, RATE_LIMIT_POLICIES)
    index = PolicyIndex(
        platform_namespace=settings.namespace,
        routes=frozenset(op.path for op in app[keys.OPERATIONS].values()),
    )
    instruments = RateLimitMetrics(app[keys.METRICS].registry)
    ledger = ThrottleLedger()
    # This replica's own buckets: its only ones without Redis, else its stand-in while
    # Redis is down (closed mode, and the TokenReview cap).
    memory = MemoryLimiter(
        capacity=settings.ratelimit_memory_buckets, on_evict=_evictions(instruments)
    )
    limiter: Limiter
    tally: ThrottleTally
    lease: Lease
    if redis is None:
        limiter, tally, lease = memory, MemoryTally(), SoleReplica()
    else:
        limiter, tally = RedisLimiter(redis, breakers=app[keys.BREAKERS]), RedisTally(redis)
        lease = RedisLease(
            redis, ttl_seconds=3 * settings.ratelimit_status_interval, scope=settings.namespace
        )
    reviews = ReviewCap(
        limiter,
        per_minute=settings.token_reviews_per_minute,
        scope=settings.namespace,
        client_networks=settings.client_networks,
        local=memory,
    )
    app[keys.REVIEW_CAP] = reviews
    limiting = app[keys.RATE_LIMITING] = RateLimiting(
        index=index,
        limiter=limiter,
        instruments=instruments,
        ledger=ledger,
        failure_mode=FailureMode(settings.ratelimit_failure_mode),
        reviews=reviews,
        client_networks=settings.client_networks,
        fallback=memory,
    )
    app[keys.RATE_LIMIT_POLICY_CACHE] = cache
    subscribed = asyncio.Event()
    tasks = [
        asyncio.create_task(
            follow_policies(cache, index, instruments, subscribed, limiting),
            name="rate-limit-policies",
        )
    ]
    await subscribed.wait()  # no change may slip between the cache's start and the follower
    await cache.start()
    reporter = StatusReporter(
        kube=kube,
        cache=cache,
        index=index,
        ledger=ledger,
        tally=tally,
        lease=lease,
        interval=settings.ratelimit_status_interval,
    )
    tasks.append(asyncio.create_task(reporter.run(), name="rate-limit-status"))
    yield
    for task in tasks:
        task.cancel()
    # Bounded: a background task that ignores its cancellation must not hold shutdown.
    _, stuck = await asyncio.wait(tasks, timeout=SHUTDOWN_SECONDS)
    for task in stuck:
        logger.warning("%s did not stop within %gs", task.get_name(), SHUTDOWN_SECONDS)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            logger.warning("%s ended with %r", task.get_name(), task.exception())
    await cache.stop()
