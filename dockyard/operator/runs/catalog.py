"""The backup catalog in the platform database: one row per Backup object (by uid).

This module owns the SQL of ``backup_catalog`` (migration ``0002_backups.sql``). The
operator writes a row after the artifact is committed and before the status says
Completed, so anything Completed is catalogued; writes are upserts keyed by uid, so a
status that got ahead of its row (the database was down) is caught up at the next
start-up, when the resume pass records every Completed backup again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

import asyncpg

from dockyard.core.models.backup import Backup

_UPSERT: Final = """
INSERT INTO backup_catalog (
    uid, namespace, name, environment, phase, location, size, sha256, key_id, manifest,
    started_at, completed_at, verified_by, verified_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11, $12, $13, $14, now())
ON CONFLICT (uid) DO UPDATE SET
    phase = EXCLUDED.phase, location = EXCLUDED.location, size = EXCLUDED.size,
    sha256 = EXCLUDED.sha256, key_id = EXCLUDED.key_id, manifest = EXCLUDED.manifest,
    started_at = EXCLUDED.started_at, completed_at = EXCLUDED.completed_at,
    verified_by = EXCLUDED.verified_by, verified_at = EXCLUDED.verified_at,
    updated_at = now()
"""
_MARK_VERIFIED: Final = (
    "UPDATE backup_catalog SET verified_by = $2, verified_at = $3, updated_at = now() "
    "WHERE uid = $1"
)
_MARK_DELETED: Final = (
    "UPDATE backup_catalog SET deleted_at = now(), updated_at = now() "
    "WHERE uid = $1 AND deleted_at IS NULL"
)

# What a namespace's completed, undeleted artifacts take under one location prefix.
_STORED_BYTES: Final = """
SELECT coalesce(sum(size), 0) FROM backup_catalog
WHERE namespace = $1 AND phase = 'Completed' AND deleted_at IS NULL
  AND starts_with(location, $2)
"""


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """What the catalog records about one backup."""

    uid: str
    namespace: str
    name: str
    environment: str
    phase: str
    location: str | None
    size: int | None
    sha256: str | None
    key_id: str | None
    manifest: dict[str, int]
    started_at: datetime | None
    completed_at: datetime | None
    verified_by: str | None
    verified_at: datetime | None

    @classmethod
    def of(cls, backup: Backup) -> CatalogEntry:
        """The entry of a Backup as its status stands."""
        meta, status = backup.metadata, backup.status
        manifest = status.manifest.tables if status.manifest else []
        return cls(
            uid=meta.uid or "",
            namespace=meta.namespace or "",
            name=meta.name or "",
            environment=backup.spec.environment_ref.name,
            phase=str(status.phase or "Pending"),
            location=status.location,
            size=status.size,
            sha256=status.sha256,
            key_id=status.key_id,
            manifest={table.name: table.rows for table in manifest},
            started_at=status.started_at,
            completed_at=status.completed_at,
            verified_by=status.verified.drill if status.verified else None,
            verified_at=status.verified.at if status.verified else None,
        )


class Catalog:
    """``backup_catalog`` over the operator's pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(self, entry: CatalogEntry) -> None:
        """Insert or update the row of ``entry.uid``."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                _UPSERT,
                entry.uid,
                entry.namespace,
                entry.name,
                entry.environment,
                entry.phase,
                entry.location,
                entry.size,
                entry.sha256,
                entry.key_id,
                # The pool's connections encode jsonb themselves (dockyard.core.db).
                entry.manifest,
                entry.started_at,
                entry.completed_at,
                entry.verified_by,
                entry.verified_at,
            )

    async def mark_verified(self, uid: str, *, drill: str, at: datetime) -> None:
        """Record that the restore drill ``drill`` verified the backup ``uid`` at ``at``."""
        async with self.pool.acquire() as conn:
            await conn.execute(_MARK_VERIFIED, uid, drill, at)

    async def stored_bytes(self, namespace: str, under: str) -> int:
        """The bytes of the artifacts of ``namespace``'s Completed Backups not yet deleted
        whose location begins with ``under`` (a directory's ``file://`` URI)."""
        async with self.pool.acquire() as conn:
            return int(await conn.fetchval(_STORED_BYTES, namespace, under))

    async def mark_deleted(self, uid: str) -> None:
        """Record that the backup and its artifact are gone (the row stays as history)."""
        async with self.pool.acquire() as conn:
            await conn.execute(_MARK_DELETED, uid)
