"""The RestoreDrill kind: prove, on a cron, that an environment's backups restore.

This module owns the RestoreDrill's spec (schedule, which backup, which checks, the RTO
and RPO objectives, how long scratch databases stay) and status (the last run with one
reason per failed check, a bounded history, the next run), the CEL rules on them and
the CRD metadata. The few rules about a run's record that every writer must apply the
same way (which objective failed, how the history is bounded) are methods here, next to
the shapes they govern.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Self

from pydantic import Field, model_validator
from pydantic.config import JsonDict

from dockyard.core.models.backup import BackupRunner
from dockyard.core.models.common import CRModel, CustomResource, status_field
from dockyard.core.models.declarations import (
    ENVIRONMENT_FIELD,
    CRDInfo,
    PrinterColumn,
    ValidationRule,
)
from dockyard.core.models.drill_runs import (
    RPO_CHECK,
    RTO_CHECK,
    DrillCurrentRun,
    DrillRun,
    DrillRunSummary,
    FailedCheck,
)
from dockyard.core.models.references import EnvironmentReference
from dockyard.core.models.rules import (
    GO_DURATION,
    positive_duration_check,
    positive_duration_rule,
)
from dockyard.core.models.scheduling import (
    RUN_NOW_ANNOTATION,
    SCHEDULE_DESCRIPTION,
    TIME_ZONE_DESCRIPTION,
    CronExpression,
    TimeZoneName,
)
from dockyard.core.models.status import ScheduledStatus

HISTORY_MAX: Final = 100
SQL_CHECKS_MAX: Final = 50
# A year: beyond it an objective says nothing.
OBJECTIVE_MAX_SECONDS: Final = 31_536_000


class BackupSelectionStrategy(StrEnum):
    """How a drill chooses the backup it restores."""

    LATEST = "Latest"
    RANDOM_WITHIN_WINDOW = "RandomWithinWindow"


class RestoreDrillConditionType(StrEnum):
    """The condition types the operator sets on a RestoreDrill."""

    PASSING = "Passing"
    """The last run restored its backup and every check passed."""
    READY = "Ready"
    """The schedule and time zone are valid and the next run is planned."""
    DATABASE_UNAVAILABLE = "DatabaseUnavailable"
    """True while a due run waits because the database server does not answer; it starts
    by itself once the server answers (False, reason ServerAnswers)."""


_WINDOW_MESSAGE: Final = "window is required with RandomWithinWindow and allowed only with it"


SelectionWindow = Annotated[
    str, GO_DURATION, positive_duration_rule("window"), positive_duration_check("window")
]
ScratchKeepFor = Annotated[
    str, GO_DURATION, positive_duration_rule("keepFor"), positive_duration_check("keepFor")
]


class DrillBackupSelection(CRModel):
    """Which completed backup of the environment a run restores."""

    cel_rules = (
        ValidationRule(
            rule=f"(self.strategy == '{BackupSelectionStrategy.RANDOM_WITHIN_WINDOW}') == "
            "has(self.window)",
            message=_WINDOW_MESSAGE,
            field_path=".window",
        ),
    )

    strategy: BackupSelectionStrategy = BackupSelectionStrategy.LATEST
    """Latest restores the newest completed backup; RandomWithinWindow a random completed backup no
    older than window, so over time older backups are proved too."""
    window: SelectionWindow | None = None
    """With RandomWithinWindow: how far back to choose from, for example 168h."""

    @model_validator(mode="after")
    def _window_with_random(self) -> Self:
        if (self.strategy == BackupSelectionStrategy.RANDOM_WITHIN_WINDOW) != (
            self.window is not None
        ):
            raise ValueError(_WINDOW_MESSAGE)
        return self


class SqlCheck(CRModel):
    """A query run against the restored database, with the result it must give."""

    list_map_keys = ("name",)

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Name of the check, unique within checks.sql; a failure is reported as sql/<name>."""
    query: str = Field(min_length=1, max_length=4096)
    """One SQL statement, run in a read-only transaction on the scratch database, logged in as the
    environment's own role, with the operator's statement timeout (30 s by default); for example
    SELECT count(*) FROM orders WHERE total < 0."""
    expect: str = Field(max_length=1024)
    """The expected value of the first column of the first row, in PostgreSQL's text form (as psql
    prints it: booleans are t and f). No row, or NULL, compares equal to the empty string."""


class DrillChecks(CRModel):
    """What a restored backup must satisfy for the drill to pass."""

    row_counts: bool = True
    """Compare every table's row count with the backup's manifest; each difference fails as
    rowCount/<schema.table>."""
    sql: list[SqlCheck] = Field(default_factory=list, max_length=SQL_CHECKS_MAX)
    """SQL assertions with their expected results."""


class DrillObjectives(CRModel):
    """The recovery time and recovery point a drill holds the environment to."""

    rto_seconds: int | None = Field(default=None, ge=1, le=OBJECTIVE_MAX_SECONDS)
    """Recovery time objective: a run fails when the restore takes longer."""
    rpo_seconds: int | None = Field(default=None, ge=1, le=OBJECTIVE_MAX_SECONDS)
    """Recovery point objective: a run fails when the backup it restores is older than this when the
    run starts (the data a disaster then would lose)."""

    def failed_checks(self, restore_seconds: float, backup_age_seconds: float) -> list[FailedCheck]:
        """The objectives a run with these measurements missed."""
        measured = (
            (RTO_CHECK, self.rto_seconds, restore_seconds, f"restore took {restore_seconds:.1f} s"),
            (
                RPO_CHECK,
                self.rpo_seconds,
                backup_age_seconds,
                f"backup was {backup_age_seconds:.0f} s old",
            ),
        )
        return [
            FailedCheck(check=check, reason=f"{observed}, objective {objective} s")
            for check, objective, value, observed in measured
            if objective is not None and value > objective
        ]


class DrillScratch(CRModel):
    """The scratch databases runs restore into."""

    keep_for: ScratchKeepFor = "1h"
    """How long a run's scratch database is kept after the run finishes, for inspection, before it
    is dropped (30m, 24h)."""


def _defaulted(value: CRModel, description: str) -> Any:
    """A field defaulting to ``value``, whose CRD default leaves unset optional fields
    out rather than null."""
    shown: JsonDict = {"default": value.model_dump(mode="json", exclude_none=True)}
    return Field(default=value, description=description, json_schema_extra=shown)


class RestoreDrillSpec(CRModel):
    """When to drill, on which backup, and what the restored data must satisfy."""

    environment_ref: EnvironmentReference
    """The Environment whose backups are drilled."""
    schedule: CronExpression = Field(description=SCHEDULE_DESCRIPTION)
    time_zone: TimeZoneName = Field(default="UTC", description=TIME_ZONE_DESCRIPTION)
    backup_selection: DrillBackupSelection = _defaulted(
        DrillBackupSelection(), "Which completed backup a run restores."
    )
    checks: DrillChecks = DrillChecks()
    """What the restored database must satisfy; by default row counts."""
    objectives: DrillObjectives = _defaulted(
        DrillObjectives(), "RTO and RPO the runs are held to; none by default (only measured)."
    )
    scratch: DrillScratch = DrillScratch()
    """How long scratch databases are kept after a run."""
    history_limit: int = Field(default=10, ge=1, le=HISTORY_MAX)
    """How many runs status.history keeps (every run is also kept in the catalog)."""
    suspend: bool = Field(
        default=False,
        description=(
            f"Stop scheduled runs (a running one finishes). The {RUN_NOW_ANNOTATION} "
            "annotation still runs one at once; the operator removes it when the run starts."
        ),
    )
    runner: BackupRunner = BackupRunner.INLINE
    """Where a run restores the backup. Inline (default): inside the operator process, sharing
    DOCKYARD_BACKUP_CONCURRENCY with backups and restores. Job: in a batch/v1 Job of the
    operator's image that connects as the environment's own role (from its database Secret) and
    can only write the scratch database; the operator runs the checks. The measured RTO then
    includes starting the Job."""


class RestoreDrillStatus(ScheduledStatus):
    """The observed state of a drill, written by the operator."""

    field_descriptions: ClassVar[Mapping[str, str]] = {
        "conditions": (
            "Current conditions: Passing (the last run passed), Ready (False with "
            "reason InvalidSchedule when the schedule or time zone is refused) and "
            "DatabaseUnavailable (True while a due run waits for an unreachable database "
            "server)."
        ),
    }

    message: str | None = Field(default=None, max_length=4096)
    """Human-readable detail of the state."""
    next_run_time: datetime | None = None
    """When the next run is due; absent while suspended or invalid."""
    next_time_field: ClassVar[str] = "next_run_time"
    current_run: DrillCurrentRun | None = None
    """The run in progress, if any."""
    last_run: DrillRun | None = None
    """The last finished run, in full."""
    history: list[DrillRunSummary] = Field(
        default_factory=list,
        max_length=HISTORY_MAX,
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    """Finished runs, newest first, at most spec.historyLimit of them."""

    def schedule_refused(
        self, error: str, *, generation: int | None, now: datetime | None = None
    ) -> Self:
        """As for every scheduled kind, and the message says it too."""
        refused = super().schedule_refused(error, generation=generation, now=now)
        return refused.model_copy(update={"message": error})

    def with_run(self, run: DrillRun, history_limit: int) -> RestoreDrillStatus:
        """This status with ``run`` as the last run, at the head of a history of at most
        ``history_limit`` runs, and no run in progress."""
        history = [run.summary(), *self.history][: max(history_limit, 1)]
        return self.model_copy(update={"last_run": run, "history": history, "current_run": None})


class RestoreDrill(CustomResource):
    """A RestoreDrill restores one of an Environment's backups into a scratch database on
    a cron, checks it (row counts, SQL, RTO and RPO) and marks the Backup verified."""

    crd = CRDInfo(
        kind="RestoreDrill",
        plural="restoredrills",
        short_names=("drill",),
        selectable_fields=(ENVIRONMENT_FIELD,),
        printer_columns=(
            PrinterColumn.environment("Environment whose backups are drilled."),
            PrinterColumn("Schedule", "string", ".spec.schedule", "Cron schedule."),
            PrinterColumn(
                "Last Result", "string", ".status.lastRun.result", "Result of the last run."
            ),
            PrinterColumn(
                "RTO",
                "number",
                ".status.lastRun.restoreSeconds",
                "Seconds the last run's restore took.",
            ),
            PrinterColumn(
                "RPO",
                "number",
                ".status.lastRun.backupAgeSeconds",
                "Age in seconds of the backup the last run restored.",
            ),
            # A string, not a date: kubectl prints future dates as <invalid>.
            PrinterColumn("Next", "string", ".status.nextRunTime", "When the next run is due."),
        ),
    )

    spec: RestoreDrillSpec
    """When to drill, on which backup, with which checks."""
    status: RestoreDrillStatus = status_field(
        RestoreDrillStatus, "The observed state of the drill, written by the operator."
    )


__all__ = [
    "BackupSelectionStrategy",
    "DrillBackupSelection",
    "DrillChecks",
    "DrillObjectives",
    "DrillScratch",
    "RestoreDrill",
    "RestoreDrillConditionType",
    "RestoreDrillSpec",
    "RestoreDrillStatus",
    "SqlCheck",
]
