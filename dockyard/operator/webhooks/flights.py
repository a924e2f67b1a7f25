"""``Flights``: the deliveries this replica has in flight, and who may claim the free slots.

A pass does not wait for the deliveries it claimed: each runs as a task of its own, and
every pass claims only as many as there are free slots (``CONCURRENCY`` in all). A slow
receiver thus holds its own slots, never the pass, and a delivery claimed starts at
once, well inside its lease. Who gets the free slots:

- a namespace holds at most ``NAMESPACE_SLOTS`` of them: while one namespace's receiver
  is slow, the next pass still finds a slot for another's delivery;
- the namespaces with fewer deliveries in flight are offered the slots first: when
  several slow namespaces hold every slot, one that holds none takes the first that
  frees, within one delivery timeout;
- among namespaces with as many in flight, ``webhook_deliveries.claim`` shares as it
  does a batch (the longest waiting first, equal shares, the platform namespace's
  Webhooks up to half).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Coroutine, Iterable
from typing import Any, Final

from dockyard.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

CONCURRENCY: Final = 8
NAMESPACE_SLOTS: Final = 6


class Flights:
    """The delivery tasks in flight, by the namespace of their Webhook."""

    def __init__(self, slots: int = CONCURRENCY, per_namespace: int = NAMESPACE_SLOTS) -> None:
        self.slots = slots
        self.per_namespace = per_namespace
        self._flying: dict[asyncio.Task[None], str] = {}

    def __len__(self) -> int:
        return len(self._flying)

    def free(self) -> int:
        return self.slots - len(self._flying)

    def offers(self, namespaces: Iterable[str]) -> list[tuple[list[str], int]]:
        """Whom to offer the free slots, in order: groups of the namespaces that have as
        many deliveries in flight, fewest first, each with how many it may claim (so
        that no namespace passes ``per_namespace``)."""
        busy = Counter(self._flying.values())
        groups: defaultdict[int, list[str]] = defaultdict(list)
        for namespace in sorted(set(namespaces)):
            if busy[namespace] < self.per_namespace:
                groups[busy[namespace]].append(namespace)
        return [(groups[n], self.per_namespace - n) for n in sorted(groups)]

    def launch(self, namespace: str, delivery: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(delivery, name=f"webhook-delivery {namespace}")
        self._flying[task] = namespace
        task.add_done_callback(self._landed)

    def _landed(self, task: asyncio.Task[None]) -> None:
        self._flying.pop(task, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            # A delivery records its own failures; this is a bug, shown as one.
            logger.error("webhook delivery task failed", exc_info=exc)

    async def join(self) -> None:
        """Wait until every delivery in flight has ended."""
        while self._flying:
            await asyncio.wait(list(self._flying))

    async def land(self, within: float) -> int:
        """Let the deliveries in flight end, for ``within`` seconds at most, then stop the
        rest (``cancel``); how many were stopped."""
        if self._flying:
            await asyncio.wait(list(self._flying), timeout=within)
        stopped = len(self._flying)
        await self.cancel()
        return stopped

    async def cancel(self) -> None:
        """Stop every delivery in flight; each lets go of its claim (``Dispatcher``), or,
        failing that, its lease brings it back to some replica."""
        for task in list(self._flying):
            await cancel_and_wait(task)
