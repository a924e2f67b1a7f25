"""What a Backup reports at each step of its life cycle, computed without I/O.

``lifecycle`` decides the step and writes what this module computes: Running when an
attempt starts, Completed once the artifact is stored and catalogued (by an inline run,
or by a Job that reported its artifact), Pending for a retry or Failed after a failed
or interrupted attempt. The Ready condition follows each of them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from dockyard.core.attempts import Recovery, RecoveryAction
from dockyard.core.conditions import set_condition
from dockyard.core.models.backup import (
    BackupConditionType,
    BackupManifest,
    BackupPhase,
    BackupRunner,
    BackupStatus,
    TableRows,
)
from dockyard.core.models.common import Condition, ConditionStatus
from dockyard.runner import BackupResult

# Status fields someone else writes (a drill verifies a backup): never overwritten here.
_NOT_OURS: Final = frozenset({"verified"})
STORED: Final = "The artifact is stored, checksummed and catalogued."


def status_body(status: BackupStatus) -> dict[str, Any]:
    """The status as a merge patch's ``status``: every field of ours (None clears one)."""
    return status.model_dump(mode="json", by_alias=True, exclude=set(_NOT_OURS))


def manifest_of(result: BackupResult) -> BackupManifest:
    return BackupManifest(
        tables=[TableRows(name=table, rows=rows) for table, rows in sorted(result.manifest.items())]
    )


def _ready(
    status: BackupStatus, ok: bool, reason: str, message: str, generation: int | None
) -> list[Condition]:
    return set_condition(
        status.conditions,
        type=BackupConditionType.READY,
        status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
        reason=reason,
        message=message,
        generation=generation,
    )


def started(
    status: BackupStatus,
    *,
    attempt: int,
    max_attempts: int,
    runner: BackupRunner,
    generation: int | None,
) -> BackupStatus:
    """``status`` once attempt number ``attempt`` starts."""
    return status.model_copy(
        update={
            "phase": BackupPhase.RUNNING,
            "attempts": attempt,
            "started_at": datetime.now(UTC),
            "completed_at": None,
            "message": f"Attempt {attempt} of {max_attempts} running ({runner})",
            "observed_generation": generation,
            "conditions": _ready(
                status, False, "Running", f"Attempt {attempt} is running.", generation
            ),
        }
    )


def completed(status: BackupStatus, result: BackupResult, generation: int | None) -> BackupStatus:
    """``status`` once the inline run that produced ``result`` is catalogued."""
    return status.model_copy(
        update={
            "phase": BackupPhase.COMPLETED,
            "message": (
                f"Stored {result.size} bytes ({len(result.manifest)} tables) in "
                f"{result.duration_seconds:.1f}s"
            ),
            "completed_at": result.finished_at,
            "size": result.size,
            "sha256": result.sha256,
            "location": result.location,
            "key_id": result.key_id,
            "manifest": manifest_of(result),
            "observed_generation": generation,
            "conditions": _ready(status, True, "Completed", STORED, generation),
        }
    )


def completed_by_job(status: BackupStatus, job: str, generation: int | None) -> BackupStatus:
    """``status`` once the Job ``job``, which reported its artifact into it, succeeded."""
    return status.model_copy(
        update={
            "phase": BackupPhase.COMPLETED,
            "completed_at": status.completed_at or datetime.now(UTC),
            "message": f"Stored {status.size} bytes by Job {job}",
            "conditions": _ready(status, True, "Completed", STORED, generation),
        }
    )


def after_recovery(
    status: BackupStatus, recovery: Recovery, reason: str, generation: int | None
) -> BackupStatus:
    """``status`` after a failed or interrupted attempt: Pending for a retry, else Failed."""
    giving_up = recovery.action is RecoveryAction.GIVE_UP
    return status.model_copy(
        update={
            "phase": BackupPhase.FAILED if giving_up else BackupPhase.PENDING,
            "message": recovery.message,
            "completed_at": datetime.now(UTC) if giving_up else None,
            "observed_generation": generation,
            "conditions": _ready(status, False, reason, recovery.message, generation),
        }
    )
