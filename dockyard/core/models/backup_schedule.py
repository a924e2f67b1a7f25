"""The BackupSchedule kind: Backups of an environment on a cron, with GFS retention.

This module owns the BackupSchedule's spec and status, its retention policy (what
``dockyard.core.retention`` applies) and the CRD metadata. The cron itself is checked by
the shapes in ``scheduling`` (CEL) and by ``dockyard.core.cron`` (the operator, which
reports a refused expression in the Ready condition).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Final, Self

from pydantic import Field, model_validator

from dockyard.core.models.backup import RUNNER_DESCRIPTION, BackupMethod, BackupRunner
from dockyard.core.models.common import CRModel, CustomResource, status_field
from dockyard.core.models.declarations import CRDInfo, PrinterColumn, ValidationRule
from dockyard.core.models.references import (
    OBJECT_NAME_PATTERN,
    EnvironmentReference,
    StoreReference,
)
from dockyard.core.models.scheduling import (
    RUN_NOW_ANNOTATION,
    SCHEDULE_DESCRIPTION,
    TIME_ZONE_DESCRIPTION,
    CronExpression,
    TimeZoneName,
)
from dockyard.core.models.status import ScheduledStatus
from dockyard.core.models.storage import BackupEncryption, BackupStorage

# Beyond this many of one kind nobody is doing grandfather-father-son any more.
KEEP_MAX: Final = 1000
# Backups of one schedule running at once, which Allow can produce.
ACTIVE_MAX: Final = 100


class ConcurrencyPolicy(StrEnum):
    """What happens when a backup is due while the previous one still runs."""

    FORBID = "Forbid"
    ALLOW = "Allow"
    REPLACE = "Replace"


class BackupScheduleConditionType(StrEnum):
    """The condition types the operator sets on a BackupSchedule."""

    READY = "Ready"
    """The schedule and time zone are valid and the next run is planned."""


_AT_LEAST_ONE_MESSAGE: Final = (
    "retention must keep at least one backup: set keepLast, keepDaily, keepWeekly or "
    "keepMonthly above 0"
)


class BackupRetention(CRModel):
    """How many of a schedule's completed backups to keep, grandfather-father-son style.

    Each rule keeps backups on its own; a backup kept by any rule stays. Days, weeks
    (ISO, from Monday) and months are calendar periods in the schedule's time zone.
    Whatever the rules say, the newest backup a drill verified, backups still running
    and failures newer than the last success are kept.
    """

    cel_rules = (
        ValidationRule(
            rule="self.keepLast + self.keepDaily + self.keepWeekly + self.keepMonthly > 0",
            message=_AT_LEAST_ONE_MESSAGE,
        ),
    )

    keep_last: int = Field(default=0, ge=0, le=KEEP_MAX)
    """Keep the newest N completed backups."""
    keep_daily: int = Field(default=0, ge=0, le=KEEP_MAX)
    """Keep the newest backup of each of the last N days that have one."""
    keep_weekly: int = Field(default=0, ge=0, le=KEEP_MAX)
    """Keep the newest backup of each of the last N weeks that have one."""
    keep_monthly: int = Field(default=0, ge=0, le=KEEP_MAX)
    """Keep the newest backup of each of the last N months that have one."""

    @model_validator(mode="after")
    def _keeps_something(self) -> Self:
        if self.keep_last + self.keep_daily + self.keep_weekly + self.keep_monthly == 0:
            raise ValueError(_AT_LEAST_ONE_MESSAGE)
        return self


DEFAULT_RETENTION: Final = BackupRetention(keep_last=7, keep_daily=7, keep_weekly=4, keep_monthly=6)


class BackupTemplate(CRModel):
    """What every Backup the schedule creates is made of."""

    method: BackupMethod = BackupMethod.LOGICAL
    """How the backups are taken; see Backup.spec.method."""
    store_ref: StoreReference | None = None
    """The BackupStore the backups take storage and encryption from when they are not given;
    without it, the store marked default."""
    storage: BackupStorage | None = None
    """Where the artifacts are stored: exactly one of filesystem and s3; without it, the store's."""
    encryption: BackupEncryption | None = None
    """The key the artifacts are encrypted with; without it, the store's current key."""
    runner: BackupRunner = Field(default=BackupRunner.INLINE, description=RUNNER_DESCRIPTION)


class BackupScheduleSpec(CRModel):
    """When to back up an environment, how, and how many backups to keep."""

    environment_ref: EnvironmentReference
    """The Environment whose database is backed up."""
    schedule: CronExpression = Field(description=SCHEDULE_DESCRIPTION)
    time_zone: TimeZoneName = Field(default="UTC", description=TIME_ZONE_DESCRIPTION)
    suspend: bool = Field(
        default=False,
        description=(
            "Stop creating backups (a running one finishes). Existing backups and "
            f"retention stay. The {RUN_NOW_ANNOTATION} annotation still runs one at once."
        ),
    )
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.FORBID
    """What happens when a backup is due while the previous one still runs: Forbid skips the new
    one, Allow runs both, Replace cancels the running one (it is marked Failed) and starts the
    new one."""
    retention: BackupRetention = DEFAULT_RETENTION
    """How many completed backups to keep; older ones are deleted with their artifacts. Default: the
    last 7, plus one a day for 7 days, one a week for 4 weeks and one a month for 6 months."""
    template: BackupTemplate = Field(default_factory=BackupTemplate)
    """Method, storage and encryption of the Backups the schedule creates; without storage and
    encryption, a BackupStore's."""


class BackupScheduleStatus(ScheduledStatus):
    """The observed state of a schedule, written by the operator."""

    field_descriptions: ClassVar[Mapping[str, str]] = {
        "conditions": (
            "Current conditions: Ready, False with reason InvalidSchedule and the parser's "
            "message when the schedule or time zone is refused, or InvalidTemplate when the "
            "template's claim path would cover the runner's own files (stored before the "
            "API server refused such a path)."
        ),
    }

    last_schedule_time: datetime | None = None
    """When the last backup was created by this schedule."""
    next_schedule_time: datetime | None = None
    """When the next backup is due; absent while suspended or invalid."""
    next_time_field: ClassVar[str] = "next_schedule_time"
    last_successful_backup: str | None = Field(
        default=None, max_length=253, pattern=OBJECT_NAME_PATTERN
    )
    """Name of the newest Backup of this schedule that completed."""
    last_successful_time: datetime | None = None
    """When that backup completed."""
    active: list[str] = Field(
        default_factory=list,
        max_length=ACTIVE_MAX,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Names of this schedule's Backups that are Pending or Running."""


class BackupSchedule(CustomResource):
    """A BackupSchedule creates Backups of an Environment on a cron schedule in a time
    zone and keeps the last, daily, weekly and monthly ones."""

    crd = CRDInfo(
        kind="BackupSchedule",
        plural="backupschedules",
        short_names=("bks",),
        printer_columns=(
            PrinterColumn.environment("Environment whose database is backed up."),
            PrinterColumn("Schedule", "string", ".spec.schedule", "Cron schedule."),
            PrinterColumn(
                "Time Zone", "string", ".spec.timeZone", "Time zone of the schedule.", priority=1
            ),
            # A string, not a date: kubectl prints future dates as <invalid>.
            PrinterColumn(
                "Next", "string", ".status.nextScheduleTime", "When the next backup is due."
            ),
            PrinterColumn("Suspended", "boolean", ".spec.suspend", "Whether backups are paused."),
            PrinterColumn(
                "Last Success",
                "date",
                ".status.lastSuccessfulTime",
                "When the last backup of this schedule completed.",
            ),
        ),
    )

    spec: BackupScheduleSpec
    """When and how to back up, and what to keep."""
    status: BackupScheduleStatus = status_field(
        BackupScheduleStatus, "The observed state of the schedule, written by the operator."
    )


__all__ = [
    "DEFAULT_RETENTION",
    "BackupRetention",
    "BackupSchedule",
    "BackupScheduleConditionType",
    "BackupScheduleSpec",
    "BackupScheduleStatus",
    "BackupTemplate",
    "ConcurrencyPolicy",
]
