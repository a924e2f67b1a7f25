"""The API's one poll of the event log: it asks while a stream is open, and only now and
then with none. The pool is a stand-in that counts the questions and answers the
newest seq it was given (the real log is tests/integration/test_event_stream.py's)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dockyard.api import event_tail
from dockyard.api.event_tail import EventTail


class CountingPool:
    def __init__(self) -> None:
        self.newest = 0
        self.asked = 0

    async def fetchval(self, *_: Any) -> int:
        self.asked += 1
        return self.newest


async def test_the_tail_asks_nothing_without_streams_and_wakes_a_waiting_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(event_tail, "POLL_SECONDS", 0.01)
    pool = CountingPool()
    tail = EventTail(pool)
    await tail.start()
    try:
        await asyncio.sleep(0.2)  # twenty poll intervals, nobody listening
        assert pool.asked <= 1  # the first look; then one every IDLE_POLL_SECONDS (30 s)
        waiting = asyncio.create_task(tail.wait_beyond(0, within=2))
        await asyncio.sleep(0.05)
        assert pool.asked > 0  # a stream waits: the tail polls
        pool.newest = 7
        assert await waiting is True
        assert tail.last == 7
        await asyncio.sleep(0.05)
        idle = pool.asked
        await asyncio.sleep(0.2)
        assert pool.asked - idle <= 1  # the stream got its event: idle again
        assert await tail.wait_beyond(7, within=0.05) is False
        with tail.listening():  # an open stream reads tail.last between its waits
            pool.newest = 9
            await asyncio.sleep(0.1)
            assert tail.last == 9
    finally:
        await tail.stop()
