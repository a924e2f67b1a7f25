"""How well an environment's data is protected: its conditions BackupsHealthy and DrillPassing.

Pure: the environment's Backups and RestoreDrills in, the two verdicts and the
``lastBackup`` / ``lastDrill`` summaries out. The reconciler lists both kinds on every
pass (so the status follows within one drift-repair interval), the API server
filtering them by ``spec.environmentRef.name`` (a selectable field of both CRDs).

- **BackupsHealthy** looks at the newest backup that finished. True when it Completed;
  False with reason ``BackupFailed`` when it failed (its message says why), and with
  ``NoBackups`` while none has completed.
- **DrillPassing** looks at the newest run of any drill of the environment. True when
  it Passed; False with reason ``Failed`` and the failed checks when it did not;
  ``NoDrill`` when no drill targets the environment; Unknown with ``NotRunYet`` while
  the drills have not run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from dockyard.core.models.backup import Backup, BackupPhase
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.drill_runs import DrillResult, DrillRun
from dockyard.core.models.environment import LastBackup, LastDrill
from dockyard.core.models.restore_drill import RestoreDrill
from dockyard.operator.environments.status import Verdict

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class ProtectionReport:
    """The verdicts and summaries of one pass."""

    backups: Verdict
    drill: Verdict
    last_backup: LastBackup | None = None
    last_drill: LastDrill | None = None


def protection_report(
    environment: str, backups: Iterable[Backup], drills: Iterable[RestoreDrill]
) -> ProtectionReport:
    """What the environment's backups and drills say about it."""
    own_backups = [
        b
        for b in backups
        if b.spec.environment_ref.name == environment and not b.metadata.deletion_timestamp
    ]
    own_drills = [d for d in drills if d.spec.environment_ref.name == environment]
    last_backup = _last_backup(own_backups)
    backups_verdict = _backups_verdict(own_backups, last_backup)
    drill_verdict, last_drill = _drill_verdict(own_drills)
    return ProtectionReport(backups_verdict, drill_verdict, last_backup, last_drill)


def _finished_at(backup: Backup) -> datetime:
    status = backup.status
    return status.completed_at or backup.metadata.creation_timestamp or _EPOCH


def _last_backup(backups: list[Backup]) -> LastBackup | None:
    completed = [b for b in backups if b.status.phase is BackupPhase.COMPLETED]
    if not completed:
        return None
    newest = max(completed, key=_finished_at)
    verified = newest.status.standing_verification()
    return LastBackup(
        name=newest.metadata.name or "",
        completed_at=newest.status.completed_at,
        size=newest.status.size,
        verified_by=verified.drill if verified is not None else None,
    )


def _backups_verdict(backups: list[Backup], last: LastBackup | None) -> Verdict:
    finished = [b for b in backups if b.status.phase in (BackupPhase.COMPLETED, BackupPhase.FAILED)]
    if finished:
        newest = max(finished, key=_finished_at)
        if newest.status.phase is BackupPhase.FAILED:
            why = newest.status.message or "no reason recorded"
            return Verdict(
                ConditionStatus.FALSE,
                "BackupFailed",
                f"The newest backup, {newest.metadata.name}, failed: {why}",
            )
    if last is None:
        return Verdict(
            ConditionStatus.FALSE, "NoBackups", "No Backup of this environment has completed."
        )
    when = f" at {last.completed_at.isoformat()}" if last.completed_at else ""
    verified = f"; drill {last.verified_by} restored it" if last.verified_by else ""
    return Verdict(
        ConditionStatus.TRUE, "Completed", f"Backup {last.name} completed{when}{verified}."
    )


def _drill_verdict(drills: list[RestoreDrill]) -> tuple[Verdict, LastDrill | None]:
    if not drills:
        return (
            Verdict(
                ConditionStatus.FALSE,
                "NoDrill",
                "No RestoreDrill targets this environment, so no backup of it is proven "
                "restorable.",
            ),
            None,
        )
    runs = [(d, d.status.last_run) for d in drills if d.status.last_run is not None]
    if not runs:
        names = ", ".join(sorted(d.metadata.name or "" for d in drills))
        return (
            Verdict(ConditionStatus.UNKNOWN, "NotRunYet", f"Drill {names} has not run yet."),
            None,
        )
    drill, run = max(runs, key=lambda pair: _run_time(pair[1]))
    name = drill.metadata.name or ""
    last = LastDrill(
        drill=name,
        backup=run.backup,
        result=run.result,
        finished_at=run.finished_at,
        restore_seconds=run.restore_seconds,
    )
    if run.result is DrillResult.PASSED:
        took = f" in {run.restore_seconds:.1f} s" if run.restore_seconds is not None else ""
        message = f"Drill {name} restored backup {run.backup}{took} and every check passed."
        return Verdict(ConditionStatus.TRUE, "Passed", message), last
    reasons = "; ".join(f"{c.check}: {c.reason}" for c in run.failed_checks) or "no reason"
    message = f"Drill {name} failed on backup {run.backup}: {reasons}"
    return Verdict(ConditionStatus.FALSE, "Failed", message), last


def _run_time(run: DrillRun) -> datetime:
    return run.finished_at or run.started_at


__all__ = ["ProtectionReport", "protection_report"]
