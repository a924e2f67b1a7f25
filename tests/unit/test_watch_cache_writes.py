"""A write sees itself in the API's watch cache even while the watch reconnects.

After an apiserver restart the cache's watch is down for a moment; a write made then
must neither wait out the watch's backoff (the fault suite's 3 s goal) nor vanish from
the next read. The apiserver here is a stand-in: the cache's bookkeeping is the subject.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

from dockyard.api.cache import Change, WatchCache
from dockyard.core.breakers import Dependency, DependencyUnavailable
from dockyard.core.kube import KubeClient
from dockyard.core.resources import ENVIRONMENTS


def _env(name: str, rv: int) -> dict[str, Any]:
    return {"metadata": {"namespace": "team", "name": name, "resourceVersion": str(rv)}}


class _Apiserver:
    """Lists ``items`` at ``rv``; its watch stays silent; ``down`` makes calls fail."""

    def __init__(self, items: list[dict[str, Any]], rv: int) -> None:
        self.items, self.rv = items, rv
        self.down = False
        self.listed = asyncio.Event()
        self.lists = 0

    async def get(self, path: str, **_: Any) -> dict[str, Any]:
        if self.down:
            raise DependencyUnavailable(Dependency.KUBERNETES, 1.0, "connection refused")
        self.lists += 1
        self.listed.set()
        return {"metadata": {"resourceVersion": str(self.rv)}, "items": list(self.items)}

    async def watch(self, path: str, **_: Any) -> AsyncIterator[dict[str, Any]]:
        if self.down:
            raise DependencyUnavailable(Dependency.KUBERNETES, 1.0, "connection refused")
        await asyncio.Event().wait()  # silent until cancelled
        yield {}


async def _started(apiserver: _Apiserver) -> WatchCache:
    cache = WatchCache(cast(KubeClient, apiserver), ENVIRONMENTS)
    await cache.start()
    await cache.wait_synced(within=2)
    return cache


async def test_a_write_the_watch_has_not_delivered_is_read_back_and_survives_an_older_list() -> (
    None
):
    apiserver = _Apiserver([_env("old", 5)], rv=5)
    cache = await _started(apiserver)
    try:
        written = _env("new", 9)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await cache.caught_up(written, within=0.2) is False
        assert loop.time() - started < 1.0  # bounded by ``within``, not the watch
        assert cache.get("team", "new") == written

        # A list taken before the write (rv 5) does not count the write as deleted...
        async with cache.subscribe() as changes:
            await cache._list()
            assert cache.get("team", "new") == written
            assert changes.empty()
            # ...one taken after it, without it, does: it was deleted meanwhile.
            apiserver.rv = 12
            await cache._list()
            assert cache.get("team", "new") is None
            change = changes.get_nowait()
            assert (change.type, change.object["metadata"]["name"]) == ("DELETED", "new")
    finally:
        await cache.stop()


async def test_a_write_the_cache_has_seen_past_is_not_remembered() -> None:
    apiserver = _Apiserver([], rv=20)
    cache = await _started(apiserver)
    try:
        # rv 9 < the cache's 20: the watch already went past it (say, it was deleted).
        assert await cache.caught_up(_env("gone", 9), within=0.1) is True
        assert cache.get("team", "gone") is None
    finally:
        await cache.stop()


async def test_a_successful_write_cuts_the_watch_backoff_short() -> None:
    apiserver = _Apiserver([], rv=1)
    cache = await _started(apiserver)
    try:
        await cache.stop()
        apiserver.down = True
        await cache.start()  # lists again: fails, backs off 0.5 s, then 1 s, then 2 s
        await asyncio.sleep(1.7)  # into the 2 s pause
        apiserver.down = False
        apiserver.listed.clear()
        lists = apiserver.lists
        await cache.caught_up(_env("x", 2), within=0.05)
        await asyncio.wait_for(apiserver.listed.wait(), timeout=1.0)  # not after 2 s
        assert apiserver.lists == lists + 1
    finally:
        await cache.stop()


async def test_a_subscriber_that_falls_behind_is_marked_not_buffered_without_bound() -> None:
    apiserver = _Apiserver([], rv=1)
    cache = await _started(apiserver)
    try:
        async with cache.subscribe(maxsize=2) as slow, cache.subscribe(maxsize=10) as fast:
            for rv in range(2, 6):
                await cache._publish(Change("ADDED", _env(f"e{rv}", rv)))
            assert (slow.qsize(), fast.qsize()) == (2, 4)
            assert cache.overflowed(slow)
            assert not cache.overflowed(fast)
        assert not cache.overflowed(slow)  # forgotten once unsubscribed
    finally:
        await cache.stop()
