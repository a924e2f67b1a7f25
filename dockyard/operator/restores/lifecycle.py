"""The Restore life cycle: plan, approval, safety backup, restore, verify, switch over.

One entry point, ``RestoreRuns.drive``, serves creation, every change (the approval
annotation, ``dryRun`` turned off) and the resume at start-up. It reads the Restore
afresh and acts on its phase, so running it twice is harmless:

1. **Plan** (``dockyard.core.restore_plan.plan_restore``): the source backup, the
   target, size, tables and an estimate from history go into ``status.plan``
   (condition Planned). A source that is not restorable yet (a backup still running,
   an environment without backups) leaves the restore Pending and is looked at again.
   A dry run stops here and changes nothing; turning ``dryRun`` off carries it out.
2. **Approval** (``restore_approval.judge_approval``): a production target waits in
   AwaitingApproval until the ``dockyard.io/approved-by`` annotation names a user other
   than the requester, given once the restore was AwaitingApproval, whom a
   SubjectAccessReview allows ``approve`` on it. From then on the plan is fixed
   (``plan_is_fixed``): the approval is given to the plan the approver saw. The
   apiserver's ValidatingAdmissionPolicy makes both annotations proof of who wrote
   them; the REST API's ``approve`` sets it as the caller. The approval follows the tier
   the plan recorded for the target (``approval_tier``); a target that is gone or
   being deleted fails the restore (reason TargetUnavailable), never a lesser tier.
3. **BackingUp**: with ``safetyBackup`` (the default), a Backup ``<restore>-safety`` of
   the target is taken first, in the source backup's storage with its key. It is not
   owned by the Restore, so it outlives it.
4. **Restoring**: the artifact (checksum verified first) goes into a new database
   owned by the target's role, never into the live one: inline, or with ``runner:
   Job`` in a runner Job, which later passes follow (``RUNNER_POLL_SECONDS`` apart)
   until it finished; none waits for it.
5. **Verifying**: every table's row count must equal the backup's manifest.
6. **Switch-over**: the new database takes the live name in one transaction and the
   old one is dropped. Until this step the target is exactly as it was; a failure at
   any step before it drops the new database and leaves the target untouched.

Crash safety: the staging database is recorded in status before it is made. A
Restoring attempt whose runner Job is there is followed, after a restart too. Any
other Restore found Restoring or Verifying by a process that is not running it was
interrupted: the target's database is first opened to connections again (a
switch-over cut short leaves it refusing them); then if the switch-over had already
happened it is completed, otherwise the staging database is dropped and the attempt
counted, retried or given up (``dockyard.core.attempts``). Nothing stays Restoring
without a runner behind it.

The annotation ``dockyard.io/skip-reconcile: "true"`` makes the operator leave a
Restore alone (for handling one by hand).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

from pydantic import ValidationError

from dockyard.core.attempts import (
    Recovery,
    RecoveryAction,
    RetryPolicy,
    after_failure,
    recover_interrupted,
)
from dockyard.core.conditions import set_condition
from dockyard.core.kube import KubeError
from dockyard.core.models.backup import Backup, BackupPhase, BackupRunner
from dockyard.core.models.common import API_VERSION, ConditionStatus
from dockyard.core.models.environment import Environment
from dockyard.core.models.restore import (
    Restore,
    RestoreConditionType,
    RestorePhase,
    RestorePlan,
    RestoreStatus,
)
from dockyard.core.models.restore_drill import RestoreDrill
from dockyard.core.resources import BACKUPS, ENVIRONMENTS, RESTORE_DRILLS, RESTORES, ResourceType
from dockyard.core.restore_plan import (
    ApprovalDecision,
    ApprovalState,
    approval_tier,
    plan_restore,
    restore_history,
)
from dockyard.operator.apply import get
from dockyard.operator.backups.lifecycle import post
from dockyard.operator.backups.schedules import ENVIRONMENT_LABEL
from dockyard.operator.builders.metadata import MANAGED_BY, MANAGED_BY_LABEL, Owner
from dockyard.operator.database import (
    ManagedDatabaseError,
    TenantLogin,
    database_identity,
    retired_database_name,
    staging_database_name,
)
from dockyard.operator.outcomes import Outcome
from dockyard.operator.restores.approval import judge_approval
from dockyard.operator.runs import jobs
from dockyard.operator.runs.context import (
    Loaded,
    RunCancelled,
    RunContext,
    SourceUnavailable,
    retryable,
    tenant_login,
)
from dockyard.operator.runs.restoring import (
    DatabaseFailed,
    ManifestMismatch,
    check_row_counts,
    drop_database,
    fresh_database,
    restore_backup,
)
from dockyard.operator.runs.runner_jobs import (
    RUNNER_POLL_SECONDS,
    RestoreJob,
    job_result,
    read_job,
    start_restore_job,
    stop_runner_jobs,
)
from dockyard.runner import BackupError

logger = logging.getLogger(__name__)

_R = TypeVar("_R", Backup, Environment, Restore, RestoreDrill)

SKIP_ANNOTATION: Final = "dockyard.io/skip-reconcile"
RESTORE_LABEL: Final = "dockyard.io/restore"
# How often a restore that cannot be planned yet, or waits for its safety backup, is
# looked at again.
PLAN_RETRY_SECONDS: Final = 10.0
SAFETY_POLL_SECONDS: Final = 2.0
_MESSAGE_LIMIT: Final = 4096


def safety_backup_name(restore: str) -> str:
    """The Backup a restore takes of its target first."""
    return f"{restore[:246].rstrip('-.')}-safety"


def safety_backup(restore: Restore, source: Backup, target: str) -> dict[str, Any]:
    """The safety Backup of ``target``: where and with which key the source is stored."""
    name = restore.metadata.name or ""
    return {
        "apiVersion": API_VERSION,
        "kind": "Backup",
        "metadata": {
            "name": safety_backup_name(name),
            "namespace": restore.metadata.namespace,
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                ENVIRONMENT_LABEL: target,
                RESTORE_LABEL: name,
            },
            "annotations": {
                "dockyard.io/reason": f"taken before Restore {name} replaced the database"
            },
        },
        "spec": {
            "environmentRef": {"name": target},
            "storage": source.spec.storage.model_dump(mode="json", by_alias=True),
            "encryption": source.spec.encryption.model_dump(mode="json", by_alias=True),
        },
    }


def plan_is_fixed(status: RestoreStatus) -> bool:
    """Whether the plan in ``status`` is final: what an approver sees is what runs.

    A plan is made again on every pass while the restore is Pending (a ``latest``
    source follows new backups). Once it waits for approval, the approval is given to
    that plan, so a newer backup no longer replaces it (a new Restore restores that
    one); once it started, a retry must not pick its own safety backup as ``latest``.
    """
    return (
        status.attempts > 0
        or status.safety_backup is not None
        or status.phase not in (None, RestorePhase.PENDING)
    )


def status_patch(status: RestoreStatus) -> dict[str, Any]:
    return {"status": status.model_dump(mode="json", by_alias=True)}


class _Loaded(Loaded[Restore]):
    __slots__ = ()

    @property
    def restore(self) -> Restore:
        return self.resource

    @property
    def status(self) -> RestoreStatus:
        return self.resource.status


class RestoreRuns:
    """Drives Restores; one per operator, in the memo beside ``BackupRuns``."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        settings = context.settings
        self.policy = RetryPolicy(
            max_attempts=settings.backup_max_attempts,
            base_delay_seconds=settings.backup_retry_delay,
            max_delay_seconds=max(settings.backup_retry_delay * 16, 1.0),
        )
        # Restores whose runner Job this process started or took up after a restart:
        # such a Job missing is a runner gone, any other an attempt never begun.
        self._following: set[str] = set()

    # -- entry point -----------------------------------------------------------------------

    async def drive(self, namespace: str, name: str) -> Outcome:
        loaded = await self._load(namespace, name)
        if loaded is None:
            return Outcome.done()
        phase = loaded.status.phase
        if phase is not None and phase.is_done:
            return Outcome.done()
        if self.context.running_here(loaded.uid):
            return Outcome.done()
        if phase is RestorePhase.RESTORING and loaded.restore.spec.runner is BackupRunner.JOB:
            return await self._follow(loaded)
        if phase in (RestorePhase.RESTORING, RestorePhase.VERIFYING):
            return await self._recover(loaded)
        backups = await self._list(BACKUPS, Backup, namespace)
        listed = await self._list(ENVIRONMENTS, Environment, namespace)
        environments = {
            env.metadata.name or "": env for env in listed if not env.metadata.deletion_timestamp
        }
        planned = await self._plan(loaded, backups, environments)
        if planned is None:
            return Outcome.again("the restore cannot be planned yet", delay=PLAN_RETRY_SECONDS)
        loaded, plan = planned
        if loaded.restore.spec.dry_run:
            return Outcome.done()
        target = environments.get(plan.target)
        if target is None:
            # Never treated as a lesser tier: its database may well outlive it (Retain).
            deleting = any(env.metadata.name == plan.target for env in listed)
            why = "is being deleted" if deleting else "no longer exists"
            return await self._fail(
                loaded, f"target environment {plan.target} {why}", reason="TargetUnavailable"
            )
        approval = await self._approve(loaded, plan, target)
        if approval is None:
            return Outcome.done()  # the approval annotation's change calls drive again
        loaded = approval
        source = next((b for b in backups if b.metadata.name == plan.backup), None)
        if source is None:
            return await self._fail(loaded, f"the planned backup {plan.backup} no longer exists")
        if loaded.restore.spec.safety_backup:
            waiting = await self._safety_backup(loaded, source, plan, target)
            if waiting is not None:
                return waiting
            loaded = await self._reload(loaded)
        return await self._start(loaded, source, plan)

    # -- planning and approval -------------------------------------------------------------

    async def _plan(
        self, loaded: _Loaded, backups: list[Backup], environments: Mapping[str, Environment]
    ) -> tuple[_Loaded, RestorePlan] | None:
        restore = loaded.restore
        status = restore.status
        if plan_is_fixed(status) and status.plan is not None:
            return loaded, status.plan
        own = safety_backup_name(loaded.name)
        candidates = [b for b in backups if b.metadata.name != own]
        tiers = {name: env.spec.tier for name, env in environments.items()}
        source = restore.spec.source.environment_ref
        planned_from = restore.status.plan.source_environment if restore.status.plan else None
        history = restore_history(
            planned_from or (source.name if source else ""),
            await self._list(RESTORES, Restore, loaded.namespace),
            await self._list(RESTORE_DRILLS, RestoreDrill, loaded.namespace),
        )
        decision = plan_restore(restore.spec, backups=candidates, tiers=tiers, history=history)
        if decision.plan is None:
            updated = status.model_copy(
                update={
                    "phase": RestorePhase.PENDING,
                    "message": f"Cannot plan yet: {decision.reason}",
                    "observed_generation": loaded.generation,
                    "conditions": self._condition(
                        loaded,
                        RestoreConditionType.PLANNED,
                        False,
                        "SourceUnavailable",
                        decision.reason,
                    ),
                }
            )
            if self._changed(status, updated):
                await self._write(loaded, updated)
                post(loaded.raw, reason="NotPlanned", message=decision.reason, warning=True)
            return None
        plan = decision.plan
        dry = restore.spec.dry_run
        message = (
            f"Dry run: {decision.reason}; nothing was changed. Set spec.dryRun to false to "
            "carry out this plan."
            if dry
            else f"Planned: {decision.reason}"
        )
        updated = status.model_copy(
            update={
                "phase": status.phase or RestorePhase.PENDING,
                "plan": plan,
                "message": message,
                "observed_generation": loaded.generation,
                "conditions": self._condition(
                    loaded,
                    RestoreConditionType.PLANNED,
                    True,
                    "DryRun" if dry else "Planned",
                    decision.reason,
                ),
            }
        )
        if self._changed(status, updated):
            await self._write(loaded, updated)
            post(loaded.raw, reason="Planned", message=message)
        return _Loaded(loaded.raw, restore.model_copy(update={"status": updated})), plan

    async def _approve(
        self, loaded: _Loaded, plan: RestorePlan, target: Environment
    ) -> _Loaded | None:
        restore = loaded.restore
        tier = approval_tier(plan.target_tier, target.spec.tier)
        decision = await judge_approval(self.context.kube, loaded.raw, restore, tier)
        status = restore.status
        updated = status.model_copy(
            update={
                "approval": decision.approval,
                "conditions": self._approval_condition(loaded, decision),
            }
        )
        if not decision.may_proceed:
            updated = updated.model_copy(
                update={"phase": RestorePhase.AWAITING_APPROVAL, "message": decision.reason}
            )
            if self._changed(status, updated):
                await self._write(loaded, updated)
                refused = decision.state is ApprovalState.REFUSED
                post(
                    loaded.raw,
                    reason="ApprovalRefused" if refused else "AwaitingApproval",
                    message=decision.reason,
                    warning=refused,
                )
            return None
        if self._changed(status, updated):
            await self._write(loaded, updated)
            if decision.state is ApprovalState.APPROVED:
                post(loaded.raw, reason="Approved", message=decision.reason)
        return _Loaded(loaded.raw, restore.model_copy(update={"status": updated}))

    def _approval_condition(self, loaded: _Loaded, decision: ApprovalDecision) -> list[Any]:
        granted = decision.may_proceed
        return self._condition(
            loaded, RestoreConditionType.APPROVED, granted, decision.state.value, decision.reason
        )

    # -- the safety backup -----------------------------------------------------------------

    async def _safety_backup(
        self, loaded: _Loaded, source: Backup, plan: RestorePlan, target_env: Environment | None
    ) -> Outcome | None:
        """None once the target is backed up (or has nothing to back up), else a wait."""
        kube = self.context.kube
        name = safety_backup_name(loaded.name)
        if target_env is None:
            return await self._fail(loaded, f"target environment {plan.target} does not exist")
        database = target_env.status.database
        if database is None or not database.ready:
            return await self._fail(
                loaded, f"the database of target environment {plan.target} is not ready"
            )
        raw = await get(kube, BACKUPS.path(loaded.namespace, name))
        if raw is None:
            await kube.create(
                BACKUPS.path(loaded.namespace), safety_backup(loaded.restore, source, plan.target)
            )
            raw = await get(kube, BACKUPS.path(loaded.namespace, name))
            post(
                loaded.raw,
                reason="SafetyBackup",
                message=f"Backing up {plan.target} first: Backup {name}",
            )
        status = loaded.status
        if status.phase is not RestorePhase.BACKING_UP or status.safety_backup != name:
            await self._write(
                loaded,
                status.model_copy(
                    update={
                        "phase": RestorePhase.BACKING_UP,
                        "safety_backup": name,
                        "started_at": status.started_at or datetime.now(UTC),
                        "message": f"Backing up environment {plan.target} first (Backup {name})",
                    }
                ),
            )
        backup = Backup.model_validate(raw) if raw is not None else None
        phase = backup.status.phase if backup is not None else None
        if phase is BackupPhase.COMPLETED:
            return None
        if phase is BackupPhase.FAILED:
            why = backup.status.message if backup is not None else ""
            return await self._fail(loaded, f"the safety backup {name} failed: {why}")
        return Outcome.again(f"waiting for the safety backup {name}", delay=SAFETY_POLL_SECONDS)

    # -- restoring -------------------------------------------------------------------------

    async def _start(self, loaded: _Loaded, source: Backup, plan: RestorePlan) -> Outcome:
        status = loaded.status
        attempt = status.attempts + 1
        staging = staging_database_name("r", loaded.uid, attempt)
        started = status.model_copy(
            update={
                "phase": RestorePhase.RESTORING,
                "attempts": attempt,
                "staging_database": staging,
                "started_at": status.started_at or datetime.now(UTC),
                "message": (
                    f"Attempt {attempt}: restoring backup {plan.backup} into a new database "
                    f"for environment {plan.target}"
                ),
                "observed_generation": loaded.generation,
            }
        )
        if loaded.restore.spec.runner is BackupRunner.JOB:
            return await self._start_job(loaded, started, source, plan, staging)
        try:
            return await self.context.inline(
                loaded.uid, self._run(loaded, started, source, plan, staging)
            )
        except RunCancelled as exc:
            return await self._abandon(loaded, started, staging, exc)

    async def _begin(self, loaded: _Loaded, status: RestoreStatus) -> None:
        # Recorded before the database exists, so an interruption finds it to drop.
        await self._write(loaded, status)
        post(loaded.raw, reason="Restoring", message=status.message or "")

    async def _run(
        self,
        loaded: _Loaded,
        status: RestoreStatus,
        source: Backup,
        plan: RestorePlan,
        staging: str,
    ) -> Outcome:
        await self._begin(loaded, status)
        began = datetime.now(UTC)
        try:
            tenant = await tenant_login(self.context.kube, loaded.namespace, plan.target)
            await fresh_database(self.context, staging, owner=tenant)
            result = await restore_backup(self.context, source, database=staging, tenant=tenant)
        except BackupError as exc:
            return await self._abandon(loaded, status, staging, exc)
        return await self._verify(loaded, status, plan, staging, result.size, began, tenant)

    # -- runner: Job -----------------------------------------------------------------------

    async def _start_job(
        self,
        loaded: _Loaded,
        status: RestoreStatus,
        source: Backup,
        plan: RestorePlan,
        staging: str,
    ) -> Outcome:
        """Make the staging database and the attempt's Job; later passes follow it."""
        await self._begin(loaded, status)
        job = self._job(loaded, plan, status.attempts)
        try:
            tenant = await tenant_login(self.context.kube, loaded.namespace, plan.target)
            await fresh_database(self.context, staging, owner=tenant)
            await start_restore_job(self.context, source, database=staging, job=job)
        except BackupError as exc:
            return await self._abandon(loaded, status, staging, exc)
        self._following.add(loaded.uid)
        return Outcome.again(f"restoring in Job {job.name}", delay=RUNNER_POLL_SECONDS)

    async def _follow(self, loaded: _Loaded) -> Outcome:
        """A Restoring attempt in a Job: wait for it, then verify and switch over."""
        status = loaded.status
        plan, staging = status.plan, status.staging_database
        if plan is None or not staging:
            return await self._recover(loaded)
        name = self._job(loaded, plan, status.attempts).name
        job = await read_job(self.context.kube, loaded.namespace, name)
        if job.state == "Missing" and loaded.uid not in self._following:
            # Recorded but never made: the operator that started it died in between.
            return await self._recover(loaded)
        # A Job found after a restart is a runner still there: followed, as a Backup's is.
        self._following.add(loaded.uid)
        try:
            result = await job_result(self.context, job)
        except BackupError as exc:
            self._following.discard(loaded.uid)
            return await self._abandon(loaded, status, staging, exc)
        if result is None:
            return Outcome.again(f"Job {name} is restoring", delay=RUNNER_POLL_SECONDS)
        self._following.discard(loaded.uid)
        began = job.created_at or datetime.now(UTC)
        try:
            return await self.context.inline(
                loaded.uid, self._verify(loaded, status, plan, staging, result.size, began)
            )
        except RunCancelled as exc:
            return await self._abandon(loaded, status, staging, exc)

    def _job(self, loaded: _Loaded, plan: RestorePlan, attempt: int) -> RestoreJob:
        """The runner Job of attempt ``attempt``: one per attempt, named for it."""
        return RestoreJob(
            owner=Owner.of(loaded.restore),
            name=jobs.job_name(loaded.name, attempt, kind="restore"),
            runner="restore",
            environment=plan.target,
        )

    async def forget(self, body: Mapping[str, Any]) -> None:
        """A deleted Restore, whose passes are over: its Job is stopped and its staging
        database dropped (an inline run in progress ends on its own)."""
        uid = str((body.get("metadata") or {}).get("uid") or "")
        self._following.discard(uid)
        try:
            restore = Restore.model_validate(body)
        except ValidationError:
            return
        status = restore.status
        staging = status.staging_database
        if (
            restore.spec.runner is not BackupRunner.JOB
            or status.phase is not RestorePhase.RESTORING
            or not staging
            or self.context.running_here(uid)
        ):
            return
        await stop_runner_jobs(self.context.kube, restore.metadata.namespace or "", uid)
        await self._drop_quietly(staging)

    # -- verifying and switching over -----------------------------------------------------

    async def _verify(
        self,
        loaded: _Loaded,
        status: RestoreStatus,
        plan: RestorePlan,
        staging: str,
        size: int,
        began: datetime,
        tenant: TenantLogin | None = None,
    ) -> Outcome:
        """Row counts against the manifest, then the switch-over: the attempt's end."""
        live, _ = database_identity(loaded.namespace, plan.target)
        verifying = status.model_copy(
            update={
                "phase": RestorePhase.VERIFYING,
                "message": f"Restored {size} bytes; comparing row counts with the manifest",
            }
        )
        try:
            if tenant is None:
                tenant = await tenant_login(self.context.kube, loaded.namespace, plan.target)
            await self._write(loaded, verifying)
            counts = await check_row_counts(self.context, plan.tables, staging, tenant)
            if not counts.passed:
                raise ManifestMismatch(counts.describe())
            await self._switch(live, staging, loaded.uid)
        except BackupError as exc:
            return await self._abandon(loaded, status, staging, exc)
        seconds = (datetime.now(UTC) - began).total_seconds()
        return await self._completed(loaded, status, plan, seconds, counts.describe())

    async def _switch(self, live: str, staging: str, uid: str) -> None:
        postgres = self.context.postgres
        if postgres is None:
            raise SourceUnavailable("the operator has no managed PostgreSQL server")
        retired = retired_database_name(uid)
        try:
            await postgres.drop_database(retired)  # a leftover of an earlier attempt
            await postgres.switch_over(live=live, staging=staging, retired=retired)
            await postgres.drop_database(retired)
        except ManagedDatabaseError as exc:
            raise DatabaseFailed(exc.message) from None

    async def _completed(
        self, loaded: _Loaded, status: RestoreStatus, plan: RestorePlan, seconds: float, detail: str
    ) -> Outcome:
        message = (
            f"Environment {plan.target} now runs on backup {plan.backup} "
            f"(restored in {seconds:.1f}s; {detail})"
        )
        done = status.model_copy(
            update={
                "phase": RestorePhase.COMPLETED,
                "message": message,
                "staging_database": None,
                "completed_at": datetime.now(UTC),
                "duration_seconds": round(seconds, 3),
                "conditions": self._condition(
                    loaded,
                    RestoreConditionType.COMPLETED,
                    True,
                    "Completed",
                    message,
                    base=status,
                ),
            }
        )
        await self._write(loaded, done)
        post(loaded.raw, reason="Completed", message=message)
        return Outcome.done()

    async def _recover(self, loaded: _Loaded) -> Outcome:
        """A Restoring or Verifying restore nobody runs: finish, retry or give up."""
        status = loaded.status
        plan = status.plan
        postgres = self.context.postgres
        staging = status.staging_database
        if plan is not None and postgres is not None and staging:
            try:
                # A switch-over cut short refused connections to the live database.
                await postgres.reopen(database_identity(loaded.namespace, plan.target)[0])
                retired = retired_database_name(loaded.uid)
                switched = not await postgres.database_exists(staging) and (
                    await postgres.database_exists(retired)
                )
                if switched:
                    await postgres.drop_database(retired)
                    return await self._completed(
                        loaded,
                        status,
                        plan,
                        status.duration_seconds or 0.0,
                        "the switch-over had completed before the operator restarted",
                    )
            except ManagedDatabaseError as exc:
                return Outcome.again(f"cannot inspect the databases: {exc.message}")
            await self._stop_jobs(loaded)
            await self._drop_quietly(staging)
        recovery = recover_interrupted(
            attempts=status.attempts, runner_alive=False, policy=self.policy
        )
        return await self._apply_recovery(loaded, status, recovery, "Interrupted")

    async def _stop_jobs(self, loaded: _Loaded) -> None:
        """Delete the runner Jobs of an interrupted attempt before its database goes."""
        if loaded.restore.spec.runner is not BackupRunner.JOB:
            return
        self._following.discard(loaded.uid)
        stopped = await stop_runner_jobs(self.context.kube, loaded.namespace, loaded.uid)
        if stopped:
            post(loaded.raw, reason="RunnerStopped", message=f"Deleted Job {', '.join(stopped)}")

    async def _abandon(
        self, loaded: _Loaded, status: RestoreStatus, staging: str, error: BackupError
    ) -> Outcome:
        """Drop the attempt's staging database; then retry or give up, as ``error`` says."""
        await self._drop_quietly(staging)
        return await self._attempt_failed(loaded, status, error)

    async def _attempt_failed(
        self, loaded: _Loaded, status: RestoreStatus, error: BackupError
    ) -> Outcome:
        recovery = after_failure(
            attempts=status.attempts,
            reason=f"{error.reason}: {error.message}",
            retryable=retryable(error) and not isinstance(error, ManifestMismatch),
            policy=self.policy,
        )
        return await self._apply_recovery(loaded, status, recovery, error.reason)

    async def _apply_recovery(
        self, loaded: _Loaded, status: RestoreStatus, recovery: Recovery, reason: str
    ) -> Outcome:
        if recovery.action is RecoveryAction.GIVE_UP:
            return await self._fail(loaded, recovery.message, reason=reason, status=status)
        retry = status.model_copy(
            update={
                "phase": RestorePhase.PENDING,
                "staging_database": None,
                "message": recovery.message,
            }
        )
        await self._write(loaded, retry)
        post(loaded.raw, reason="AttemptFailed", message=recovery.message, warning=True)
        return Outcome.again(recovery.message, delay=max(recovery.delay_seconds, 1.0))

    async def _fail(
        self,
        loaded: _Loaded,
        message: str,
        *,
        reason: str = "Failed",
        status: RestoreStatus | None = None,
    ) -> Outcome:
        base = status or loaded.status
        text = f"{message}; the target environment was not changed"
        failed = base.model_copy(
            update={
                "phase": RestorePhase.FAILED,
                "message": text[:_MESSAGE_LIMIT],
                "staging_database": None,
                "completed_at": datetime.now(UTC),
                "conditions": self._condition(
                    loaded, RestoreConditionType.COMPLETED, False, reason, text, base=base
                ),
            }
        )
        await self._write(loaded, failed)
        post(loaded.raw, reason="Failed", message=text, warning=True)
        return Outcome.done()

    async def _drop_quietly(self, database: str) -> None:
        try:
            await drop_database(self.context, database)
        except BackupError as exc:
            logger.warning(
                "staging database not dropped", extra={"database": database, "error": exc.message}
            )

    # -- reading and writing ---------------------------------------------------------------

    async def _load(self, namespace: str, name: str) -> _Loaded | None:
        raw = await get(self.context.kube, RESTORES.path(namespace, name))
        if raw is None or raw.get("metadata", {}).get("deletionTimestamp"):
            return None
        annotations = raw.get("metadata", {}).get("annotations") or {}
        if str(annotations.get(SKIP_ANNOTATION, "")).lower() == "true":
            return None
        try:
            return _Loaded(raw, Restore.model_validate(raw))
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            await self.context.kube.merge_patch(
                RESTORES.path(namespace, name, "status"),
                {
                    "status": {
                        "phase": RestorePhase.FAILED.value,
                        "message": problem[:_MESSAGE_LIMIT],
                    }
                },
            )
            post(raw, reason="InvalidSpec", message=problem, warning=True)
            return None

    async def _reload(self, loaded: _Loaded) -> _Loaded:
        fresh = await self._load(loaded.namespace, loaded.name)
        return fresh if fresh is not None else loaded

    async def _list(self, rtype: ResourceType, model: type[_R], namespace: str) -> list[_R]:
        """The namespace's objects of a kind; any that do not validate are left out."""
        listing = await self.context.kube.get(rtype.path(namespace))
        found = []
        for item in listing.get("items", ()):
            with contextlib.suppress(ValidationError):
                found.append(model.model_validate(item))
        return found

    def _condition(
        self,
        loaded: _Loaded,
        type: RestoreConditionType,
        ok: bool,
        reason: str,
        message: str,
        *,
        base: RestoreStatus | None = None,
    ) -> list[Any]:
        return set_condition(
            (base or loaded.status).conditions,
            type=type,
            status=ConditionStatus.TRUE if ok else ConditionStatus.FALSE,
            reason=reason,
            message=message[:_MESSAGE_LIMIT],
            generation=loaded.generation,
        )

    @staticmethod
    def _changed(before: RestoreStatus, after: RestoreStatus) -> bool:
        return before.model_dump(mode="json") != after.model_dump(mode="json")

    async def _write(self, loaded: _Loaded, status: RestoreStatus) -> None:
        try:
            await self.context.kube.merge_patch(
                RESTORES.path(loaded.namespace, loaded.name, "status"), status_patch(status)
            )
        except KubeError as exc:
            if exc.status != 404:
                raise


__all__ = [
    "RESTORES",
    "SKIP_ANNOTATION",
    "RestoreRuns",
    "safety_backup",
    "safety_backup_name",
]
