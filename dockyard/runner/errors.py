"""Every way a backup, a restore or a verification can fail, as one exception hierarchy.

Each error has a ``reason`` (CamelCase, stable: it becomes a condition reason or a
drill's failed check), declared beside its name (``class WrongKey(ArtifactError,
reason="WrongKey")``), and a message that is safe to show: no DSN, password or key
material ever goes into one. Callers branch on the class, never on the text, with one
exception kept on purpose: a corrupted artifact's message starts with
``checksum mismatch`` so an operator reading a status or a log recognises it at once.
"""

from __future__ import annotations

from typing import Any, ClassVar


class BackupError(Exception):
    """Base class: ``reason`` fits a condition, ``message`` names no secret."""

    reason: ClassVar[str] = "BackupFailed"

    def __init_subclass__(cls, *, reason: str | None = None, **kwargs: Any) -> None:
        # ``class WrongKey(ArtifactError, reason="WrongKey")``: the reason beside the name.
        super().__init_subclass__(**kwargs)
        if reason is not None:
            cls.reason = reason

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- the artifact itself ------------------------------------------------------------------


class ArtifactError(BackupError, reason="ArtifactInvalid"):
    """The stored artifact cannot be trusted or read: restoring it must not be tried."""


class ChecksumMismatch(ArtifactError, reason="ChecksumMismatch"):
    """The stored bytes' sha256 differs from the one recorded when the backup was taken."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"checksum mismatch: expected sha256 {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class ArtifactCorrupt(ArtifactError, reason="ArtifactCorrupt"):
    """Not a Dockyard artifact, or a frame failed authentication (modified or reordered)."""


class ArtifactTruncated(ArtifactCorrupt, reason="ArtifactTruncated"):
    """The artifact ends before its final frame."""


class WrongKey(ArtifactError, reason="WrongKey"):
    """The key offered is not the one the artifact was encrypted with."""


# -- where artifacts live -----------------------------------------------------------------


class StorageError(BackupError, reason="StorageFailed"):
    """The storage backend failed (I/O error, permissions, an object store's refusal)."""


class StorageFull(StorageError, reason="StorageFull"):
    """The volume (or quota) under the artifacts has no room left; nothing was committed."""


class StorageQuotaExceeded(StorageFull, reason="StorageQuotaExceeded"):
    """A namespace's artifacts on a shared volume would outgrow its quota; nothing was
    committed."""


class SpoolFailed(StorageError, reason="SpoolFailed"):
    """A parallel restore could not write its local copy of the dump (the spool volume
    full, a file size limit); the artifact itself held its checksum and key."""


class ArtifactNotFound(StorageError, reason="ArtifactNotFound"):
    """No committed artifact has that name."""


class ArtifactExists(StorageError, reason="ArtifactExists"):
    """An artifact already has that name; artifacts are immutable once committed."""


# -- the databases and tools --------------------------------------------------------------


class DatabaseError(BackupError, reason="DatabaseUnavailable"):
    """The source or target database could not be used (unreachable, refused, a query failed)."""


class TooManyTables(BackupError, reason="TooManyTables"):
    """The database holds more tables than a backup's manifest records: found before the
    dump, rather than after a whole dump whose manifest no Backup could hold."""


class TargetNotEmpty(BackupError, reason="TargetNotEmpty"):
    """A restore was asked into a database that already holds tables."""


class ToolFailed(BackupError, reason="ToolFailed"):
    """``pg_dump``, ``pg_restore`` or ``zstd`` exited with an error (the message has its words)."""

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(message)
        self.tool = tool


class DumpFailed(ToolFailed, reason="DumpFailed"):
    """``pg_dump`` (or the compressor behind it) failed; nothing was committed."""


class RestoreFailed(ToolFailed, reason="RestoreFailed"):
    """``pg_restore`` failed; with ``--single-transaction`` the target was rolled back."""
