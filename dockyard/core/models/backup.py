"""The Backup kind: one logical dump of an environment's database, stored and encrypted.

This module owns the Backup's spec and status (with the table manifest), the CEL rules
on them, and the CRD metadata; where artifacts are stored and how they are encrypted
are in ``storage``. A Backup is a record of one run: what it was asked to do (spec, immutable but
for ``ttl``) and what came of it (status: phase, artifact, checksum, table manifest,
which drill verified it). Status is written by the runner and the operator only.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Final, Self

from pydantic import Field

from dockyard.core.models.common import ConditionStatus, CRModel, CustomResource, status_field
from dockyard.core.models.declarations import (
    ENVIRONMENT_FIELD,
    PHASE_COLUMN,
    CRDInfo,
    PrinterColumn,
    ValidationRule,
)
from dockyard.core.models.environment import Tier
from dockyard.core.models.references import (
    EnvironmentReference,
    ObjectName,
    StoreReference,
)
from dockyard.core.models.rules import (
    GO_DURATION,
    positive_duration_check,
    positive_duration_rule,
)
from dockyard.core.models.status import RunPhase, RunStatus
from dockyard.core.models.storage import BackupEncryption, BackupStorage

# Tables are named schema.table as format('%I.%I') quotes them: each part a PostgreSQL
# identifier of at most 63 bytes, quoted when it must be, with every quote in it
# doubled (63 quotes make 128 characters), so 128 + 1 + 128.
TABLE_NAME_MAX_LENGTH: Final = 257
# A manifest of this many tables stays far below the API server's object size limit.
MANIFEST_MAX_TABLES: Final = 5000
SHA256_PATTERN: Final = r"^[0-9a-f]{64}$"


class BackupMethod(StrEnum):
    """How a backup is taken."""

    LOGICAL = "Logical"


class BackupRunner(StrEnum):
    """Where the runner executes a backup."""

    INLINE = "Inline"
    """In the operator process, with bounded concurrency: local and small clusters."""
    JOB = "Job"
    """In a batch/v1 Job of the operator's image, with a least-privilege ServiceAccount."""


RUNNER_DESCRIPTION: Final = (
    "Where the backup runs. Inline (default): inside the operator process, at most "
    "DOCKYARD_BACKUP_CONCURRENCY at once; a run interrupted by an operator restart is "
    "counted as a failed attempt and retried. Job: in a batch/v1 Job of the operator's "
    "image, with a ServiceAccount that may only patch backups/status; the database "
    "credentials and the key reach it from their Secrets, never through the spec."
)


class BackupPhase(RunPhase, StrEnum):
    """Where a backup is in its life; Completed and Failed are final."""

    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"


class BackupConditionType(StrEnum):
    """The condition types the operator sets on a Backup."""

    READY = "Ready"
    """The artifact is stored, checksummed and catalogued: it can be restored."""
    VERIFIED = "Verified"
    """A restore drill restored the artifact and its checks passed."""
    DATABASE_UNAVAILABLE = "DatabaseUnavailable"
    """True while the run is paused because the database server does not answer; the
    paused run uses up no attempt and starts by itself once the server answers."""


BackupTTL = Annotated[
    str, GO_DURATION, positive_duration_rule("ttl"), positive_duration_check("ttl")
]


class BackupSpec(CRModel):
    """What to back up, how and where; immutable once created, except ttl (storage,
    encryption and storeRef may be set once, when the operator fills them from a store)."""

    cel_rules = (
        *(
            ValidationRule(
                rule=f"self.{name} == oldSelf.{name}",
                message=f"{name} is immutable: create a new Backup instead",
                field_path=f".{name}",
            )
            for name in ("environmentRef", "method", "runner")
        ),
        *(
            ValidationRule(
                rule=f"!has(oldSelf.{name}) || (has(self.{name}) && self.{name} == oldSelf.{name})",
                message=f"{name} is immutable once set: create a new Backup instead",
                field_path=f".{name}",
            )
            for name in ("storage", "encryption", "storeRef")
        ),
    )

    environment_ref: EnvironmentReference
    """The Environment whose database is backed up."""
    method: BackupMethod = BackupMethod.LOGICAL
    """How the backup is taken. Logical: pg_dump in custom format from one consistent snapshot,
    compressed (zstd), encrypted and checksummed (sha256)."""
    store_ref: StoreReference | None = None
    """The BackupStore that storage and encryption come from when they are not given; without it,
    the store marked default. The operator sets it when it fills them from a store."""
    storage: BackupStorage | None = None
    """Where the artifact is stored: exactly one of filesystem and s3. Without it, the store's
    (the operator writes it here before the first attempt)."""
    encryption: BackupEncryption | None = None
    """The key the artifact is encrypted with. Without it, the store's current key, derived for
    this namespace into a Secret the operator writes here before the first attempt."""
    runner: BackupRunner = Field(default=BackupRunner.INLINE, description=RUNNER_DESCRIPTION)
    ttl: BackupTTL | None = None
    """How long after completing the Backup is deleted, with its artifact, as hours, minutes and
    seconds (720h, 36h30m). The newest backup of an environment that a drill verified is kept
    past its ttl until a newer one is verified. Without it the Backup stays until deleted (or
    until its schedule's retention removes it)."""


class TableRows(CRModel):
    """One table of a backup, with the number of rows it had in the dump's snapshot."""

    list_map_keys = ("name",)

    name: str = Field(min_length=1, max_length=TABLE_NAME_MAX_LENGTH)
    """Qualified name of the table, schema.table (for example public.orders)."""
    rows: int = Field(ge=0)
    """Rows in the table, counted in the dump's snapshot."""


class BackupManifest(CRModel):
    """What a backup holds, recorded from the same snapshot as the dump."""

    tables: list[TableRows] = Field(default_factory=list, max_length=MANIFEST_MAX_TABLES)
    """Every table with its row count; restore drills check restored row counts against it."""

    @classmethod
    def of(cls, rows: Mapping[str, int]) -> Self:
        """The manifest of ``rows`` (table name to row count), tables in name order."""
        return cls(
            tables=[TableRows(name=table, rows=count) for table, count in sorted(rows.items())]
        )


class BackupVerification(CRModel):
    """Which restore drill proved a backup restorable, and when."""

    drill: ObjectName
    """Name of the RestoreDrill, in the backup's namespace, that verified it."""
    at: datetime
    """When the drill's checks passed."""


class BackupStatus(RunStatus):
    """The observed state of a backup, written by the runner and the operator."""

    phases = BackupPhase
    outcome_condition = BackupConditionType.READY
    ARTIFACT_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"location", "size", "sha256", "key_id", "manifest", "completed_at"}
    )
    """The fields ``with_artifact`` sets: what a runner Job reports of its artifact."""
    field_descriptions: ClassVar[Mapping[str, str]] = {
        "observed_generation": "The .metadata.generation the operator last acted on.",
        "conditions": (
            "Current conditions: Ready (restorable), Verified (by a drill) and "
            "DatabaseUnavailable (True while paused for an unreachable database server)."
        ),
        "message": "Human-readable detail of the phase, such as why the backup failed.",
        "attempts": (
            "Runs started for this backup. A run interrupted (the operator or its Job was "
            "killed) is resumed or counted and retried, up to a limit, never left Running."
        ),
        "started_at": "When the current or last run started.",
        "completed_at": "When the backup completed or failed.",
    }

    phase: BackupPhase | None = None
    """Pending (waiting for a runner), Running, Completed (the artifact is stored and catalogued) or
    Failed (see message; a failed backup leaves no artifact)."""
    size: int | None = Field(default=None, ge=0)
    """Size of the stored artifact in bytes (compressed and encrypted)."""
    sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    """SHA-256 of the stored artifact, in hex. Every read is checked against it; a mismatch fails a
    restore or drill before its target is touched."""
    location: str | None = Field(default=None, max_length=2048)
    """Where the artifact is, as a URL: file:///path/to/artifact or s3://bucket/key."""
    key_id: str | None = Field(default=None, max_length=128)
    """Identifier of the key that encrypted the artifact: a fingerprint derived from the key, never
    the key itself."""
    manifest: BackupManifest | None = None
    """The tables in the backup with their row counts."""
    verified: BackupVerification | None = None
    """The last restore drill that restored this backup and passed its checks. Kept as history when
    a later drill fails on it (Verified False); retention never deletes an environment's newest
    backup whose last drill verdict passed."""
    expires_at: datetime | None = None
    """When the backup is deleted because of its ttl."""
    filled_from: str | None = Field(default=None, max_length=253)
    """The BackupStore the operator filled this backup's storage or encryption key from,
    written just before it fills them. As long as the backup exists, that store's deletion
    waits for it: its artifacts need the store's identity and keys."""
    environment_tier: Tier | None = None
    """The tier of the environment when the backup first ran, written by the operator. A
    production backup is guarded: deleting it, or changing its ttl, takes the destroy verb
    on backups (manifests/production-guard-policy.yaml)."""

    def standing_verification(self) -> BackupVerification | None:
        """``verified``, unless a later drill failed on the backup (Verified False): the
        pass that retention, ``latestVerified`` and the environment's summary rely on."""
        condition = self.condition(BackupConditionType.VERIFIED)
        if condition is not None and condition.status is ConditionStatus.FALSE:
            return None
        return self.verified

    def with_artifact(
        self,
        *,
        location: str,
        size: int,
        sha256: str,
        key_id: str,
        tables: Mapping[str, int],
        completed_at: datetime,
    ) -> Self:
        """A copy recording a stored artifact (the ``ARTIFACT_FIELDS``): where it is, its
        size, digest and key, the row count of each of its tables and when it was
        stored. The phase is left as it is."""
        return self.model_copy(
            update={
                "location": location,
                "size": size,
                "sha256": sha256,
                "key_id": key_id,
                "manifest": BackupManifest.of(tables),
                "completed_at": completed_at,
            }
        )


class Backup(CustomResource):
    """A Backup is one encrypted, checksummed logical dump of an Environment's database,
    with the table manifest that restore drills check against."""

    crd = CRDInfo(
        kind="Backup",
        plural="backups",
        short_names=("bk",),
        selectable_fields=(ENVIRONMENT_FIELD,),
        printer_columns=(
            PrinterColumn.environment("Environment whose database is backed up."),
            PHASE_COLUMN,
            PrinterColumn("Size", "integer", ".status.size", "Artifact size in bytes."),
            PrinterColumn(
                "Verified",
                "date",
                ".status.verified.at",
                "When a restore drill last proved the backup restorable.",
            ),
            PrinterColumn(
                "Drill",
                "string",
                ".status.verified.drill",
                "The restore drill that verified the backup.",
                priority=1,
            ),
        ),
    )

    spec: BackupSpec
    """What to back up, how and where."""
    status: BackupStatus = status_field(
        BackupStatus, "The observed state of the backup, written by the operator."
    )


__all__ = [
    "Backup",
    "BackupConditionType",
    "BackupManifest",
    "BackupMethod",
    "BackupPhase",
    "BackupRunner",
    "BackupSpec",
    "BackupStatus",
    "BackupVerification",
    "TableRows",
]
