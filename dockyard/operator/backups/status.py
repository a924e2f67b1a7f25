"""What a Backup reports at each step of its life cycle, computed without I/O.

``lifecycle`` decides the step and writes what this module computes: Running when an
attempt starts, Completed once the artifact is stored and catalogued (by an inline run,
or by a Job that reported its artifact), Pending for a retry or Failed after a failed
or interrupted attempt. The Ready condition follows each of them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from dockyard.core.attempts import Recovery, RecoveryAction
from dockyard.core.models.backup import (
    BackupConditionType,
    BackupManifest,
    BackupRunner,
    BackupStatus,
    TableRows,
)
from dockyard.runner import BackupResult

# Status fields written elsewhere, never overwritten here: a drill verifies a backup, and
# the fill from a BackupStore marks it (``stores.fill_from_store``).
_NOT_OURS: Final = frozenset({"verified", "filled_from"})
STORED: Final = "The artifact is stored, checksummed and catalogued."


def status_body(status: BackupStatus) -> dict[str, Any]:
    """The status as a merge patch's ``status``: every field of ours (None clears one)."""
    return status.body(exclude=_NOT_OURS)


def manifest_of(result: BackupResult) -> BackupManifest:
    return BackupManifest(
        tables=[TableRows(name=table, rows=rows) for table, rows in sorted(result.manifest.items())]
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
    message = f"Attempt {attempt} of {max_attempts} running ({runner})"
    return (
        status.running(message, attempt=attempt)
        .observed(generation)
        .with_condition(
            BackupConditionType.READY,
            False,
            "Running",
            f"Attempt {attempt} is running.",
            generation=generation,
        )
        .database_back(generation=generation)
    )


def paused(
    status: BackupStatus,
    *,
    attempts: int,
    reason: str,
    message: str,
    generation: int | None,
) -> BackupStatus:
    """``status`` while the database server does not answer: Pending, with ``attempts``
    (the attempts used before the outage: a paused or cut-off run does not count)."""
    waiting = (
        f"Paused: {message}. The backup starts once the server answers ({attempts} attempts used)."
    )
    return (
        status.retrying(waiting, reason="DatabaseUnavailable", generation=generation)
        .model_copy(update={"attempts": attempts})
        .database_out(reason, message, generation=generation)
        .observed(generation)
    )


def completed(status: BackupStatus, result: BackupResult, generation: int | None) -> BackupStatus:
    """``status`` once the inline run that produced ``result`` is catalogued."""
    stored = status.model_copy(
        update={
            "size": result.size,
            "sha256": result.sha256,
            "location": result.location,
            "key_id": result.key_id,
            "manifest": manifest_of(result),
        }
    )
    message = (
        f"Stored {result.size} bytes ({len(result.manifest)} tables) in "
        f"{result.duration_seconds:.1f}s"
    )
    done = stored.completed(message, generation=generation, detail=STORED, at=result.finished_at)
    return done.observed(generation)


def completed_by_job(
    status: BackupStatus, job: str, generation: int | None, *, at: datetime | None
) -> BackupStatus:
    """``status`` once the Job ``job``, which reported its artifact into it, succeeded
    ``at`` (the Job's completion time: the runner reports the artifact, not when the
    backup was made, which retention and ``latestVerified`` order by)."""
    message = f"Stored {status.size} bytes by Job {job}"
    return status.completed(message, generation=generation, detail=STORED, at=at)


def untrusted_report(status: BackupStatus, job: str, *, location: str, key_id: str) -> str | None:
    """Why the artifact the Job ``job`` reported into ``status`` is not trusted, if it
    is not: it must be where the Job was told to write (``location``), with the key it
    was given (``key_id``). The report is the runner's word; a pod posing as the runner,
    or a runner made to lie, must not have another artifact recorded as this backup's."""
    if status.location != location:
        return (
            f"runner Job {job} reported the artifact {status.location}, not {location} "
            "that it was told to write: its artifact is not trusted"
        )
    if status.key_id != key_id:
        return (
            f"runner Job {job} reported key {status.key_id}, not the key {key_id} it was "
            "given: its artifact is not trusted"
        )
    return None


def after_recovery(
    status: BackupStatus, recovery: Recovery, reason: str, generation: int | None
) -> BackupStatus:
    """``status`` after a failed or interrupted attempt: Pending for a retry, else Failed."""
    if recovery.action is RecoveryAction.GIVE_UP:
        after = status.failed(reason, recovery.message, generation=generation)
    else:
        after = status.retrying(recovery.message, reason=reason, generation=generation)
    return after.observed(generation)
