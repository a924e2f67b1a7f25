"""The Restore kind: put a backup back into an environment, safely and on approval.

This module owns the Restore's spec (which backup, into which environment, dry run,
safety backup), its status (phase, the plan, the approval record, timings), the CEL
rules that keep the source unambiguous and the spec from changing under a running
restore, and the annotations through which the requester and the approver are named.
Choosing the backup, estimating the duration and deciding on approval are pure logic
in ``dockyard.core.restore_plan``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Final, Self

from pydantic import Field, model_validator

from dockyard.core.models.backup import MANIFEST_MAX_TABLES, BackupRunner, TableRows
from dockyard.core.models.common import CRModel, CustomResource, status_field
from dockyard.core.models.declarations import PHASE_COLUMN, CRDInfo, PrinterColumn, ValidationRule
from dockyard.core.models.environment import Tier
from dockyard.core.models.references import (
    OBJECT_NAME_PATTERN,
    BackupReference,
    EnvironmentReference,
    ObjectName,
)
from dockyard.core.models.rules import check_exactly_one, exactly_one_rule
from dockyard.core.models.status import RunPhase, RunStatus

REQUESTED_BY_ANNOTATION: Final = "dockyard.io/requested-by"
"""Who asked for the restore; the REST API sets it to the authenticated caller."""
APPROVED_BY_ANNOTATION: Final = "dockyard.io/approved-by"
"""Who approves a restore that needs approval; the operator verifies it before acting."""
APPROVER_GROUPS_ANNOTATION: Final = "dockyard.io/approver-groups"
"""Groups of the approver (comma-separated), written with the approval; the operator's
SubjectAccessReview of the approver includes them (an approve right held via a group)."""
REJECTED_BY_ANNOTATION: Final = "dockyard.io/rejected-by"
"""Who rejects a restore awaiting approval: the operator fails it instead of carrying it out."""
REJECTION_REASON_ANNOTATION: Final = "dockyard.io/rejection-reason"
"""Why, in the rejecter's words (optional, written with the rejection)."""
REJECTION_REASON_MAX_LENGTH: Final = 256

# Users are Kubernetes user names (an e-mail, system:serviceaccount:ns:name, ...).
USER_MAX_LENGTH: Final = 253


class SourceSelection(StrEnum):
    """Which of an environment's completed backups a restore takes."""

    LATEST = "latest"
    LATEST_VERIFIED = "latestVerified"


class RestorePhase(RunPhase, StrEnum):
    """Where a restore is; Completed and Failed are final."""

    PENDING = "Pending"
    AWAITING_APPROVAL = "AwaitingApproval"
    BACKING_UP = "BackingUp"
    RESTORING = "Restoring"
    VERIFYING = "Verifying"
    COMPLETED = "Completed"
    FAILED = "Failed"


class RestoreConditionType(StrEnum):
    """The condition types the operator sets on a Restore."""

    PLANNED = "Planned"
    """The source backup and the target are resolved; status.plan says what will happen."""
    APPROVED = "Approved"
    """Approval is not needed, or a user other than the requester, allowed the approve
    verb, gave it once the plan was shown."""
    COMPLETED = "Completed"
    """The target runs on the restored data (False with the reason when it failed)."""
    DATABASE_UNAVAILABLE = "DatabaseUnavailable"
    """True while the restore waits because the database server does not answer; it starts
    by itself once the server answers (False, reason ServerAnswers)."""


_SELECT_NEEDS_ENVIRONMENT: Final = (
    "select (latest or latestVerified) goes with environmentRef, and only with it"
)


class RestoreSource(CRModel):
    """The backup to restore: named, or chosen among an environment's backups."""

    cel_rules = (
        exactly_one_rule("backupRef", "environmentRef"),
        ValidationRule(
            rule="has(self.environmentRef) == has(self.select)",
            message=_SELECT_NEEDS_ENVIRONMENT,
            field_path=".select",
        ),
    )

    backup_ref: BackupReference | None = None
    """Restore this Backup (it must be Completed)."""
    environment_ref: EnvironmentReference | None = None
    """Restore one of this Environment's Completed backups, chosen by select."""
    select: SourceSelection | None = None
    """With environmentRef: latest takes the newest completed backup; latestVerified the newest one
    a restore drill verified."""

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        check_exactly_one(self, "backup_ref", "environment_ref")
        if (self.environment_ref is None) != (self.select is None):
            raise ValueError(_SELECT_NEEDS_ENVIRONMENT)
        return self


class RestoreTarget(CRModel):
    """The environment whose database is replaced."""

    environment_ref: EnvironmentReference
    """The Environment to restore into."""


class RestoreSpec(CRModel):
    """What to restore, where, and how carefully."""

    cel_rules = (
        ValidationRule(
            rule="self.source == oldSelf.source",
            message="source is immutable: create a new Restore instead",
            field_path=".source",
        ),
        ValidationRule(
            rule=(
                "has(self.target) == has(oldSelf.target) && "
                "(!has(self.target) || self.target == oldSelf.target)"
            ),
            message="target is immutable: create a new Restore instead",
            field_path=".target",
        ),
        ValidationRule(
            rule="self.safetyBackup == oldSelf.safetyBackup",
            message="safetyBackup is immutable",
            field_path=".safetyBackup",
        ),
        # A Job's attempt followed as an inline one would drop its staging database
        # under the Job still restoring into it.
        ValidationRule(
            rule="self.runner == oldSelf.runner",
            message="runner is immutable: create a new Restore instead",
            field_path=".runner",
        ),
        ValidationRule(
            rule="oldSelf.dryRun || !self.dryRun",
            message=("dryRun can only be turned off (to carry out a reviewed plan), not turned on"),
            field_path=".dryRun",
        ),
    )

    source: RestoreSource
    """The backup to restore: backupRef, or environmentRef with select (latest or latestVerified).
    """
    target: RestoreTarget | None = None
    """The Environment to restore into. When omitted the restore is in place: into the environment
    the backup was taken from."""
    dry_run: bool = False
    """Only write the plan into status (backup, size, tables, target, estimated duration) and change
    nothing. Turn it off afterwards to carry the plan out."""
    safety_backup: bool = True
    """Back up the target's database before replacing it (status.safetyBackup names that Backup).
    The data is restored into a new database and switched over only when that succeeded, so a
    failed restore leaves the target as it was."""
    runner: BackupRunner = BackupRunner.INLINE
    """Where the artifact is restored. Inline (default): inside the operator process, sharing
    DOCKYARD_BACKUP_CONCURRENCY with backups and drills. Job: in a batch/v1 Job of the operator's
    image that connects as the target environment's own role (from its database Secret) and can
    only write the new database; the operator still creates that database, checks the row counts
    and switches over. An interrupted attempt is counted and retried either way."""


class RestorePlan(CRModel):
    """What a restore will do (or did), resolved before anything changes."""

    backup: ObjectName
    """Name of the Backup restored."""
    backup_uid: str | None = Field(default=None, max_length=64)
    """UID of the Backup restored: a Backup made under the same name after the plan is another
    backup, and fails the restore. Unset only in plans made before Dockyard recorded it."""
    source_environment: ObjectName
    """The Environment the backup was taken from."""
    backup_completed_at: datetime | None = None
    """When the backup completed (how old its data is)."""
    verified: bool = False
    """Whether a restore drill verified the backup."""
    size: int | None = Field(default=None, ge=0)
    """Size of the artifact in bytes."""
    table_count: int = Field(default=0, ge=0)
    """Number of tables in the backup."""
    tables: list[TableRows] = Field(default_factory=list, max_length=MANIFEST_MAX_TABLES)
    """The tables restored, with the row counts recorded at backup time."""
    target: ObjectName
    """The Environment restored into."""
    in_place: bool
    """Whether the target is the environment the backup was taken from."""
    target_tier: Tier | None = None
    """The target Environment's tier when the plan was made. The restore keeps to it: a production
    target needs approval even if the Environment is deleted or changed afterwards (a missing or
    deleting target fails the restore)."""
    safety_backup: bool = False
    """Whether the target is backed up first."""
    requires_approval: bool = False
    """Whether a second person must approve before the target is touched."""
    estimated_duration_seconds: int = Field(ge=0)
    """Expected restore time, from the throughput of past restores and drills of this environment,
    or a default when there are none."""
    estimate_samples: int = Field(default=0, ge=0)
    """Past restores the estimate is based on; 0 means the default throughput."""


class RestoreStep(StrEnum):
    """Which pass over the artifact a restore is in."""

    CHECKSUM = "Checksum"
    """Reading the artifact once to check its sha256 and key before the target is touched."""
    RESTORE = "Restore"
    """Streaming it, decrypted, into pg_restore (or spooling it for a parallel restore)."""


class RestoreProgress(CRModel):
    """How far an inline restore has read its artifact; a restore in a Job reports only its
    phase."""

    step: RestoreStep
    """The pass in progress: Checksum, then Restore."""
    bytes_done: int = Field(ge=0)
    """Bytes of the artifact read so far in this pass."""
    bytes_total: int | None = Field(default=None, ge=0)
    """Stored size of the artifact."""
    updated_at: datetime
    """When the operator last wrote this progress (about every two seconds while it reads)."""


class RestoreApproval(CRModel):
    """Who asked for a restore that needs approval, and who gave or refused it."""

    required_by: Tier | None = None
    """Why approval is needed: the target environment's tier (production restores need a second
    person)."""
    requested_by: str | None = Field(default=None, max_length=USER_MAX_LENGTH)
    """User who asked for the restore: the dockyard.io/requested-by annotation the REST API sets to
    the caller, or the creating field manager when created otherwise."""
    approved_by: str | None = Field(default=None, max_length=USER_MAX_LENGTH)
    """User who approved, through the REST API or the dockyard.io/approved-by annotation; never the
    requester."""
    approved_at: datetime | None = None
    """When the approval was given."""
    refused_approver: str | None = Field(default=None, max_length=USER_MAX_LENGTH)
    """An approval that does not count because it was given before the restore was AwaitingApproval
    (before its plan was shown). Remove the dockyard.io/approved-by annotation and approve again."""
    rejected_by: str | None = Field(default=None, max_length=USER_MAX_LENGTH)
    """User who rejected the restore while it awaited approval (the dockyard.io/rejected-by
    annotation); the restore then failed, with reason Rejected, and the target was not changed."""
    rejected_at: datetime | None = None
    """When the rejection was seen."""
    rejection_reason: str | None = Field(default=None, max_length=REJECTION_REASON_MAX_LENGTH)
    """Why, in the rejecter's words (the dockyard.io/rejection-reason annotation)."""


class RestoreStatus(RunStatus):
    """The observed state of a restore, written by the operator."""

    phases = RestorePhase
    outcome_condition = RestoreConditionType.COMPLETED
    field_descriptions: ClassVar[Mapping[str, str]] = {
        "observed_generation": "The .metadata.generation the operator last acted on.",
        "conditions": (
            "Current conditions: Planned, Approved, Completed and DatabaseUnavailable "
            "(True while the restore waits for an unreachable database server)."
        ),
        "message": "Human-readable detail of the phase, such as why the restore failed.",
        "attempts": (
            "Runs started for this restore. An interrupted run is resumed or counted and "
            "retried, up to a limit, never left Restoring."
        ),
        "started_at": "When the restore started.",
        "completed_at": "When the restore completed or failed.",
    }

    phase: RestorePhase | None = None
    """Pending, AwaitingApproval (production target, no approval yet), BackingUp (the safety
    backup), Restoring, Verifying (row counts against the manifest), then Completed or Failed
    (see message)."""
    plan: RestorePlan | None = None
    """What the restore does; a dry run stops once this is written."""
    approval: RestoreApproval | None = None
    """The approval record, when the target's tier requires one."""
    safety_backup: str | None = Field(default=None, max_length=253, pattern=OBJECT_NAME_PATTERN)
    """Name of the Backup of the target taken before it was replaced."""
    safety_backup_uid: str | None = Field(default=None, max_length=64)
    """UID of that Backup as the operator made it: another Backup under its name is someone
    else's, and fails the restore."""
    staging_database: str | None = Field(default=None, max_length=63)
    """The new database being restored into before the switch-over; recorded so an interrupted
    restore is resumed or cleaned up."""
    staging_database_oid: int | None = Field(default=None, ge=0)
    """The oid of that database, recorded before the switch-over, which a rename keeps: after an
    interruption, the switch-over happened exactly when the target's database has it."""
    duration_seconds: float | None = Field(default=None, ge=0)
    """How long the restore took, in seconds."""
    progress: RestoreProgress | None = None
    """Bytes read of the artifact by the attempt in progress, or by the last one."""


class Restore(CustomResource):
    """A Restore puts a Backup back into an Environment: in place or into another one,
    after a safety backup, with a dry-run plan and, for production, a second person's
    approval."""

    crd = CRDInfo(
        kind="Restore",
        plural="restores",
        short_names=("rst",),
        printer_columns=(
            PrinterColumn("Source", "string", ".status.plan.backup", "The Backup restored."),
            PrinterColumn(
                "Target", "string", ".status.plan.target", "The Environment restored into."
            ),
            PHASE_COLUMN,
            PrinterColumn(
                "Dry Run", "boolean", ".spec.dryRun", "Whether only a plan is made.", priority=1
            ),
            PrinterColumn(
                "Duration",
                "number",
                ".status.durationSeconds",
                "Seconds the restore took.",
                priority=1,
            ),
        ),
    )

    spec: RestoreSpec
    """What to restore, where, and how carefully."""
    status: RestoreStatus = status_field(
        RestoreStatus, "The observed state of the restore, written by the operator."
    )


__all__ = [
    "APPROVED_BY_ANNOTATION",
    "APPROVER_GROUPS_ANNOTATION",
    "REJECTED_BY_ANNOTATION",
    "REJECTION_REASON_ANNOTATION",
    "REJECTION_REASON_MAX_LENGTH",
    "REQUESTED_BY_ANNOTATION",
    "Restore",
    "RestoreApproval",
    "RestoreConditionType",
    "RestorePhase",
    "RestorePlan",
    "RestoreProgress",
    "RestoreSource",
    "RestoreSpec",
    "RestoreStatus",
    "RestoreStep",
    "RestoreTarget",
    "SourceSelection",
]
