"""What one pass over a RestoreDrill decides: all pure.

``plan_tick`` is the scheduling decision: given the drill and the time, is a run due
(its cron time passed, or the ``dockyard.io/run-now`` annotation asks for one), what is
the next run time, and what do the Ready condition and message say. ``choose_backup``
picks the Backup a run restores. ``judging`` turns a finished run into its record;
``dockyard.operator.drills.lifecycle`` does the I/O around them.

Decisions worth knowing:

- The next run is kept in ``status.nextRunTime``; a run is due once that time has
  passed, so after an outage there is one catch-up run, not one per missed time. A new
  drill, or one whose spec changed (``observedGeneration`` behind), is planned from now
  and does not backfill.
- A schedule the parser accepts but with no run within 9 years (``0 0 */30 4 3``) is
  reported as one it refuses: Ready False with reason InvalidSchedule, and nothing runs.
- One run at a time per drill. A cron time that passes while a run is in progress is
  skipped (an Event says so); a run-now request waits for the run in progress, and its
  annotation stays until its own run starts.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from dockyard.core.conditions import find
from dockyard.core.cron import CronError, validate_schedule
from dockyard.core.durations import parse_duration
from dockyard.core.models.backup import Backup, BackupPhase
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.drill_runs import DrillResult
from dockyard.core.models.restore_drill import (
    BackupSelectionStrategy,
    DrillBackupSelection,
    RestoreDrill,
    RestoreDrillConditionType,
    RestoreDrillStatus,
)
from dockyard.core.models.scheduling import RUN_NOW_ANNOTATION

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
        status = previous.schedule_refused(str(exc), generation=generation, now=now)
        return DrillTick(status=status, invalid=str(exc))

    # A plan made for an older spec is void: the new one is planned from now.
    planned = previous.next_run_time if previous.observed_generation == generation else None
    cron_due = not spec.suspend and planned is not None and planned <= now
    run_now = RUN_NOW_ANNOTATION in drill.metadata.annotations
    busy = previous.current_run is not None
    if spec.suspend:
        next_time = None
    elif planned is None or planned <= now:
        try:
            next_time = cron.next_after(now, tz).astimezone(UTC)
        except CronError as exc:  # parsed, but no run within 9 years (0 0 */30 4 3)
            status = previous.schedule_refused(str(exc), generation=generation, now=now)
            return DrillTick(status=status, invalid=str(exc))
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
    status = previous.model_copy(update={"next_run_time": next_time})
    status = status.observed(generation).scheduled(
        ready_message, suspended=spec.suspend, generation=generation, now=now
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


__all__ = [
    "DrillTick",
    "backup_age_seconds",
    "choose_backup",
    "describe",
    "described",
    "drillable",
    "no_backup_message",
    "plan_tick",
]
