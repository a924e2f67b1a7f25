"""The switch-over, and what becomes of an attempt that no process runs any more.

``switch`` makes the staging database the target's live one: both renames in one
transaction (the old database is retired under a name of its own), with connections
refused while they happen; never a database whose role was made for another namespace
of the name (``DatabaseTaken``, not retried). Until then the target is exactly as it
was. The retired database is dropped only once the Restore is recorded Completed
(``RestoreRecords.completed``): until then it is what tells recovery that the
switch-over happened, so that a restore whose Completed status was never written is
completed, not run again over what was written to the restored database since.

``recover`` takes a Restore found Restoring or Verifying that nothing runs or follows
(the operator died): the target's database is first opened to connections again (a
switch-over cut short leaves it refusing them); then if the switch-over had happened
the restore is completed, otherwise the attempt's runner Jobs are deleted, its staging
database dropped and the attempt counted, retried or given up
(``dockyard.core.attempts.recover_interrupted``).

Either way a switch-over that happened is in the audit trail once
(``audit_switch_over``): recovery cannot tell whether the pass that switched over
recorded it before it was cut short, so the row is keyed by the Restore's uid.
"""

from __future__ import annotations

from typing import Final

from dockyard.core.attempts import recover_interrupted
from dockyard.core.kube import KubeError
from dockyard.core.models.backup import BackupRunner
from dockyard.core.models.restore import RestorePlan
from dockyard.operator import crash_points
from dockyard.operator.apply import namespace_uid
from dockyard.operator.database import (
    ManagedDatabaseError,
    ManagedPostgres,
    database_identity,
    retired_database_name,
)
from dockyard.operator.outcomes import Outcome
from dockyard.operator.restores.records import LoadedRestore, RestoreRecords
from dockyard.operator.runs.context import RunContext, SourceUnavailable
from dockyard.operator.runs.restoring import DatabaseFailed, DatabaseTaken
from dockyard.operator.runs.runner_jobs import stop_runner_jobs
from dockyard.operator.store import post

SWITCHED: Final = "SWITCH database (restore)"


async def switch(
    context: RunContext, staging: str, uid: str, *, namespace: str, environment: str
) -> None:
    """Make ``staging`` the live database of ``environment`` (for the Restore ``uid``),
    unless that database was made for another namespace of this name (``DatabaseTaken``)."""
    postgres = context.postgres
    if postgres is None:
        raise SourceUnavailable("the operator has no managed PostgreSQL server")
    live, _ = database_identity(namespace, environment)
    retired = retired_database_name(uid)
    try:
        owner = await namespace_uid(context.kube, namespace)
    except KubeError as exc:
        raise SourceUnavailable(f"namespace {namespace} could not be read: {exc}") from None
    try:
        # Another namespace of the name cannot log in as the role, so its restore fails
        # before here; this check does not depend on that.
        if await postgres.made_elsewhere(
            namespace=namespace, namespace_uid=owner, environment=environment
        ):
            raise DatabaseTaken(
                f"the database of environment {environment} was made for an earlier "
                f"namespace named {namespace}; it is not replaced"
            )
        await postgres.drop_database(retired)  # a leftover of an earlier attempt
    except ManagedDatabaseError as exc:
        raise DatabaseFailed(exc.message) from None
    await replace(postgres, live=live, staging=staging, retired=retired)
    crash_points.exit_here(crash_points.SWITCH_OVER_DONE)


async def staging_oid(context: RunContext, staging: str) -> int | None:
    """The oid of the restored database ``staging`` (None without a managed server)."""
    if context.postgres is None:
        return None
    try:
        return await context.postgres.database_oid(staging)
    except ManagedDatabaseError as exc:
        raise DatabaseFailed(exc.message) from None


async def audit_switch_over(context: RunContext, loaded: LoadedRestore, plan: RestorePlan) -> None:
    """Record the switch-over in the audit trail, unless it is there already: the pass
    that switched over records it before the Restore is Completed, and a recovery after
    that pass was cut short (or the switch-over left unsure) cannot tell whether it did."""
    await context.audited(
        SWITCHED,
        "restores",
        loaded.namespace,
        loaded.name,
        f"Restore {loaded.name} replaced the database of Environment {plan.target} "
        f"with the restored copy of Backup {plan.backup}",
        once_for=loaded.uid,
        environment=plan.target,
        backup=plan.backup,
    )


class SwitchOverUnsure(Exception):
    """A switch-over failed and the server cannot say whether its renames committed.

    Not a ``BackupError``: the attempt must not be abandoned (and restored again over
    what the application wrote since), but recovered once the server answers
    (``recover``), as after a crash.
    """


async def replace(postgres: ManagedPostgres, *, live: str, staging: str, retired: str) -> None:
    """``StagingDatabases.switch_over``, and when it fails, what it had done.

    The renames may have committed before the failure (the connection lost at COMMIT,
    or re-allowing connections failed after it): then the restored database is live and
    the switch-over counts as done. That is asked of the server by the restored
    database's oid, which a rename keeps: the database called ``live`` is it, or is not
    (whether the target had a database before or not). If it is not, ``DatabaseFailed``:
    the target is as it was. Either way ``live`` takes connections again.
    ``SwitchOverUnsure`` when the server cannot be asked.
    """
    try:
        restored = await postgres.database_oid(staging)
    except ManagedDatabaseError as exc:
        raise DatabaseFailed(exc.message) from None
    try:
        await postgres.switch_over(live=live, staging=staging, retired=retired)
        return
    except ManagedDatabaseError as exc:
        failure = exc.message
    try:
        await postgres.reopen(live)
        switched = restored is not None and await postgres.database_oid(live) == restored
    except ManagedDatabaseError as exc:
        raise SwitchOverUnsure(
            f"the switch-over failed ({failure}) and the server cannot say whether it "
            f"happened: {exc.message}"
        ) from None
    if not switched:
        raise DatabaseFailed(failure)


async def switched_over(
    postgres: ManagedPostgres, live: str, staging: str, retired: str, oid: int | None
) -> bool:
    """Whether an interrupted switch-over had renamed ``staging`` to ``live``: the
    target's name has the restored database's ``oid`` (a target without a database
    retires nothing). For a status recorded before the oid was: ``staging`` is gone and
    ``retired`` is there."""
    if oid is not None:
        return await postgres.database_oid(live) == oid
    return not await postgres.database_exists(staging) and await postgres.database_exists(retired)


async def recover(records: RestoreRecords, loaded: LoadedRestore) -> Outcome:
    """A Restoring or Verifying restore nobody runs: finish, retry or give up."""
    status = loaded.status
    plan = status.plan
    postgres = records.context.postgres
    staging = status.staging_database
    if plan is not None and postgres is not None and staging:
        try:
            # A switch-over cut short refused connections to the live database.
            live = database_identity(loaded.namespace, plan.target)[0]
            await postgres.reopen(live)
            retired = retired_database_name(loaded.uid)
            oid = status.staging_database_oid
            if await switched_over(postgres, live, staging, retired, oid):
                await audit_switch_over(records.context, loaded, plan)
                # The pass that switched over took its clock with it: no duration.
                return await records.completed(
                    loaded,
                    status,
                    plan,
                    None,
                    "the switch-over had completed before the operator restarted",
                )
        except ManagedDatabaseError as exc:
            return Outcome.again(f"cannot inspect the databases: {exc.message}")
        await _stop_jobs(records, loaded)
        await records.drop_quietly(staging)
    recovery = recover_interrupted(
        attempts=status.attempts, runner_alive=False, policy=records.policy
    )
    return await records.apply_recovery(loaded, status, recovery, "Interrupted")


async def _stop_jobs(records: RestoreRecords, loaded: LoadedRestore) -> None:
    """Delete the runner Jobs of an interrupted attempt before its database goes."""
    if loaded.restore.spec.runner is not BackupRunner.JOB:
        return
    stopped = await stop_runner_jobs(records.context.kube, loaded.namespace, loaded.uid)
    if stopped:
        post(loaded.raw, reason="RunnerStopped", message=f"Deleted Job {', '.join(stopped)}")


__all__ = [
    "SWITCHED",
    "SwitchOverUnsure",
    "audit_switch_over",
    "recover",
    "replace",
    "staging_oid",
    "switch",
    "switched_over",
]
