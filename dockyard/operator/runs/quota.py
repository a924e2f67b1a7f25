"""How much of the shared backups volume each namespace's inline backups may keep.

Inline runs to filesystem storage write under ``DOCKYARD_BACKUP_ROOT``, one volume for
every namespace. With ``DOCKYARD_BACKUP_NAMESPACE_QUOTA`` set, a namespace's artifacts
there are counted: those of its Completed Backups not yet deleted (the backup catalog),
plus what its runs in this process are writing now. Each chunk a run writes is charged
before it is written; one that would take the namespace past its quota fails the run
with ``StorageQuotaExceeded`` and its partial file is removed, as on a full volume. A
backup so failed is retried like one that met a full volume: retention or a ``ttl`` may
free room meanwhile.

Runner Jobs write from their own pods and are not counted here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from dockyard.runner.errors import StorageQuotaExceeded

if TYPE_CHECKING:
    from dockyard.operator.runs.catalog import Catalog


class NamespaceQuotas:
    """The quota ``limit`` (bytes) of each namespace's artifacts under ``root``."""

    def __init__(self, limit: int, catalog: Catalog, root: Path) -> None:
        self.limit = limit
        self.catalog = catalog
        self.root = root
        self._writing: dict[str, set[_Charges]] = {}

    @asynccontextmanager
    async def writing(self, namespace: str) -> AsyncIterator[_Charges]:
        """A quota for one run's writes in ``namespace``, counted with the others'."""
        under = self.root.expanduser().resolve().as_uri() + "/"
        stored = await self.catalog.stored_bytes(namespace, under)
        charges = _Charges(self, namespace, stored)
        runs = self._writing.setdefault(namespace, set())
        runs.add(charges)
        try:
            yield charges
        finally:
            runs.discard(charges)
            if not runs:
                del self._writing[namespace]

    def others(self, charges: _Charges) -> int:
        """What the namespace's other runs in this process have written so far."""
        return sum(c.written for c in self._writing.get(charges.namespace, ()) if c is not charges)


class _Charges:
    """One run's writes (``runner.filesystem.Quota``)."""

    def __init__(self, quotas: NamespaceQuotas, namespace: str, stored: int) -> None:
        self.quotas = quotas
        self.namespace = namespace
        self.stored = stored
        self.written = 0

    def charge(self, nbytes: int) -> None:
        total = self.stored + self.quotas.others(self) + self.written + nbytes
        if total > self.quotas.limit:
            raise StorageQuotaExceeded(
                f"namespace {self.namespace} would keep {total} bytes of backups on the "
                f"shared volume, over its quota of {self.quotas.limit} "
                "(DOCKYARD_BACKUP_NAMESPACE_QUOTA); the partial artifact was removed. "
                "Delete older Backups (or shorten their ttl or retention), or back up to a "
                "BackupStore on S3"
            )
        self.written += nbytes
