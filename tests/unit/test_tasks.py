"""``cancel_and_wait``: the task it stops is stopped, a cleanup that runs because its
own task was cancelled gets to its end, and a cancel of the caller that arrives while it
waits is not lost."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from dockyard.core.tasks import cancel_and_wait


async def _forever() -> None:
    await asyncio.Event().wait()


async def test_a_cleanup_running_because_its_task_was_cancelled_stops_every_task() -> None:
    # Kopf's cleanup activities: cancelled at shutdown, they swallow the cancel (no
    # uncancel) and then run their cleanup, which stops one task after another.
    first, second = asyncio.create_task(_forever()), asyncio.create_task(_forever())
    cleaned: list[str] = []

    async def cleanup_activity() -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await _forever()
        await cancel_and_wait(first)
        await cancel_and_wait(second)
        cleaned.append("done")

    activity = asyncio.create_task(cleanup_activity())
    await asyncio.sleep(0)
    activity.cancel()
    await activity

    assert cleaned == ["done"]
    assert first.cancelled()
    assert second.cancelled()


async def test_a_cancel_of_the_caller_while_it_waits_is_not_lost() -> None:
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await _forever()
        finally:
            await release.wait()  # takes its time to stop

    task = asyncio.create_task(slow_to_stop())
    after: list[str] = []

    async def caller() -> None:
        await cancel_and_wait(task)
        after.append("went on")

    waiting = asyncio.create_task(caller())
    await asyncio.sleep(0.01)
    waiting.cancel()  # while it waits for the task
    release.set()

    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert after == []
    assert task.cancelled()
