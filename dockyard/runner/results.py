"""What a backup, a restore and a verification report: the runner's return values.

They are pydantic models so the same object serves the operator (which copies them
into a Backup's or a Restore's status) and ``dockyard backup-run`` / ``restore-run``
(which print them as JSON for a Job's log): ``result.model_dump(mode="json")``.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from dockyard.runner.envelope import FORMAT_VERSION

ARTIFACT_FORMAT = f"dockyard-backup/{FORMAT_VERSION}"


class BackupResult(BaseModel):
    """A committed backup: where, how big, its digest, its key and its table manifest."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(description="the artifact's name in its storage")
    location: str = Field(description="URL of the artifact (file:// or s3://)")
    size: int = Field(description="stored bytes")
    sha256: str = Field(description="sha256 of the stored bytes, hex")
    key_id: str = Field(description="id of the encryption key")
    manifest: dict[str, int] = Field(
        description="exact row count per table (schema.table), from the dump's snapshot"
    )
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    pg_dump_version: str
    server_version: str = Field(description="the source server's version")
    format: str = ARTIFACT_FORMAT
    compression: str = Field(description="e.g. zstd-3")
    chunk_size: int = Field(description="plaintext bytes per encrypted frame")


class RestoreResult(BaseModel):
    """A completed restore: which artifact went into which database."""

    model_config = ConfigDict(frozen=True)

    name: str
    sha256: str
    size: int
    key_id: str
    database: str = Field(description="the target database's name")
    role: str | None = Field(description="the role the restored objects belong to")
    started_at: datetime
    finished_at: datetime
    duration_seconds: float
    pg_restore_version: str


class ArtifactReport(BaseModel):
    """An artifact verified without a database: checksum, every frame, the whole stream."""

    model_config = ConfigDict(frozen=True)

    name: str
    sha256: str
    size: int
    key_id: str
    chunk_size: int
    archive_checked: bool = Field(
        description="pg_restore parsed the whole decrypted dump (not only zstd's checksum)"
    )
    duration_seconds: float
