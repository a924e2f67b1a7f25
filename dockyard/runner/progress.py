"""How far a run has read its artifact: a ``Progress`` that a ``Store`` is wrapped in.

A restore reads its artifact twice when it streams: once to check the sha256 and the key
(``CHECKSUM``) before the target is touched, then into pg_restore (``RESTORE``). A
parallel restore reads it once, into its spool (``CHECKSUM``), and pg_restore then
reads the spool. Whoever started the run reads ``Progress`` whenever it likes (the
operator writes it into the Restore's status every few seconds).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from dockyard.runner.storage import ArtifactReader, ArtifactWriter, Store

CHECKSUM: Final = "Checksum"
RESTORE: Final = "Restore"


@dataclass(slots=True)
class Progress:
    """The pass in progress, and the bytes of the artifact it has read of ``total``."""

    step: str = ""
    done: int = 0
    total: int | None = None

    def begin(self, step: str, total: int | None) -> None:
        """A new pass over the artifact starts."""
        self.step, self.done, self.total = step, 0, total


class MeteredStore:
    """``store``, with every byte read through ``open`` counted into ``progress``."""

    def __init__(self, store: Store, progress: Progress) -> None:
        self._store = store
        self.progress = progress

    def location(self, name: str) -> str:
        return self._store.location(name)

    def create(self, name: str) -> AbstractAsyncContextManager[ArtifactWriter]:
        return self._store.create(name)

    @asynccontextmanager
    async def open(self, name: str, *, expected_sha256: str) -> AsyncIterator[ArtifactReader]:
        async with self._store.open(name, expected_sha256=expected_sha256) as reader:
            yield _Counted(reader, self.progress)

    async def delete(self, name: str) -> bool:
        return await self._store.delete(name)

    async def exists(self, name: str) -> bool:
        return await self._store.exists(name)

    async def size(self, name: str) -> int:
        return await self._store.size(name)

    async def list(self, prefix: str = "") -> list[str]:
        return await self._store.list(prefix)

    async def remove_stale_partials(self, older_than: timedelta) -> int:
        return await self._store.remove_stale_partials(older_than)


class _Counted:
    def __init__(self, reader: ArtifactReader, progress: Progress) -> None:
        self._reader = reader
        self._progress = progress

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._reader:
            self._progress.done += len(chunk)
            yield chunk


__all__ = ["CHECKSUM", "RESTORE", "MeteredStore", "Progress"]
