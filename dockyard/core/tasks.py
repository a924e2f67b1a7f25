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
    current = asyncio.current_task()
    before = current.cancelling() if current is not None else 0
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        # A cancel of the caller that arrived while it waited must not be lost; one it
        # was already handling (a cleanup running because it was cancelled) is not new.
        if current is not None and current.cancelling() > before:
            raise
