"""Restoring a Backup into a fresh database: what Restore and RestoreDrill runs share.

Both kinds restore the same way: a new database owned by the target environment's role
(``ManagedPostgres.create_database``), logged in as that role (never as the server's
admin: the role owns the database and whatever code it holds), the artifact of the
Backup's completed attempt read from its storage and checked against its recorded
checksum before anything is written (``run_restore``), then counted table by table
(``table_counts``) for the manifest comparison. Only what happens around it differs: a
Restore switches the environment over to the new database, a drill runs its checks and
drops it later.

A Backup names its artifact implicitly: the attempt that completed is
``status.attempts`` and the name is ``artifact_name(namespace, name, uid, attempt)``,
the one the runner wrote (inline or in a Job). The restore itself runs inline
(``restore_backup``) or, with ``runner: Job``, in a runner Job (``runner_jobs``); the
rest is the operator's either way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from dockyard.core.models.backup import Backup, BackupPhase, TableRows
from dockyard.core.models.references import SecretKeyReference
from dockyard.core.settings import Settings
from dockyard.operator.database import ManagedDatabaseError, TenantLogin
from dockyard.operator.runs.context import (
    KeyUnavailable,
    RunContext,
    SourceUnavailable,
    artifact_name,
    load_key,
    tenant_dsn,
)
from dockyard.operator.runs.stores import (
    KEY_ENTRY,
    chosen_by_a_store,
    ensure_derived_secret,
    filled,
    store_keyring,
)
from dockyard.runner import (
    BackupError,
    EncryptionKey,
    Keyring,
    Progress,
    RestoreOptions,
    RestoreResult,
    run_restore,
    table_counts,
)

# Row counts may differ from the manifest by nothing: both come from one snapshot.
MISMATCHES_SHOWN: Final = 5


class DatabaseFailed(BackupError):
    """The managed server refused to create, drop or switch a database."""

    reason = "DatabaseFailed"


class DatabaseTaken(BackupError, reason="DatabaseTaken"):
    """The target's database was made for an earlier namespace of the same name."""


class KeysGone(KeyUnavailable):
    """Neither the backup's own key nor any key of its store can be had: as things stand,
    its artifact cannot be decrypted (a drill holds that against the backup)."""


class ManifestMismatch(BackupError):
    """The restored tables do not hold the rows the backup's manifest recorded."""

    reason = "ManifestMismatch"


def backup_artifact(backup: Backup) -> str:
    """The artifact of ``backup``'s completed attempt; ``SourceUnavailable`` if none."""
    status = backup.status
    if status.phase is not BackupPhase.COMPLETED or not status.sha256 or status.attempts < 1:
        raise SourceUnavailable(f"backup {backup.metadata.name} has no completed artifact")
    meta = backup.metadata
    return artifact_name(meta.namespace or "", meta.name or "", meta.uid or "", status.attempts)


async def fresh_database(context: RunContext, name: str, *, owner: TenantLogin) -> None:
    """An empty database ``name`` owned by ``owner``'s role (an earlier one is dropped)."""
    if context.postgres is None:
        raise SourceUnavailable("the operator has no managed PostgreSQL server")
    try:
        await context.postgres.create_database(name, owner=owner)
    except ManagedDatabaseError as exc:
        raise DatabaseFailed(exc.message) from None


async def drop_database(context: RunContext, name: str) -> None:
    """Drop ``name`` if it exists."""
    if context.postgres is None:
        return
    try:
        await context.postgres.drop_database(name)
    except ManagedDatabaseError as exc:
        raise DatabaseFailed(exc.message) from None


async def restore_backup(
    context: RunContext,
    backup: Backup,
    *,
    database: str,
    tenant: TenantLogin,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore ``backup`` into the (empty) ``database`` in this process, logged in as the
    ``tenant`` role that owns it, counting the bytes it reads into ``progress``.

    The checksum is verified before the database is touched: a flipped byte fails with
    ``ChecksumMismatch`` ("checksum mismatch: ...") and leaves it empty.
    """
    namespace = backup.metadata.namespace or ""
    artifact = backup_artifact(backup)
    dsn = tenant_dsn(context.settings, tenant, database)
    storage_spec, encryption = filled(backup)
    ambient = await chosen_by_a_store(context.kube, backup)
    async with context.storage(storage_spec, namespace, ambient=ambient) as storage:
        keys = await backup_keyring(context, backup, encryption.key_secret_ref)
        return await run_restore(
            dsn=dsn,
            storage=storage,
            name=artifact,
            expected_sha256=backup.status.sha256 or "",
            keys=keys,
            options=restore_options(context.settings),
            progress=progress,
        )


async def backup_keyring(context: RunContext, backup: Backup, own: SecretKeyReference) -> Keyring:
    """The keys that may open ``backup``'s artifact: its own key and, for a Backup from a
    BackupStore, every key of the store derived for its namespace (current and rotated
    out); the artifact's key id picks one. Its own key missing is only an error when the
    store offers none."""
    mine, offered = await _offered_keys(context, backup, own)
    return Keyring({key.key_id: key for key in (*mine, *offered)}.values())


async def job_key(context: RunContext, backup: Backup) -> tuple[SecretKeyReference, str]:
    """The Secret a restore Job mounts to open ``backup``'s artifact, and the key's id.

    The Backup's own key when it is the one the artifact names; else the store's key of
    that id, written to the Backup's namespace as a derived Secret (a runner may read no
    store key, and an inline restore is offered the same keys, see
    :func:`backup_keyring`). A Backup that records no key id gets its own key, or the
    store's current one."""
    own = filled(backup)[1].key_secret_ref
    mine, offered = await _offered_keys(context, backup, own)
    wanted = backup.status.key_id
    if mine and wanted in (None, mine[0].key_id):
        return own, mine[0].key_id
    chosen = next((key for key in offered if wanted in (None, key.key_id)), None)
    store = backup.spec.store_ref
    if chosen is not None and store is not None:
        namespace = backup.metadata.namespace or ""
        name = await ensure_derived_secret(context.kube, store.name, namespace, chosen)
        return SecretKeyReference(name=name, key=KEY_ENTRY), chosen.key_id
    if mine:  # not the artifact's key: the runner says which one it wanted, as inline
        return own, mine[0].key_id
    raise KeysGone(f"no key offered for Backup {backup.metadata.name} is its artifact's, {wanted}")


async def _offered_keys(
    context: RunContext, backup: Backup, own: SecretKeyReference
) -> tuple[list[EncryptionKey], list[EncryptionKey]]:
    """``backup``'s own key (none if it cannot be had) and its store's keys, which are
    read only when the own key is not the one the artifact names. ``KeysGone`` when there
    is neither; an apiserver that fails a read (``KubeError``) is not an answer, and
    propagates."""
    namespace = backup.metadata.namespace or ""
    mine: list[EncryptionKey] = []
    missing: KeyUnavailable | None = None
    try:
        mine.append(await load_key(context.kube, namespace, own))
    except KeyUnavailable as exc:
        missing = exc
    if mine and mine[0].key_id == backup.status.key_id:
        return mine, []
    offered = await store_keyring(context.kube, backup)
    if missing is not None and not offered:
        raise KeysGone(missing.message)
    return mine, offered


def restore_options(settings: Settings) -> RestoreOptions:
    """Parallel with a spool directory (``DOCKYARD_RESTORE_SPOOL_DIR``), else streamed."""
    spool = settings.restore_spool_dir
    return RestoreOptions(jobs=settings.restore_jobs, spool_dir=str(spool) if spool else None)


@dataclass(frozen=True, slots=True)
class RowCountCheck:
    """The restored tables' row counts against the backup's manifest."""

    expected: Mapping[str, int]
    found: Mapping[str, int]

    @property
    def mismatches(self) -> list[str]:
        """One line per table whose count differs or that is missing or extra."""
        lines = []
        for table in sorted(set(self.expected) | set(self.found)):
            want, got = self.expected.get(table), self.found.get(table)
            if want is None:
                lines.append(f"{table}: not in the manifest, {got} rows restored")
            elif got is None:
                lines.append(f"{table}: {want} rows in the manifest, table missing")
            elif want != got:
                lines.append(f"{table}: {want} rows in the manifest, {got} restored")
        return lines

    @property
    def passed(self) -> bool:
        return not self.mismatches

    def describe(self) -> str:
        lines = self.mismatches
        if not lines:
            return f"all {len(self.expected)} tables hold the rows the manifest recorded"
        hidden = len(lines) - MISMATCHES_SHOWN
        more = f" (and {hidden} more)" if hidden > 0 else ""
        shown = "; ".join(lines[:MISMATCHES_SHOWN])
        return f"row counts differ from the manifest: {shown}{more}"


async def check_row_counts(
    context: RunContext, manifest: Iterable[TableRows], database: str, tenant: TenantLogin
) -> RowCountCheck:
    """Count the rows of every table in ``database`` (as ``tenant``) against the backup's
    ``manifest`` (its tables, as a restore's plan records them too)."""
    expected = {t.name: t.rows for t in manifest}
    found = await table_counts(tenant_dsn(context.settings, tenant, database))
    return RowCountCheck(expected, found)


__all__ = [
    "DatabaseFailed",
    "ManifestMismatch",
    "RowCountCheck",
    "backup_artifact",
    "check_row_counts",
    "drop_database",
    "fresh_database",
    "restore_backup",
]
