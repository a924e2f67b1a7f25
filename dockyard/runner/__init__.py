"""The runner: pg_dump and pg_restore pipelines, the artifact format, keys and storage.

This package takes, restores and verifies backups of environment databases:
encrypted, checksummed, streamed. It imports only ``dockyard.core`` (an import-linter
contract) and knows nothing of custom resources. Two callers share one code path:

- the operator (``operator/backups``, ``operator/restores``, ``operator/drills`` and
  what they share in ``operator/runs``), which runs it inline in its event loop and
  turns specs into these calls and results into statuses;
- the CLI, ``dockyard backup-run`` / ``restore-run`` (``commands``), which a runner Job
  executes; ``--report-backup`` patches the Backup's status from there.

The public API, all importable from here::

    # take a backup: pg_dump -Fc -Z0 | zstd | AES-256-GCM frames | sha256 | storage
    result = await run_backup(dsn=..., storage=storage, name="ns/env/bk-1.dkbk",
                              key=EncryptionKey("k1", key_bytes))
    result.sha256, result.size, result.location, result.manifest  # {schema.table: rows}

    # restore it into a fresh database: checksum first, then the key, then the data
    await run_restore(dsn=..., storage=storage, name=result.name,
                      expected_sha256=result.sha256, keys=Keyring([k1, k0]),
                      options=RestoreOptions(role="env_owner"))

    # prove it restorable without a database; count rows for a drill's checks
    await verify_artifact(storage=storage, name=..., expected_sha256=..., keys=...)
    await table_counts(dsn)  # {schema.table: rows}, the manifest's yardstick

    # where artifacts live: the Store protocol and its two backends
    FilesystemStore("/var/lib/dockyard/backups")        # a PVC mount
    async with S3Store("bucket", prefix="dockyard") as s3: ...
    async with connect_storage("s3://bucket/prefix") as storage: ...

Every failure is a :class:`BackupError` with a stable ``reason`` and a message free of
secrets; :class:`ChecksumMismatch` reads ``checksum mismatch: expected ..., got ...``.

Modules: ``runner`` (the three operations), ``streaming`` (their frames between tools
and store), ``commands`` (the CLI's two commands), ``envelope`` (the artifact format),
``keys``, ``storage`` (the protocol and what both backends share), ``filesystem``,
``s3``, ``endpoints`` (which S3 endpoints an inline run may reach), ``manifest``
(snapshot and row counts), ``processes`` (tool chains), ``libpq`` (connecting tools
without leaking passwords), ``server_text`` (tool output without row values),
``options``, ``results``, ``errors``. See ``docs/backups.md``.
"""

from dockyard.runner.envelope import DEFAULT_CHUNK_SIZE, Header, Opener, Sealer
from dockyard.runner.errors import (
    ArtifactCorrupt,
    ArtifactError,
    ArtifactExists,
    ArtifactNotFound,
    ArtifactTruncated,
    BackupError,
    ChecksumMismatch,
    DatabaseError,
    DumpFailed,
    RestoreFailed,
    SpoolFailed,
    StorageError,
    StorageFull,
    StorageQuotaExceeded,
    TargetNotEmpty,
    ToolFailed,
    TooManyTables,
    WrongKey,
)
from dockyard.runner.filesystem import FilesystemStore
from dockyard.runner.keys import EncryptionKey, Keyring
from dockyard.runner.manifest import table_counts
from dockyard.runner.options import BackupOptions, RestoreOptions, Tools
from dockyard.runner.progress import MeteredStore, Progress
from dockyard.runner.results import ArtifactReport, BackupResult, RestoreResult
from dockyard.runner.runner import run_backup, run_restore, verify_artifact
from dockyard.runner.storage import (
    ArtifactReader,
    ArtifactWriter,
    Store,
    StoredArtifact,
    check_name,
    connect_storage,
    verify_checksum,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "ArtifactCorrupt",
    "ArtifactError",
    "ArtifactExists",
    "ArtifactNotFound",
    "ArtifactReader",
    "ArtifactReport",
    "ArtifactTruncated",
    "ArtifactWriter",
    "BackupError",
    "BackupOptions",
    "BackupResult",
    "ChecksumMismatch",
    "DatabaseError",
    "DumpFailed",
    "EncryptionKey",
    "FilesystemStore",
    "Header",
    "Keyring",
    "MeteredStore",
    "Opener",
    "Progress",
    "RestoreFailed",
    "RestoreOptions",
    "RestoreResult",
    "Sealer",
    "SpoolFailed",
    "StorageError",
    "StorageFull",
    "StorageQuotaExceeded",
    "Store",
    "StoredArtifact",
    "TargetNotEmpty",
    "TooManyTables",
    "ToolFailed",
    "Tools",
    "WrongKey",
    "check_name",
    "connect_storage",
    "run_backup",
    "run_restore",
    "table_counts",
    "verify_artifact",
    "verify_checksum",
]
