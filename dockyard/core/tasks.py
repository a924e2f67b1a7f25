"""Background tasks: the one way a component stops the task it started."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (when there is one) and wait until it has stopped.

    The task's own ``CancelledError`` is swallowed; a cancellation of the caller is not,
    so a component stopping under a cancelled shutdown still stops.
    """
    if task is None:
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling() > 0:
            raise  # the caller's own cancellation, which must not be lost
