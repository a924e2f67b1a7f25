"""An inline restore's progress in its status: the bytes of the artifact read so far.

While the attempt reads, ``reported`` writes ``status.progress`` every
``PROGRESS_SECONDS`` when it has moved, and once more at the end, so ``kubectl dockyard
restore wait`` (and anyone watching the Restore) sees the pass and the bytes. A write
that fails is logged and the restore goes on: progress is a courtesy, not a step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Final

import aiohttp

from dockyard.core.kube import KubeError
from dockyard.core.models.restore import Restore, RestoreProgress, RestoreStep
from dockyard.core.tasks import cancel_and_wait
from dockyard.operator.store import KindStore
from dockyard.runner import Progress

logger = logging.getLogger(__name__)

PROGRESS_SECONDS: Final = 2.0


def progress_status(progress: Progress) -> RestoreProgress | None:
    """``progress`` as the status shows it; ``None`` before the first pass began."""
    if not progress.step:
        return None
    return RestoreProgress(
        step=RestoreStep(progress.step),
        bytes_done=progress.done,
        bytes_total=progress.total,
        updated_at=datetime.now(UTC),
    )


@asynccontextmanager
async def reported(
    restores: KindStore[Restore], namespace: str, name: str, uid: str
) -> AsyncIterator[Progress]:
    """A ``Progress`` for the run inside the block, written into the status of the
    Restore ``uid`` (never into another made again under its name)."""
    progress = Progress()
    where = (namespace, name, uid)
    task = asyncio.create_task(
        _periodically(restores, where, progress), name=f"restore-progress {name}"
    )
    try:
        yield progress
    finally:
        await cancel_and_wait(task)
        await _write(restores, where, progress)


async def _periodically(
    restores: KindStore[Restore], where: tuple[str, str, str], progress: Progress
) -> None:
    shown: tuple[str, int] | None = None
    while True:
        await asyncio.sleep(PROGRESS_SECONDS)
        now = (progress.step, progress.done)
        if now != shown:
            await _write(restores, where, progress)
            shown = now


async def _write(
    restores: KindStore[Restore], where: tuple[str, str, str], progress: Progress
) -> None:
    status = progress_status(progress)
    if status is None:
        return
    namespace, name, uid = where
    body = {"progress": status.model_dump(mode="json", by_alias=True, exclude_none=True)}
    try:
        await restores.write_status(namespace, name, body, uid=uid)
    except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
        logger.warning(
            "restore progress not written",
            extra={"namespace": namespace, "restore": name, "error": str(exc)},
        )


__all__ = ["PROGRESS_SECONDS", "progress_status", "reported"]
