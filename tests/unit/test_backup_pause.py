"""A paused Backup's status, and a full backup volume's error: computed without I/O.

The real full volume (a 1 MiB tmpfs) is in tests/integration/test_backup_restore.py."""

from __future__ import annotations

import errno

import pytest

from dockyard.core.models.backup import BackupConditionType, BackupPhase, BackupRunner, BackupStatus
from dockyard.operator.backups import status as report
from dockyard.runner import StorageError, StorageFull
from dockyard.runner.filesystem import _write_error


def _running(attempt: int) -> BackupStatus:
    return report.started(
        BackupStatus(), attempt=attempt, max_attempts=3, runner=BackupRunner.INLINE, generation=1
    )


def test_a_paused_backup_is_pending_with_the_attempts_it_had_and_says_why() -> None:
    paused = report.paused(
        _running(2),
        attempts=1,
        reason="ServerUnreachable",
        message="cannot reach 127.0.0.1:5432: Connection refused",
        generation=1,
    )
    assert paused.phase is BackupPhase.PENDING
    assert paused.attempts == 1
    condition = paused.condition(BackupConditionType.DATABASE_UNAVAILABLE)
    assert condition is not None
    assert (condition.status, condition.reason) == ("True", "ServerUnreachable")
    ready = paused.condition(BackupConditionType.READY)
    assert ready is not None
    assert (ready.status, ready.reason) == ("False", "DatabaseUnavailable")
    assert paused.message is not None
    assert "Connection refused" in paused.message
    assert "1 attempts used" in paused.message


def test_starting_after_a_pause_turns_the_condition_false_and_counts_one_attempt() -> None:
    paused = report.paused(
        BackupStatus(), attempts=0, reason="ServerUnreachable", message="down", generation=1
    )
    resumed = report.started(
        paused, attempt=1, max_attempts=3, runner=BackupRunner.INLINE, generation=1
    )
    assert resumed.phase is BackupPhase.RUNNING
    assert resumed.attempts == 1
    condition = resumed.condition(BackupConditionType.DATABASE_UNAVAILABLE)
    assert condition is not None
    assert (condition.status, condition.reason) == ("False", "ServerAnswers")


def test_a_backup_never_paused_carries_no_database_condition() -> None:
    assert _running(1).condition(BackupConditionType.DATABASE_UNAVAILABLE) is None


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_no_room_on_the_volume_is_storage_full_with_what_to_do(code: int) -> None:
    error = _write_error("write", "shop/a.dkbk", OSError(code, "No space left on device"))
    assert isinstance(error, StorageFull)
    assert error.reason == "StorageFull"
    assert "backup volume is full" in error.message
    assert "Free space" in error.message


def test_other_write_errors_stay_storage_failed() -> None:
    error = _write_error("commit", "shop/a.dkbk", OSError(errno.EIO, "Input/output error"))
    assert type(error) is StorageError
    assert error.reason == "StorageFailed"
