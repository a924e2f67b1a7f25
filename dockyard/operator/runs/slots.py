"""``FairSlots``: the operator's inline run slots, shared fairly among namespaces.

Backups, restores and drills that run inside the operator (``runner: Inline``) hold one
of ``DOCKYARD_BACKUP_CONCURRENCY`` slots for as long as they run, up to
``DOCKYARD_RUN_DEADLINE``. With one first-come queue, a tenant who queued many backups
of a large database would hold every slot for hours, and another namespace's approved
restore would wait behind them. Here:

- a namespace holds at most ``per_namespace`` slots at once
  (``DOCKYARD_BACKUP_CONCURRENCY_PER_NAMESPACE``, half of them by default), so the rest
  stay free for other namespaces however many runs one of them queues;
- an urgent run (a restore) whose namespace holds its share already may take one slot
  more, if one is free that no waiting run within its share can take: a restore does
  not wait a day behind its own namespace's backup while a slot is idle;
- a freed slot goes to an urgent run first, then to the namespace holding the fewest
  slots, then to the run that has waited longest.

A waiter cancelled before its turn takes nothing; one cancelled just as its turn came
gives the slot back.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass(eq=False, slots=True)
class _Waiter:
    namespace: str
    urgent: bool
    seq: int
    extra: bool = False
    """Granted over its namespace's share (an urgent run's one extra slot)."""
    turn: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class FairSlots:
    """At most ``total`` runs at once, at most ``per_namespace`` of one namespace."""

    def __init__(self, total: int, per_namespace: int) -> None:
        if total < 1 or per_namespace < 1:
            raise ValueError("a run needs at least one slot")
        self.total = total
        self.per_namespace = min(per_namespace, total)
        self._held: Counter[str] = Counter()
        self._extra: set[str] = set()
        """Namespaces holding an urgent run's extra slot."""
        self._waiting: list[_Waiter] = []
        self._seq = itertools.count()

    @property
    def running(self) -> int:
        return sum(self._held.values())

    def held(self, namespace: str) -> int:
        """How many slots ``namespace`` holds now."""
        return self._held[namespace]

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @asynccontextmanager
    async def hold(self, namespace: str, *, urgent: bool = False) -> AsyncIterator[None]:
        """Wait for a slot for a run in ``namespace`` and hold it while the block runs."""
        waiter = _Waiter(namespace, urgent, next(self._seq))
        self._waiting.append(waiter)
        self._hand_out()
        try:
            await waiter.turn
        except asyncio.CancelledError:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.turn.done() and not waiter.turn.cancelled():
                self._release(waiter)  # its turn came as it was cancelled
            raise
        try:
            yield
        finally:
            self._release(waiter)

    def _release(self, waiter: _Waiter) -> None:
        namespace = waiter.namespace
        self._held[namespace] -= 1
        if self._held[namespace] <= 0:
            del self._held[namespace]
        if waiter.extra:
            self._extra.discard(namespace)
        self._hand_out()

    def _hand_out(self) -> None:
        # A waiter being cancelled has its turn cancelled before it leaves the queue.
        self._waiting = [w for w in self._waiting if not w.turn.done()]
        while self.running < self.total:
            eligible = [w for w in self._waiting if self._held[w.namespace] < self.per_namespace]
            if not eligible:  # an urgent run's one extra slot, if nobody else may have it
                eligible = [w for w in self._waiting if w.urgent and w.namespace not in self._extra]
            if not eligible:
                return
            chosen = min(eligible, key=lambda w: (not w.urgent, self._held[w.namespace], w.seq))
            self._waiting.remove(chosen)
            if self._held[chosen.namespace] >= self.per_namespace:
                chosen.extra = True
                self._extra.add(chosen.namespace)
            self._held[chosen.namespace] += 1
            chosen.turn.set_result(None)
