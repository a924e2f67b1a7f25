"""``EventTail``: one poll of the event log per API replica, shared by every stream.

Every ``POLL_SECONDS`` it asks for the newest ``seq`` (one indexed query) while at least
one stream is open (``listening``), and every ``IDLE_POLL_SECONDS`` while none is.
Streams wait on it instead of each polling the database: a new event wakes every
stream, which then reads the rows after its own cursor. With PostgreSQL down the tail
keeps trying, and the streams keep their connections (heartbeats go on) and resume
where they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Final

import asyncpg

from dockyard.core import event_log
from dockyard.core.breakers import DependencyUnavailable
from dockyard.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

POLL_SECONDS: Final = 0.5
IDLE_POLL_SECONDS: Final = 30.0


class EventTail:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.last = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._listeners = 0
        self._wanted = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-tail")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            try:
                newest = await event_log.last_seq(self.pool)
            except (
                DependencyUnavailable,
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                TimeoutError,
            ) as exc:
                logger.debug("event tail: %s", type(exc).__name__)
            else:
                if newest != self.last:
                    self.last = newest
                    async with self._changed:
                        self._changed.notify_all()
            await asyncio.sleep(POLL_SECONDS)
            # Idle, it still looks now and then: a stream opened while PostgreSQL is down
            # starts from ``last``, which must not be far behind. ``asyncio.timeout``, not
            # ``wait_for``: on Python 3.11, a stop's cancel that lands as the event is set
            # is swallowed by ``wait_for``, and the loop then ran on with ``stop`` waiting
            # for it for good (a CI run hung in test_event_tail).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(IDLE_POLL_SECONDS):
                    await self._wanted.wait()

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        """Held by each open stream (and each wait): the tail polls while one is held."""
        self._listeners += 1
        self._wanted.set()
        try:
            yield
        finally:
            self._listeners -= 1
            if not self._listeners:
                self._wanted.clear()

    async def wait_beyond(self, seq: int, within: float) -> bool:
        """Wait until the log holds an event after ``seq``; False after ``within`` s."""
        with self.listening():
            try:
                async with asyncio.timeout(within), self._changed:
                    await self._changed.wait_for(lambda: self.last > seq)
            except TimeoutError:
                return False
            return True
