"""Every way a backup, a restore or a verification can fail, as one exception hierarchy.

Each error has a ``reason`` (CamelCase, stable: it becomes a condition reason or a
drill's failed check) and a message that is safe to show: no DSN, password or key
material ever goes into one. Callers branch on the class, never on the text, with one
exception kept on purpose: a corrupted artifact's message starts with
``checksum mismatch`` so an operator reading a status or a log recognises it at once.
"""

from __future__ import annotations

from typing import ClassVar


class BackupError(Exception):
    """Base class: ``reason`` fits a condition, ``message`` names no secret."""

    reason: ClassVar[str] = "BackupFailed"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- the artifact itself ------------------------------------------------------------------


class ArtifactError(BackupError):
    """The stored artifact cannot be trusted or read: restoring it must not be tried."""

    reason = "ArtifactInvalid"


class ChecksumMismatch(ArtifactError):
    """The stored bytes' sha256 differs from the one recorded when the backup was taken."""

    reason = "ChecksumMismatch"

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"checksum mismatch: expected sha256 {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class ArtifactCorrupt(ArtifactError):
    """Not a Dockyard artifact, or a frame failed authentication (modified or reordered)."""

    reason = "ArtifactCorrupt"


class ArtifactTruncated(ArtifactCorrupt):
    """The artifact ends before its final frame."""

    reason = "ArtifactTruncated"


class WrongKey(ArtifactError):
    """The key offered is not the one the artifact was encrypted with."""

    reason = "WrongKey"


# -- where artifacts live -----------------------------------------------------------------


class StorageError(BackupError):
    """The storage backend failed (I/O error, permissions, an object store's refusal)."""

    reason = "StorageFailed"


class ArtifactNotFound(StorageError):
    """No committed artifact has that name."""

    reason = "ArtifactNotFound"


class ArtifactExists(StorageError):
    """An artifact already has that name; artifacts are immutable once committed."""

    reason = "ArtifactExists"


# -- the databases and tools --------------------------------------------------------------


class DatabaseError(BackupError):
    """The source or target database could not be used (unreachable, refused, a query failed)."""

    reason = "DatabaseUnavailable"


class TargetNotEmpty(BackupError):
    """A restore was asked into a database that already holds tables."""

    reason = "TargetNotEmpty"


class ToolFailed(BackupError):
    """``pg_dump``, ``pg_restore`` or ``zstd`` exited with an error (the message has its words)."""

    reason = "ToolFailed"

    def __init__(self, tool: str, message: str) -> None:
        super().__init__(message)
        self.tool = tool


class DumpFailed(ToolFailed):
    """``pg_dump`` (or the compressor behind it) failed; nothing was committed."""

    reason = "DumpFailed"


class RestoreFailed(ToolFailed):
    """``pg_restore`` failed; with ``--single-transaction`` the target was rolled back."""

    reason = "RestoreFailed"
