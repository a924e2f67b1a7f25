"""``EventTail``: one poll of the event log per API replica, shared by every stream.

Every ``POLL_SECONDS`` it asks for the newest ``seq`` (one indexed query), while at least
one stream waits on it; with no stream open it asks nothing. Streams wait on it instead
of each polling the database: a new event wakes every stream, which then reads the rows
after its own cursor. With PostgreSQL down the tail keeps trying, and
the streams keep their connections (heartbeats go on) and resume where they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import asyncpg

from dockyard.core import event_log
from dockyard.core.breakers import DependencyUnavailable

logger = logging.getLogger(__name__)

POLL_SECONDS: Final = 0.5


class EventTail:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.last = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self._waiting = 0
        self._wanted = asyncio.Event()
        self.polls = 0

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-tail")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wanted.wait()
            self.polls += 1
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

    async def wait_beyond(self, seq: int, within: float) -> bool:
        """Wait until the log holds an event after ``seq``; False after ``within`` s."""
        self._waiting += 1
        self._wanted.set()
        try:
            async with asyncio.timeout(within), self._changed:
                await self._changed.wait_for(lambda: self.last > seq)
        except TimeoutError:
            return False
        finally:
            self._waiting -= 1
            if not self._waiting:
                self._wanted.clear()
        return True
