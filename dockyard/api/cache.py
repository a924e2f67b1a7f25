"""An in-process watch cache of one custom resource across all namespaces.

Reads come from here (fast, and consistent with a known ``resourceVersion``); writes
go to the apiserver, and a handler that wrote can wait until the cache has caught up
with the version it wrote (read-your-writes). Subscribers (server-sent events) get
every change as it arrives. A 410 Gone (the watch fell too far behind) re-lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp

from dockyard.core.breakers import DependencyUnavailable
from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.resources import ResourceType
from dockyard.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

Object = dict[str, Any]

# Seconds a write waits for the watch to deliver it (``WatchCache.caught_up``).
WRITE_WAIT = 0.5
# The longest pause between attempts to list and watch again after a failure.
MAX_BACKOFF = 4.0


@dataclass(frozen=True)
class Change:
    """One observed change: ADDED, MODIFIED or DELETED, with the object as it was then."""

    type: str
    object: Object

    @property
    def namespace(self) -> str:
        return str(self.object.get("metadata", {}).get("namespace", ""))


def _rv(obj: Object) -> int:
    try:
        return int(obj.get("metadata", {}).get("resourceVersion", "0"))
    except ValueError:
        return 0


class WatchCache:
    """List-then-watch of one resource type in every namespace, kept in memory."""

    def __init__(self, kube: KubeClient, resource: ResourceType) -> None:
        self.kube = kube
        self.path = resource.cluster_path()
        self.objects: dict[tuple[str, str], Object] = {}
        self.resource_version = 0
        self.synced = asyncio.Event()
        # When the apiserver last confirmed the cache: a list, an event or a bookmark
        # (which the apiserver sends about once a minute on a quiet watch).
        self.heard_at = time.monotonic()
        self._progress = asyncio.Condition()
        self._subscribers: set[asyncio.Queue[Change]] = set()
        self._overflowed: set[asyncio.Queue[Change]] = set()
        self._task: asyncio.Task[None] | None = None
        # Set by a write that succeeded: the apiserver answers, so stop backing off.
        self._retry_now = asyncio.Event()

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch-cache {self.path}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            try:
                await self._list()
                backoff = 0.5
                while True:
                    await self._watch()
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                if exc.status != 410:
                    logger.warning("watch cache: %s", exc, extra={"path": self.path})
            except (DependencyUnavailable, aiohttp.ClientError, TimeoutError, ValueError) as exc:
                logger.warning("watch cache interrupted: %s", type(exc).__name__,
                               extra={"path": self.path})  # fmt: skip
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # The client turned our cancellation into its own error: stop anyway,
                # or stop() would wait on this loop forever.
                raise asyncio.CancelledError
            self._retry_now.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff):
                    await self._retry_now.wait()
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _list(self) -> None:
        listing = await self.kube.get(self.path)
        fresh = {
            (o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
            for o in listing.get("items", [])
        }
        listed = int(listing.get("metadata", {}).get("resourceVersion", "0"))
        # An object newer than the list is a write remembered meanwhile (``caught_up``).
        gone = [k for k, o in self.objects.items() if k not in fresh and _rv(o) <= listed]
        for key in gone:
            await self._publish(Change("DELETED", self.objects.pop(key)))
        for key, obj in fresh.items():
            kind = "MODIFIED" if key in self.objects else "ADDED"
            if self.objects.get(key, {}).get("metadata", {}).get("resourceVersion") != obj[
                "metadata"
            ].get("resourceVersion"):
                self.objects[key] = obj
                await self._publish(Change(kind, obj))
        await self._advance(listed)
        self.heard_at = time.monotonic()
        self.synced.set()

    async def _watch(self) -> None:
        async for event in self.kube.watch(self.path, resource_version=str(self.resource_version)):
            kind, obj = event.get("type"), event.get("object", {})
            self.heard_at = time.monotonic()
            if kind == "ERROR":
                raise KubeError(int(obj.get("code", 500)), obj)
            if kind == "BOOKMARK":
                await self._advance(_rv(obj))
                continue
            key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
            if kind == "DELETED":
                self.objects.pop(key, None)
            else:
                self.objects[key] = obj
            await self._publish(Change(str(kind), obj))
            await self._advance(_rv(obj))

    async def _advance(self, resource_version: int) -> None:
        async with self._progress:
            self.resource_version = max(self.resource_version, resource_version)
            self._progress.notify_all()

    async def _publish(self, change: Change) -> None:
        for queue in list(self._subscribers):
            if queue.full():
                # Never blocks the cache nor grows: the subscriber is marked as behind
                # (``overflowed``) and gets nothing more; it decides what that means.
                self._overflowed.add(queue)
                continue
            queue.put_nowait(change)

    def overflowed(self, queue: asyncio.Queue[Change]) -> bool:
        """Whether ``queue``'s subscriber fell so far behind that changes were left out."""
        return queue in self._overflowed

    # -- reads ---------------------------------------------------------------------------

    def age(self) -> float:
        """Seconds since the apiserver last confirmed the cache: at most this stale."""
        return time.monotonic() - self.heard_at

    async def wait_synced(self, within: float = 10.0) -> None:
        async with asyncio.timeout(within):
            await self.synced.wait()

    async def caught_up(self, written: Object, within: float = WRITE_WAIT) -> bool:
        """Wait until the cache has seen ``written``, an object just written (read-your-writes).

        A write that succeeded proves the apiserver answers, so a watch backing off after
        an outage retries at once. If the watch has not delivered the write ``within``
        seconds (it is reconnecting), the written object is kept as the cache's copy
        until the watch catches up, so a read right after the write still sees it; the
        wait is short because it adds to the write's own apiserver deadline. False when
        the watch had not caught up.
        """
        target = _rv(written)
        self._retry_now.set()
        try:
            async with asyncio.timeout(within), self._progress:
                await self._progress.wait_for(lambda: self.resource_version >= target)
        except TimeoutError:
            self._remember(written)
            return False
        return True

    def _remember(self, obj: Object) -> None:
        if _rv(obj) <= self.resource_version:
            return  # the watch delivered it meanwhile, or something newer (a delete)
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        if _rv(self.objects.get(key, {})) < _rv(obj):
            self.objects[key] = obj

    def get(self, namespace: str, name: str) -> Object | None:
        return self.objects.get((namespace, name))

    def list(
        self,
        *,
        namespaces: Iterable[str] | None = None,
        predicate: Callable[[Object], bool] | None = None,
    ) -> list[Object]:
        """Objects ordered by (namespace, name), optionally filtered."""
        allowed = set(namespaces) if namespaces is not None else None
        keys = sorted(self.objects)
        return [
            self.objects[key]
            for key in keys
            if (allowed is None or key[0] in allowed)
            and (predicate is None or predicate(self.objects[key]))
        ]

    def namespaces(self) -> set[str]:
        return {namespace for namespace, _ in self.objects}

    @contextlib.asynccontextmanager
    async def subscribe(self, maxsize: int = 1000) -> AsyncIterator[asyncio.Queue[Change]]:
        queue: asyncio.Queue[Change] = asyncio.Queue(maxsize=maxsize)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)
            self._overflowed.discard(queue)
