"""How much of the shared backups volume each namespace's inline backups may keep.

Inline runs to filesystem storage write under ``DOCKYARD_BACKUP_ROOT``, one volume for
every namespace. With ``DOCKYARD_BACKUP_NAMESPACE_QUOTA`` set, a namespace's artifacts
there are counted: those of its Completed Backups not yet deleted (the backup catalog's
sizes), plus what its backups in this process are writing now. Each chunk a run writes
is charged before it is written; one that would take the namespace past its quota fails
the run with ``StorageQuotaExceeded`` and its partial file is removed, as on a full
volume.

The catalog is read when a run starts, and again when one ends while others of the
namespace still write: a run stays counted until its artifact is catalogued (the
Backup life cycle holds its quota across the catalog write). When that read fails (the
database is down), or the pass is cancelled during it, what the run wrote stays counted
until a read started after it answers. If the artifact's catalog row could not be
written either, that read does not have it: it counts again once the Backup's catalog
retry has written it, and not in between. Runner Jobs' artifacts count once catalogued,
but their writes are not checked as they happen. If the catalog cannot be read, the run
fails with a retryable ``StorageFailed``: a quota that cannot be checked is not a quota.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg

from dockyard.runner.errors import StorageError, StorageQuotaExceeded

if TYPE_CHECKING:
    from dockyard.operator.runs.catalog import Catalog


class NamespaceQuotas:
    """The quota ``limit`` (bytes) of each namespace's artifacts under ``root``."""

    def __init__(self, limit: int, catalog: Catalog, root: Path) -> None:
        self.limit = limit
        self.catalog = catalog
        # Artifacts' locations are file URIs of resolved paths under the root.
        self._under = root.expanduser().resolve().as_uri() + "/"
        self._stored: dict[str, int] = {}
        self._writing: dict[str, set[_Charges]] = {}
        # Reads are numbered; one that answers after a later one was counted is dropped.
        self._reads = 0
        self._counted: dict[str, int] = {}
        # What ended runs wrote whose read again failed, by that read's number: counted
        # until a read started later is counted (it sees their catalogued artifacts).
        self._carried: dict[str, list[tuple[int, int]]] = {}

    @asynccontextmanager
    async def writing(self, namespace: str) -> AsyncIterator[_Charges]:
        """A quota for one run's writes in ``namespace``, counted with the others'.

        The run is one of the namespace's from before its first read until after its
        last: a run ending meanwhile sees it and reads again, and its own bytes count
        until a read that started after its artifact was catalogued replaces them.
        """
        runs = self._writing.setdefault(namespace, set())
        charges = _Charges(self, namespace)
        runs.add(charges)
        try:
            number = self._number()
            self._count(namespace, number, await self._read(namespace))
            yield charges
        finally:
            await self._ended(namespace, runs, charges)

    async def _ended(self, namespace: str, runs: set[_Charges], ended: _Charges) -> None:
        """After ``ended``: its artifact is catalogued by now (or was never committed).
        While other runs write, read again; if the catalog does not answer (or the pass
        is cancelled meanwhile), keep what it wrote counted. Its charges stay among the
        runs' until the new count stands. A run that wrote nothing, or whose fellows are
        all ending too, needs no new count: the next run to start reads anew."""
        ended.ending = True
        try:
            if ended.written and any(not run.ending for run in runs):
                number = self._number()
                try:
                    stored = await self._read(namespace)
                except BaseException as exc:
                    if number > self._counted.get(namespace, 0):
                        self._carried.setdefault(namespace, []).append((number, ended.written))
                    if not isinstance(exc, StorageError):
                        raise
                else:
                    self._count(namespace, number, stored)
        finally:
            runs.discard(ended)
            if not runs:
                del self._writing[namespace]
                for memory in (self._stored, self._counted, self._carried):
                    memory.pop(namespace, None)

    def _number(self) -> int:
        """Reads are numbered in the order they start: one started later sees all that
        was committed before an earlier one did."""
        self._reads += 1
        return self._reads

    def _count(self, namespace: str, number: int, stored: int) -> None:
        if number > self._counted.get(namespace, 0):
            self._counted[namespace] = number
            self._stored[namespace] = stored
            if carried := self._carried.get(namespace):
                self._carried[namespace] = [(n, size) for n, size in carried if n > number]

    def counted(self, charges: _Charges) -> int:
        """What the namespace keeps and its runs in this process have written so far."""
        namespace = charges.namespace
        runs = self._writing.get(namespace, ())
        carried = sum(size for _, size in self._carried.get(namespace, ()))
        return self._stored.get(namespace, 0) + carried + sum(c.written for c in runs)

    async def _read(self, namespace: str) -> int:
        try:
            return await self.catalog.stored_bytes(namespace, self._under)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            raise StorageError(
                f"the quota of namespace {namespace} on the backups volume cannot be "
                "checked: the platform database did not answer"
            ) from None


class _Charges:
    """One run's writes (``runner.filesystem.Quota``)."""

    def __init__(self, quotas: NamespaceQuotas, namespace: str) -> None:
        self.quotas = quotas
        self.namespace = namespace
        self.written = 0
        self.ending = False

    def charge(self, nbytes: int) -> None:
        total = self.quotas.counted(self) + nbytes
        if total > self.quotas.limit:
            raise StorageQuotaExceeded(
                f"namespace {self.namespace} would keep {total} bytes of backups on the "
                f"shared volume, over its quota of {self.quotas.limit} "
                "(DOCKYARD_BACKUP_NAMESPACE_QUOTA); the partial artifact was removed. "
                "Delete older Backups (or shorten their ttl), or back up to a BackupStore "
                "on S3"
            )
        self.written += nbytes

    def release(self, nbytes: int) -> None:
        self.written = max(self.written - nbytes, 0)
