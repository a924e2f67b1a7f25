"""How a finished drill run is judged: its failed checks, its record, and the Passing
condition. All pure; ``running`` measures and checks, ``records`` writes the result.

A check's failure names the check (``restore``, ``rowCount/<schema.table>``,
``sql/<name>``, and the objectives ``rto`` and ``rpo``) with one reason, cut to what
a status holds. A run passes only when nothing failed, the objectives included.

A restore that failed is ``restore`` when the failure is the backup's (its artifact bad
or missing, pg_restore refusing the dump, rows missing), and ``run`` when the drill could
not be carried out (the scratch server or the storage unavailable, a full spool, the
deadline, a runner lost): that run fails, but says nothing about the backup.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from dockyard.core.models.drill_runs import FAILED_CHECKS_MAX, DrillResult, DrillRun, FailedCheck
from dockyard.core.models.restore_drill import (
    DrillObjectives,
    RestoreDrillConditionType,
    RestoreDrillStatus,
    SqlCheck,
)
from dockyard.operator.runs.restoring import KeysGone, ManifestMismatch, RowCountCheck
from dockyard.runner import ArtifactError, BackupError, RestoreFailed

RESTORE_CHECK: Final = "restore"
RUN_CHECK: Final = "run"
# The reasons of restore failures that are the backup's, whatever raised them (a runner
# Job reports its runner's reason): its artifact missing, pg_restore refusing its dump,
# rows missing. (Every key that could open it gone is ``KeysGone``.)
_BACKUPS_FAULT: Final = frozenset(
    {"ArtifactNotFound", RestoreFailed.reason, ManifestMismatch.reason}
)
# What pg_restore says when the scratch server or the machine failed it, not the dump:
# killed (out of memory), the connection lost, the server restarting, out of room.
_NOT_THE_DUMP: Final = (
    "was killed by signal 9",
    "server closed the connection",
    "connection to server",
    "could not connect",
    "terminating connection",
    "the database system is",
    "too many clients",
    "no space left on device",
    "out of shared memory",
    "out of memory",
)
ROW_COUNT_CHECK: Final = "rowCount"
SQL_CHECK: Final = "sql"
_CHECK_MAX: Final = 256
_REASON_MAX: Final = 1024
_SHOWN_VALUE_MAX: Final = 200


def failed(check: str, reason: str) -> FailedCheck:
    """A failed check, its name and reason cut to what the status holds."""
    if len(reason) > _REASON_MAX:
        reason = reason[: _REASON_MAX - 3] + "..."
    return FailedCheck(check=check[:_CHECK_MAX], reason=reason)


def restore_failure(error: BackupError) -> FailedCheck:
    """The failed check a restore's ``error`` makes: ``restore`` if it is the backup's
    fault, ``run`` if the drill could not be carried out."""
    theirs = isinstance(error, ArtifactError | KeysGone) or error.reason in _BACKUPS_FAULT
    said = error.message.lower()
    if error.reason == RestoreFailed.reason and any(sign in said for sign in _NOT_THE_DUMP):
        theirs = False
    return failed(RESTORE_CHECK if theirs else RUN_CHECK, error.message)


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
    # Cut as ``checks.clip`` cuts: the status never holds _SHOWN_VALUE_MAX characters of a
    # tenant's value (a drill's status is readable by every viewer of the namespace).
    return value if len(value) < _SHOWN_VALUE_MAX else value[: _SHOWN_VALUE_MAX - 1] + "…"


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
    passed = run.result is DrillResult.PASSED
    if passed:
        message = f"Backup {run.backup} restored and every check passed."
    else:
        first = "; ".join(f"{c.check}: {c.reason}" for c in run.failed_checks[:3])
        more = len(run.failed_checks) - 3
        message = f"Backup {run.backup}: {first}" + (f" (and {more} more)" if more > 0 else "")
    return status.with_condition(
        RestoreDrillConditionType.PASSING,
        passed,
        "Passed" if passed else "Failed",
        message[:_REASON_MAX],
        generation=generation,
        now=now,
    )


__all__ = [
    "RESTORE_CHECK",
    "ROW_COUNT_CHECK",
    "RUN_CHECK",
    "SQL_CHECK",
    "failed",
    "judge_run",
    "judge_sql",
    "passing_condition",
    "restore_failure",
    "row_count_failures",
    "sql_error",
]
