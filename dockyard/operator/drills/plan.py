"""What one pass over a RestoreDrill decides, and how a finished run is judged: all pure.

``plan_tick`` is the scheduling decision: given the drill and the time, is a run due
(its cron time passed, or the ``dockyard.io/run-now`` annotation asks for one), what is
the next run time, and what do the Ready condition and message say. ``choose_backup``
picks the Backup a run restores; ``judge_run`` turns the measurements and failed checks
into the run's record. ``dockyard.operator.drills.lifecycle`` does the I/O around them.

Decisions worth knowing:

- The next run is kept in ``status.nextRunTime``; a run is due once that time has
  passed, so after an outage there is one catch-up run, not one per missed time. A new
  drill, or one whose spec changed (``observedGeneration`` behind), is planned from now
  and does not backfill.
- One run at a time per drill. A cron time that passes while a run is in progress is
  skipped (an Event says so); a run-now request waits for the run in progress, and its
  annotation stays until its own run starts.
- Scratch databases are named ``dkd_<uid>_<n>`` (``staging_database_name``), with the
  smallest ``n`` no kept database of the drill uses, so runs kept for inspection never
  collide and an interrupted run finds its own again.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from dockyard.core.conditions import find, set_condition
from dockyard.core.cron import CronError, validate_schedule
from dockyard.core.durations import parse_duration
from dockyard.core.models.backup import Backup, BackupPhase
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.restore_drill import (
    FAILED_CHECKS_MAX,
    BackupSelectionStrategy,
    DrillBackupSelection,
    DrillObjectives,
    DrillResult,
    DrillRun,
    FailedCheck,
    RestoreDrill,
    RestoreDrillConditionType,
    RestoreDrillStatus,
    SqlCheck,
)
from dockyard.core.models.scheduling import RUN_NOW_ANNOTATION
from dockyard.operator.database import staging_database_name
from dockyard.operator.runs.restoring import RowCountCheck

RESTORE_CHECK: Final = "restore"
ROW_COUNT_CHECK: Final = "rowCount"
SQL_CHECK: Final = "sql"
_CHECK_MAX: Final = 256
_REASON_MAX: Final = 1024
_SHOWN_VALUE_MAX: Final = 200
# staging_database_name allows up to six digits of run number.
_SCRATCH_NUMBER_MAX: Final = 999_999

Chooser = Callable[[Sequence[Backup]], Backup]


@dataclass(frozen=True, slots=True)
class DrillTick:
    """What one pass over a drill does."""

    status: RestoreDrillStatus
    """The status with Ready, nextRunTime, observedGeneration and message brought up to date."""
    start: bool = False
    """Start a run now."""
    run_now: bool = False
    """The run-now annotation asked for it: remove the annotation once the run started."""
    skipped: str | None = None
    """A cron time passed while a run was in progress: why it was skipped."""
    invalid: str | None = None
    """The schedule or time zone the strict parser refused, and why."""


def plan_tick(drill: RestoreDrill, now: datetime) -> DrillTick:
    """Decide one pass over ``drill`` at ``now`` (its run in progress, if any, is alive)."""
    spec, previous = drill.spec, drill.status
    generation = drill.metadata.generation
    try:
        cron, tz = validate_schedule(spec.schedule, spec.time_zone)
    except CronError as exc:
        status = previous.model_copy(
            update={
                "observed_generation": generation,
                "next_run_time": None,
                "message": str(exc),
                "conditions": set_condition(
                    previous.conditions,
                    type=RestoreDrillConditionType.READY,
                    status=ConditionStatus.FALSE,
                    reason="InvalidSchedule",
                    message=str(exc),
                    generation=generation,
                    now=now,
                ),
            }
        )
        return DrillTick(status=status, invalid=str(exc))

    # A plan made for an older spec is void: the new one is planned from now.
    planned = previous.next_run_time if previous.observed_generation == generation else None
    cron_due = not spec.suspend and planned is not None and planned <= now
    run_now = RUN_NOW_ANNOTATION in drill.metadata.annotations
    busy = previous.current_run is not None
    if spec.suspend:
        next_time = None
    elif planned is None or planned <= now:
        next_time = cron.next_after(now, tz).astimezone(UTC)
    else:
        next_time = planned
    skipped = None
    if busy and cron_due and planned is not None:
        skipped = (
            f"Skipped the run due at {planned.isoformat()}: the previous run is still in progress"
        )
    start = not busy and (cron_due or run_now)
    ready_message = (
        "Suspended: no runs on the schedule (run-now still works)."
        if spec.suspend
        else f"Next run at {next_time.isoformat() if next_time else 'never'}."
    )
    status = previous.model_copy(
        update={
            "observed_generation": generation,
            "next_run_time": next_time,
            "conditions": set_condition(
                previous.conditions,
                type=RestoreDrillConditionType.READY,
                status=ConditionStatus.TRUE,
                reason="Suspended" if spec.suspend else "Scheduled",
                message=ready_message,
                generation=generation,
                now=now,
            ),
        }
    )
    return DrillTick(
        status=described(status), start=start, run_now=run_now and start, skipped=skipped
    )


def described(status: RestoreDrillStatus) -> RestoreDrillStatus:
    """``status`` with its message saying what it holds (see ``describe``)."""
    return status.model_copy(update={"message": describe(status)})


def describe(status: RestoreDrillStatus) -> str:
    """The run in progress, else the last result; then the plan (the Ready message)."""
    ready = find(status.conditions, RestoreDrillConditionType.READY)
    if ready is not None and ready.status is not ConditionStatus.TRUE:
        return ready.message
    ready_message = ready.message if ready is not None else ""
    current = status.current_run
    if current is not None:
        return (
            f"Run in progress: restoring Backup {current.backup} into "
            f"{current.scratch_database or 'a scratch database'} (attempt {current.attempts})."
        )
    last = status.last_run
    if last is None:
        return f"No run yet. {ready_message}".strip()
    failed = len(last.failed_checks)
    outcome = "Passed" if last.result is DrillResult.PASSED else f"Failed ({failed} checks)"
    return f"Last run on Backup {last.backup}: {outcome}. {ready_message}".strip()


# -- which backup ---------------------------------------------------------------------------


def drillable(backup: Backup, environment: str) -> bool:
    """A completed backup of ``environment`` with an artifact, not being deleted."""
    status = backup.status
    return (
        backup.spec.environment_ref.name == environment
        and status.phase is BackupPhase.COMPLETED
        and status.completed_at is not None
        and bool(status.sha256)
        and backup.metadata.deletion_timestamp is None
    )


def choose_backup(
    backups: Iterable[Backup],
    environment: str,
    selection: DrillBackupSelection,
    now: datetime,
    choose: Chooser = secrets.choice,
) -> Backup | None:
    """The backup a run restores, or None when no completed backup qualifies.

    Latest: the newest completed one. RandomWithinWindow: any completed one that finished
    no longer than ``window`` before ``now``, chosen by ``choose``.
    """
    candidates = sorted(
        (b for b in backups if drillable(b, environment)),
        key=lambda b: (b.status.completed_at or now, b.metadata.name or ""),
    )
    if selection.strategy is BackupSelectionStrategy.LATEST or selection.window is None:
        return candidates[-1] if candidates else None
    since = now - parse_duration(selection.window)
    recent = [b for b in candidates if (b.status.completed_at or now) >= since]
    return choose(recent) if recent else None


def no_backup_message(environment: str, selection: DrillBackupSelection) -> str:
    """Why a due run did not start."""
    within = (
        f" completed within the last {selection.window}"
        if selection.strategy is BackupSelectionStrategy.RANDOM_WITHIN_WINDOW
        else ""
    )
    return f"No completed backup of Environment {environment}{within} to drill."


def backup_age_seconds(backup: Backup, at: datetime) -> float:
    """How old ``backup`` is at ``at``: the recovery point a disaster then would have."""
    completed = backup.status.completed_at or at
    return max((at - completed).total_seconds(), 0.0)


# -- scratch databases ----------------------------------------------------------------------


def recorded_scratch(status: RestoreDrillStatus) -> set[str]:
    """Every scratch database the status says is kept or being restored into."""
    names = {run.scratch_database for run in status.history}
    if status.last_run is not None:
        names.add(status.last_run.scratch_database)
    if status.current_run is not None:
        names.add(status.current_run.scratch_database)
    return {name for name in names if name}


def scratch_database(uid: str, taken: Collection[str]) -> str:
    """The scratch database of a new run of the drill ``uid``: the first name not taken."""
    for number in range(1, _SCRATCH_NUMBER_MAX + 1):
        name = staging_database_name("d", uid, number)
        if name not in taken:
            return name
    raise ValueError("every scratch database name of the drill is taken")


def kept_scratch(status: RestoreDrillStatus) -> set[str]:
    """Scratch databases of finished runs, kept for inspection (not the run in progress's)."""
    current = status.current_run.scratch_database if status.current_run else None
    return recorded_scratch(status) - {current} if current else recorded_scratch(status)


def expired_scratch(status: RestoreDrillStatus, keep_for: str, now: datetime) -> set[str]:
    """Scratch databases of runs that finished at least ``keep_for`` before ``now``."""
    keep = parse_duration(keep_for)
    runs: list[tuple[str | None, datetime | None]] = [
        (run.scratch_database, run.finished_at) for run in status.history
    ]
    if status.last_run is not None:
        runs.append((status.last_run.scratch_database, status.last_run.finished_at))
    current = status.current_run.scratch_database if status.current_run else None
    return {
        name
        for name, finished in runs
        if name and name != current and _expired(finished, keep, now)
    }


def _expired(finished: datetime | None, keep: timedelta, now: datetime) -> bool:
    return finished is not None and finished + keep <= now


def without_scratch(status: RestoreDrillStatus, dropped: Collection[str]) -> RestoreDrillStatus:
    """``status`` with the databases ``dropped`` no longer recorded as kept."""
    if not dropped:
        return status
    history = [
        run.model_copy(update={"scratch_database": None})
        if run.scratch_database in dropped
        else run
        for run in status.history
    ]
    last = status.last_run
    if last is not None and last.scratch_database in dropped:
        last = last.model_copy(update={"scratch_database": None})
    return status.model_copy(update={"history": history, "last_run": last})


# -- judging a run --------------------------------------------------------------------------


def failed(check: str, reason: str) -> FailedCheck:
    """A failed check, its name and reason cut to what the status holds."""
    if len(reason) > _REASON_MAX:
        reason = reason[: _REASON_MAX - 3] + "..."
    return FailedCheck(check=check[:_CHECK_MAX], reason=reason)


def row_count_failures(counts: RowCountCheck) -> list[FailedCheck]:
    """One ``rowCount/<schema.table>`` failure per table that differs from the manifest."""
    failures = []
    for table in sorted(set(counts.expected) | set(counts.found)):
        want, got = counts.expected.get(table), counts.found.get(table)
        if want == got:
            continue
        if want is None:
            reason = f"not in the backup's manifest, but {got} rows were restored"
        elif got is None:
            reason = f"{want} rows in the manifest, but the table was not restored"
        else:
            reason = f"expected {want} rows (the manifest), restored {got}"
        failures.append(failed(f"{ROW_COUNT_CHECK}/{table}", reason))
    return failures


def _shown(value: str | None) -> str:
    if not value:
        return "nothing (no row, or NULL)"
    return value if len(value) <= _SHOWN_VALUE_MAX else value[:_SHOWN_VALUE_MAX] + "..."


def judge_sql(check: SqlCheck, value: str | None) -> FailedCheck | None:
    """The failure of ``check`` whose query gave ``value`` (first column of the first row,
    as text; None for no row or NULL), or None when it gave what was expected."""
    got = value or ""
    if got == check.expect:
        return None
    return failed(
        f"{SQL_CHECK}/{check.name}", f"expected {_shown(check.expect)}, got {_shown(got)}"
    )


def sql_error(check: SqlCheck, message: str) -> FailedCheck:
    """The failure of ``check`` whose query could not run."""
    return failed(f"{SQL_CHECK}/{check.name}", f"the query failed: {message}")


def judge_run(
    *,
    backup: str,
    backup_size: int | None,
    started_at: datetime,
    finished_at: datetime,
    restore_seconds: float | None,
    backup_age_seconds: float | None,
    objectives: DrillObjectives,
    failures: Sequence[FailedCheck],
    scratch_database: str | None,
) -> DrillRun:
    """The run's record: Passed only when no check failed, the objectives included.

    ``restore_seconds`` is None when the restore did not complete; the RTO objective is
    then not judged (the restore check failed already).
    """
    checks = list(failures)
    # Each objective is judged on its own measurement; 0 stands for "not measured".
    checks += objectives.failed_checks(restore_seconds or 0.0, backup_age_seconds or 0.0)
    return DrillRun(
        backup=backup,
        backup_size=backup_size,
        started_at=started_at,
        finished_at=finished_at,
        restore_seconds=restore_seconds,
        backup_age_seconds=backup_age_seconds,
        result=DrillResult.FAILED if checks else DrillResult.PASSED,
        failed_checks=checks[:FAILED_CHECKS_MAX],
        scratch_database=scratch_database,
    )


def passing_condition(
    status: RestoreDrillStatus,
    run: DrillRun,
    generation: int | None,
    now: datetime,
) -> RestoreDrillStatus:
    """``status`` with the Passing condition saying how ``run`` went."""
    if run.result is DrillResult.PASSED:
        reason, message, value = (
            "Passed",
            f"Backup {run.backup} restored and every check passed.",
            ConditionStatus.TRUE,
        )
    else:
        first = "; ".join(f"{c.check}: {c.reason}" for c in run.failed_checks[:3])
        more = len(run.failed_checks) - 3
        reason, value = "Failed", ConditionStatus.FALSE
        message = f"Backup {run.backup}: {first}" + (f" (and {more} more)" if more > 0 else "")
    return status.model_copy(
        update={
            "conditions": set_condition(
                status.conditions,
                type=RestoreDrillConditionType.PASSING,
                status=value,
                reason=reason,
                message=message[:_REASON_MAX],
                generation=generation,
                now=now,
            )
        }
    )


__all__ = [
    "RESTORE_CHECK",
    "ROW_COUNT_CHECK",
    "SQL_CHECK",
    "DrillTick",
    "backup_age_seconds",
    "choose_backup",
    "describe",
    "described",
    "drillable",
    "expired_scratch",
    "failed",
    "judge_run",
    "judge_sql",
    "kept_scratch",
    "no_backup_message",
    "passing_condition",
    "plan_tick",
    "recorded_scratch",
    "row_count_failures",
    "scratch_database",
    "sql_error",
    "without_scratch",
]
