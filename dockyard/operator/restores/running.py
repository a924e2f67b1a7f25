"""A restore attempt: the staging database, the restore into it, the row counts, the
switch-over.

``RestoreAttempts.start`` records the attempt (``attempts`` + 1, the staging database's
name) before that database exists, so an interruption finds it to drop. Inline, the
whole attempt then runs in one of the ``backup_concurrency`` slots
(``InlineRuns.run``). With ``runner: Job`` the pass makes the database and the
attempt's Job (``restore-<name>-<attempt>``) and ends with ``Outcome.again``; each later
pass (``follow``) reads the Job, and the one that finds it finished verifies and
switches over, in a slot. No pass waits for a Job.

Verifying compares every table's row count with the backup's manifest (as the plan
records it); a difference is ``ManifestMismatch`` and is not retried. Any failure
before the switch-over drops the staging database and counts the attempt
(``RestoreRecords.abandon``), leaving the target as it was.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from dockyard.core.models.backup import Backup, BackupRunner
from dockyard.core.models.restore import RestorePhase, RestorePlan, RestoreStatus
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.database import TenantLogin, staging_database_name
from dockyard.operator.outcomes import Outcome
from dockyard.operator.restores.leftovers import sweep
from dockyard.operator.restores.progress import progress_status, reported
from dockyard.operator.restores.records import LoadedRestore, RestoreRecords
from dockyard.operator.restores.switch_over import (
    SwitchOverUnsure,
    audit_switch_over,
    staging_oid,
    switch,
)
from dockyard.operator.runs import jobs
from dockyard.operator.runs.context import tenant_login
from dockyard.operator.runs.inline import RunCancelled, RunOrphaned
from dockyard.operator.runs.outages import pause_while_out
from dockyard.operator.runs.restoring import (
    ManifestMismatch,
    check_row_counts,
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
from dockyard.operator.store import post
from dockyard.runner import BackupError


class RestoreAttempts:
    """Starts restore attempts and follows those in runner Jobs."""

    def __init__(self, records: RestoreRecords) -> None:
        self.records = records
        self.context = records.context
        # Restores whose runner Job this process started or took up after a restart:
        # such a Job missing is a runner gone, any other an attempt never begun.
        self._following: set[str] = set()

    async def start(self, loaded: LoadedRestore, source: Backup, plan: RestorePlan) -> Outcome:
        """Start the next attempt: inline to its end, or up to its Job; or wait, while
        the target's database server is out (``DatabaseUnavailable``, no attempt used)."""
        status = loaded.status
        write = partial(self.records.write, loaded)
        waiting = await pause_while_out(self.context, loaded, plan.target, status, write)
        if waiting is not None:
            return waiting
        status = status.database_back(generation=loaded.generation)
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
            return await self._run(loaded, started, source, plan, staging)
        try:
            return await self._inline(loaded, self._run(loaded, started, source, plan, staging))
        except RunOrphaned:
            return await self._orphaned(loaded.uid)
        except RunCancelled as exc:
            return await self.records.abandon(loaded, started, staging, exc)

    async def follow(self, loaded: LoadedRestore) -> Outcome | None:
        """A Restoring attempt in a Job: wait for it, then verify and switch over. None
        when there is no Job to follow: the attempt was interrupted."""
        status = loaded.status
        plan, staging = status.plan, status.staging_database
        if plan is None or not staging:
            return None
        name = self._job(loaded, plan, status.attempts).name
        job = await read_job(self.context.kube, loaded.namespace, name, owner_uid=loaded.uid)
        if job.state == "Missing" and loaded.uid not in self._following:
            return None  # recorded but never made: the operator died in between
        # A Job found after a restart is a runner still there: followed, as a Backup's is.
        self._following.add(loaded.uid)
        try:
            result = await job_result(self.context, job)
        except BackupError as exc:
            self._following.discard(loaded.uid)
            return await self.records.abandon(loaded, status, staging, exc)
        if result is None:
            return Outcome.again(f"Job {name} is restoring", delay=RUNNER_POLL_SECONDS)
        self._following.discard(loaded.uid)
        began = job.created_at or datetime.now(UTC)
        try:
            return await self._inline(
                loaded, self._verify(loaded, status, plan, staging, result.size, began)
            )
        except RunOrphaned:
            return await self._orphaned(loaded.uid)
        except RunCancelled as exc:
            return await self.records.abandon(loaded, status, staging, exc)

    async def forget(self, body: Mapping[str, Any]) -> None:
        """A deleted Restore, whose passes are over: its Job is stopped and every database
        of it dropped, whatever its phase (an inline run in progress sees its Restore gone
        and is cancelled, ``InlineRuns``; it drops them itself, ``_orphaned``)."""
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        self._following.discard(uid)
        if not uid or self.context.inline_runs.running_here(uid):
            return
        restore = next(iter(self.records.restores.valid([dict(body)])), None)
        if restore is not None and restore.status.attempts == 0:
            return  # no attempt made a database, nor a Job
        if restore is None or restore.spec.runner is BackupRunner.JOB:
            # A Job may still be writing into its staging database.
            await stop_runner_jobs(self.context.kube, str(meta.get("namespace") or ""), uid)
        await sweep(self.context, uid)

    async def _inline(self, loaded: LoadedRestore, work: Awaitable[Outcome]) -> Outcome:
        """``work`` run in this process, in a slot before other runs, until it ends or
        the Restore is deleted (``RunCancelled``)."""
        return await self.context.inline_runs.run(
            loaded.uid,
            work,
            path=self.records.restores.path(loaded.namespace, loaded.name),
            namespace=loaded.namespace,
            urgent=True,
        )

    async def _orphaned(self, uid: str) -> Outcome:
        """The Restore went mid-run (before its switch-over): its databases dropped, and
        nothing written to its name, which may be another Restore's by now."""
        await sweep(self.context, uid)
        return Outcome.done()

    # -- the attempt -----------------------------------------------------------------------

    async def _run(
        self,
        loaded: LoadedRestore,
        status: RestoreStatus,
        source: Backup,
        plan: RestorePlan,
        staging: str,
    ) -> Outcome:
        """The attempt ``status`` records: the staging database, then the restore in this
        process (verified and switched over here), or its Job (which later passes follow)."""
        # Recorded before the database exists, so an interruption finds it to drop; the
        # progress of an earlier attempt is cleared.
        status = status.model_copy(update={"progress": None})
        await self.records.write(loaded, status)
        post(loaded.raw, reason="Restoring", message=status.message or "")
        began = datetime.now(UTC)
        job = self._job(loaded, plan, status.attempts)
        in_job = loaded.restore.spec.runner is BackupRunner.JOB
        try:
            tenant = await tenant_login(self.context.kube, loaded.namespace, plan.target)
            await fresh_database(self.context, staging, owner=tenant)
            if in_job:
                await start_restore_job(self.context, source, database=staging, job=job)
            else:
                restores, namespace = self.records.restores, loaded.namespace
                async with reported(restores, namespace, loaded.name, loaded.uid) as progress:
                    try:
                        restored = await restore_backup(
                            self.context, source, database=staging, tenant=tenant, progress=progress
                        )
                    finally:
                        # Later status writes carry the last figures rather than clear them.
                        status = status.model_copy(update={"progress": progress_status(progress)})
        except BackupError as exc:
            return await self.records.abandon(loaded, status, staging, exc)
        if in_job:
            self._following.add(loaded.uid)
            return Outcome.again(f"restoring in Job {job.name}", delay=RUNNER_POLL_SECONDS)
        return await self._verify(loaded, status, plan, staging, restored.size, began, tenant)

    @staticmethod
    def _job(loaded: LoadedRestore, plan: RestorePlan, attempt: int) -> RestoreJob:
        """The runner Job of attempt ``attempt``: one per attempt, named for it."""
        return RestoreJob(
            owner=Owner.of(loaded.restore),
            name=jobs.job_name(loaded.name, attempt, kind="restore"),
            runner="restore",
            environment=plan.target,
        )

    # -- verifying and switching over ------------------------------------------------------

    async def _verify(
        self,
        loaded: LoadedRestore,
        status: RestoreStatus,
        plan: RestorePlan,
        staging: str,
        size: int,
        began: datetime,
        tenant: TenantLogin | None = None,
    ) -> Outcome:
        """Row counts against the manifest, then the switch-over: the attempt's end."""
        verifying = status.model_copy(
            update={
                "phase": RestorePhase.VERIFYING,
                "message": f"Restored {size} bytes; comparing row counts with the manifest",
            }
        )
        try:
            if tenant is None:
                tenant = await tenant_login(self.context.kube, loaded.namespace, plan.target)
            # What the restored dump's code did to the target's role, undone before the
            # counts log in as it (a changed password would fail them).
            await self.records.reassert_target(loaded, plan, tenant)
            # Recorded before the switch-over: what tells recovery whether it happened.
            oid = await staging_oid(self.context, staging)
            verifying = verifying.model_copy(update={"staging_database_oid": oid})
            await self.records.write(loaded, verifying)
            counts = await check_row_counts(self.context, plan.tables, staging, tenant)
            if not counts.passed:
                raise ManifestMismatch(counts.describe())
            # Deleted while the data was restored (a long restore, a Job's): its database
            # is not to be replaced, whatever its deletion policy keeps of it.
            gone = await self._target_gone(loaded.namespace, plan.target)
            if gone is not None:
                return await self.records.fail(
                    loaded, gone, reason="TargetUnavailable", status=status
                )
            # Cut short, the switch-over would leave the target refusing connections, and
            # a deleted Restore leaves nothing to recover it: a deletion stops the run up
            # to here, never after.
            await self.context.inline_runs.uninterruptible(loaded.uid)
            await switch(
                self.context,
                staging,
                loaded.uid,
                namespace=loaded.namespace,
                environment=plan.target,
            )
        except BackupError as exc:
            return await self.records.abandon(loaded, status, staging, exc)
        except SwitchOverUnsure as exc:
            # Left Verifying: the next pass recovers it as after a crash, completing it if
            # the renames had committed, never restoring again over the live data.
            post(loaded.raw, reason="SwitchOverUnsure", message=str(exc), warning=True)
            return Outcome.again(str(exc), delay=RUNNER_POLL_SECONDS)
        await audit_switch_over(self.context, loaded, plan)
        seconds = (datetime.now(UTC) - began).total_seconds()
        return await self.records.completed(loaded, status, plan, seconds, counts.describe())

    async def _target_gone(self, namespace: str, target: str) -> str | None:
        """Why the target Environment may not have its database replaced now: it no
        longer exists, or is being deleted; None while it stands."""
        raw = await self.records.environments.read(namespace, target)
        if raw is None:
            return f"target environment {target} no longer exists"
        if (raw.get("metadata") or {}).get("deletionTimestamp"):
            return f"target environment {target} is being deleted"
        return None


__all__ = ["RestoreAttempts"]
