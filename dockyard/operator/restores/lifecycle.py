"""The Restore life cycle: plan, approval, safety backup, restore, verify, switch over.

One entry point, ``RestoreRuns.drive``, serves creation, every change (the approval
annotation, ``dryRun`` turned off) and the resume at start-up. It reads the Restore
afresh and acts on its phase, so running it twice is harmless:

1. **Plan** (``planning.plan``, from ``dockyard.core.restore_plan.plan_restore``): the
   source backup, the target, size, tables and an estimate from history go into
   ``status.plan`` (condition Planned). A source that is not restorable yet (a backup
   still running, an environment without backups) leaves the restore Pending and is
   looked at again. A dry run stops here and changes nothing; turning ``dryRun`` off
   carries it out.
2. **Approval** (``planning.approve``, from ``approval.judge_approval``): a production
   target waits in AwaitingApproval until the ``dockyard.io/approved-by`` annotation
   names a user other than the requester, given once the restore was AwaitingApproval,
   whom a SubjectAccessReview allows ``approve`` on it. From then on the plan is fixed
   (``plan_is_fixed``): the approval is given to the plan the approver saw. The
   apiserver's ValidatingAdmissionPolicy makes both annotations proof of who wrote
   them; the REST API's ``approve`` sets it as the caller. The approval follows the tier
   the plan recorded for the target (``approval_tier``); a target that is gone or
   being deleted fails the restore (reason TargetUnavailable), never a lesser tier.
   Rejected instead (``dockyard.io/rejected-by``, ``planning.reject``), it fails with
   reason Rejected and the target is never touched.
3. **BackingUp** (``safety``): with ``safetyBackup`` (the default), a Backup
   ``<restore>-safety`` of the target is taken first, in the source backup's storage
   with its key. It is not owned by the Restore, so it outlives it.
4. **Restoring** (``running``): the artifact (checksum verified first) goes into a new
   database owned by the target's role, never into the live one: inline, or with
   ``runner: Job`` in a runner Job, which later passes follow (``RUNNER_POLL_SECONDS``
   apart) until it finished; none waits for it.
5. **Verifying**: every table's row count must equal the backup's manifest.
6. **Switch-over** (``switch_over``): the new database takes the live name in one
   transaction and the old one is dropped. Until this step the target is exactly as it
   was; a failure at any step before it drops the new database and leaves the target
   untouched.

Crash safety: the staging database is recorded in status before it is made. A
Restoring attempt whose runner Job is there is followed, after a restart too. Any
other Restore found Restoring or Verifying by a process that is not running it was
interrupted (``switch_over.recover``): the target's database is first opened to
connections again (a switch-over cut short leaves it refusing them); then if the
switch-over had already happened it is completed, otherwise the staging database is
dropped and the attempt counted, retried or given up (``dockyard.core.attempts``).
Nothing stays Restoring without a runner behind it.

No database is left behind (``leftovers``): every pass of a restore that is not in an
attempt, a Completed or Failed one's included, drops the databases named for its uid
(a staging database whose drop failed, the retired one of a pass cut short after
Completed was written); a finished one is passed again until none is left. A deleted
Restore's are dropped when its deletion is seen (``RestoreAttempts.forget``).

The annotation ``dockyard.io/skip-reconcile: "true"`` makes the operator leave a
Restore alone (for handling one by hand).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from dockyard.core.attempts import RetryPolicy
from dockyard.core.models.backup import BackupRunner
from dockyard.core.models.restore import RestorePhase
from dockyard.operator.outcomes import Outcome
from dockyard.operator.restores import planning
from dockyard.operator.restores.leftovers import sweep
from dockyard.operator.restores.records import RestoreRecords
from dockyard.operator.restores.running import RestoreAttempts
from dockyard.operator.restores.safety import back_up_target
from dockyard.operator.restores.switch_over import recover
from dockyard.operator.runs.context import RunContext

# How often a restore that cannot be planned yet is looked at again.
PLAN_RETRY_SECONDS: Final = 10.0


class RestoreRuns:
    """Drives Restores; one per operator, in its services beside ``BackupRuns``."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        settings = context.settings
        self.policy = RetryPolicy(
            max_attempts=settings.backup_max_attempts,
            base_delay_seconds=settings.backup_retry_delay,
            max_delay_seconds=max(settings.backup_retry_delay * 16, 1.0),
        )
        self.records = RestoreRecords(context, self.policy)
        self.attempts = RestoreAttempts(self.records)

    async def drive(self, namespace: str, name: str) -> Outcome:
        """One step of the life cycle, for creation, every change and the resume."""
        records = self.records
        loaded = await records.load(namespace, name)
        if loaded is None:
            return Outcome.done()
        phase = loaded.status.phase
        if self.context.inline_runs.running_here(loaded.uid):
            return Outcome.done()
        if phase is not None and phase.is_done:
            # What its end could not drop (or a crash before it did) is dropped now.
            left = await sweep(self.context, loaded.uid, loaded.status)
            return Outcome.done() if left is None else Outcome.again(left)
        if phase not in (RestorePhase.RESTORING, RestorePhase.VERIFYING):
            # Between attempts none of its databases is in use: an earlier attempt's
            # that could not be dropped goes before the next one starts.
            await sweep(self.context, loaded.uid, loaded.status)
        if phase is RestorePhase.RESTORING and loaded.restore.spec.runner is BackupRunner.JOB:
            followed = await self.attempts.follow(loaded)
            if followed is not None:
                return followed
        if phase in (RestorePhase.RESTORING, RestorePhase.VERIFYING):
            return await recover(records, loaded)
        backups = await records.backups.in_namespace(namespace)
        listed = await records.environments.in_namespace(namespace)
        environments = {
            env.metadata.name or "": env for env in listed if not env.metadata.deletion_timestamp
        }
        planned = await planning.plan(records, loaded, backups, environments)
        if planned is None:
            return Outcome.again("the restore cannot be planned yet", delay=PLAN_RETRY_SECONDS)
        loaded, plan = planned
        if loaded.restore.spec.dry_run:
            return Outcome.done()
        rejected = await planning.reject(records, loaded)
        if rejected is not None:
            return rejected
        target = environments.get(plan.target)
        if target is None:
            # Never treated as a lesser tier: its database may well outlive it (Retain).
            deleting = any(env.metadata.name == plan.target for env in listed)
            why = "is being deleted" if deleting else "no longer exists"
            return await records.fail(
                loaded,
                f"target environment {plan.target} {why}",
                reason="TargetUnavailable",
            )
        approved = await planning.approve(records, loaded, plan, target)
        if approved is None:
            return Outcome.done()  # the approval annotation's change calls drive again
        loaded = approved
        source = next((b for b in backups if b.metadata.name == plan.backup), None)
        if source is None:
            return await records.fail(loaded, f"the planned backup {plan.backup} no longer exists")
        if source.metadata.deletion_timestamp is not None:
            # Its finalizer is deleting the artifact the restore would read.
            return await records.fail(loaded, f"the planned backup {plan.backup} is being deleted")
        if plan.backup_uid is not None and source.metadata.uid != plan.backup_uid:
            # The approval covers the backup the plan showed, not whatever has its name now.
            return await records.fail(
                loaded,
                f"the planned backup {plan.backup} was replaced by another Backup of the same "
                "name after the plan was made",
                reason="BackupReplaced",
            )
        if plan.verified and source.status.standing_verification() is None:
            # The approval covers a backup the plan showed as verified; a drill has
            # failed on it since: it is known not to restore.
            return await records.fail(
                loaded,
                f"the planned backup {plan.backup} was verified when planned, but a restore "
                "drill has failed on it since; create a new Restore",
                reason="SourceNoLongerVerified",
            )
        if loaded.restore.spec.safety_backup:
            waiting = await back_up_target(records, loaded, source, plan, target)
            if waiting is not None:
                return waiting
            loaded = await records.reload(loaded)
        return await self.attempts.start(loaded, source, plan)

    async def forget(self, body: Mapping[str, Any]) -> None:
        """A Restore that is gone: stop what follows it (``RestoreAttempts.forget``)."""
        await self.attempts.forget(body)


__all__ = ["PLAN_RETRY_SECONDS", "RestoreRuns"]
