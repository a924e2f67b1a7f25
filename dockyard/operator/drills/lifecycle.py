"""The RestoreDrill life cycle: restore a backup into a scratch database, check it, record it.

``DrillRuns.tick`` is the one entry point of the handlers (create, update, resume, and
a timer every ``backup_schedule_interval`` seconds). Under a lock per drill it reads the
drill afresh and, in this order:

1. drops the scratch databases whose keep window (``spec.scratch.keepFor``) is over,
   and all kept ones once the drill's Environment is gone or being deleted (they are
   owned by its role, and the environment's deletion cannot drop a role that owns one);
2. follows a run recorded in ``status.currentRun`` that no task of this process is
   executing: its runner Job, if it has one (also after a restart), else the run was
   interrupted (the operator died mid-run): its scratch database is dropped, and the
   run is started again (``attempts`` + 1) or, after ``backup_max_attempts``, recorded
   as Failed with reason "interrupted". Nothing stays in progress without a runner;
3. applies ``drill_plan.plan_tick``: when a run is due (cron or the run-now annotation)
   it chooses the backup, writes ``status.currentRun`` (with the scratch database's
   name) *before* anything is restored, removes the annotation, and starts the run in
   a task of its own, so a pass never waits for a restore.

A run creates the scratch database owned by the environment's role, restores the
backup into it (checksum first: a flipped byte fails before the database is touched),
and runs the checks (``drill_checks``). Inline, all of it happens in a task, in one of
the ``backup_concurrency`` slots it shares with backups and restores. With ``runner:
Job`` the pass makes the database and the runner Job (which connects as that role),
and later passes follow the Job: while it works the tick says to look again in
``RUNNER_POLL_SECONDS``; once it finished the checks run in a task (in a slot).
Restore seconds (the measured RTO) run from creating the database (the Job) to the end
of the restore; the backup's age (the measured RPO) is taken when the run starts. The
run is then recorded, in this order: the ``drill_runs`` row (its failure is logged;
the status stays authoritative), the verdict on the Backup (``verification``: on a
pass its ``status.verified`` and catalog row), then the drill's status (``lastRun``,
bounded ``history``, Passing, ``currentRun`` cleared), so whoever sees the run in the
status finds the row and the verdict written; then Events and metrics. An operator
dying between the first and the last step runs the drill again (one more row).
Keeping and dropping scratch databases is ``scratch``'s part.

Deleting a drill (the operator's finalizer) stops its run and drops every scratch
database whose name carries the drill's uid, recorded or not.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg
from pydantic import ValidationError

from dockyard.core.attempts import RecoveryAction, RetryPolicy, recover_interrupted
from dockyard.core.conditions import find, set_condition
from dockyard.core.kube import KubeError
from dockyard.core.metrics import DrillMetrics
from dockyard.core.models.backup import Backup, BackupRunner
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.restore_drill import (
    DrillCurrentRun,
    DrillResult,
    DrillRun,
    FailedCheck,
    RestoreDrill,
    RestoreDrillConditionType,
    RestoreDrillStatus,
)
from dockyard.core.models.scheduling import RUN_NOW_ANNOTATION
from dockyard.core.resources import BACKUPS, RESTORE_DRILLS
from dockyard.operator.apply import get
from dockyard.operator.backups.lifecycle import post
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.database import ManagedDatabaseError, TenantLogin
from dockyard.operator.drills import log as drill_log
from dockyard.operator.drills.checks import run_checks
from dockyard.operator.drills.plan import (
    RESTORE_CHECK,
    backup_age_seconds,
    choose_backup,
    described,
    drillable,
    failed,
    judge_run,
    no_backup_message,
    passing_condition,
    plan_tick,
    recorded_scratch,
    scratch_database,
)
from dockyard.operator.drills.scratch import ScratchDatabases
from dockyard.operator.drills.verification import record_verdict
from dockyard.operator.outcomes import Outcome
from dockyard.operator.runs import jobs
from dockyard.operator.runs.context import (
    Loaded,
    RunCancelled,
    RunContext,
    RunDeadlineExceeded,
    tenant_login,
)
from dockyard.operator.runs.restoring import fresh_database, restore_backup
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

# How long deleting a drill waits for its cancelled run to stop.
CANCEL_WAIT_SECONDS: Final = 30.0


class _Loaded(Loaded[RestoreDrill]):
    __slots__ = ()

    @property
    def drill(self) -> RestoreDrill:
        return self.resource


class DrillRuns:
    """Drives RestoreDrills; one per operator, kept in the memo beside its ``RunContext``."""

    def __init__(self, context: RunContext, metrics: DrillMetrics | None = None) -> None:
        self.context = context
        self.metrics = metrics if metrics is not None else DrillMetrics()
        self.scratch = ScratchDatabases(context)
        # An interrupted run is started again at the next pass: the cause (the operator
        # died) is gone by then, so there is nothing to wait for.
        self.policy = RetryPolicy(
            max_attempts=context.settings.backup_max_attempts,
            base_delay_seconds=0.0,
            max_delay_seconds=0.0,
        )
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Drills whose run's Job this process started or took up after a restart: such a
        # Job missing is a runner gone, any other a run never begun.
        self._following: set[str] = set()

    # -- entry points ----------------------------------------------------------------------

    def running(self, uid: str) -> bool:
        """Whether this process executes (or is about to execute) a run of drill ``uid``."""
        return uid in self._tasks or self.context.running_here(uid)

    async def tick(self, namespace: str, name: str, now: datetime | None = None) -> Outcome:
        """One pass; passes over one drill never interleave, nor with its run's record.

        Again after ``RUNNER_POLL_SECONDS`` while the drill's run waits for its Job."""
        async with self._lock(namespace, name):
            return await self._tick(namespace, name, now or datetime.now(UTC))

    async def finalize(self, namespace: str, name: str, body: Mapping[str, Any]) -> Outcome:
        """Stop the drill's run and drop all its scratch databases, then let it go."""
        uid = str((body.get("metadata") or {}).get("uid") or "")
        async with self._lock(namespace, name):
            task = self._tasks.get(uid)
            if task is not None:
                task.cancel()
                await asyncio.wait({task}, timeout=CANCEL_WAIT_SECONDS)
            self._following.discard(uid)
            if uid and (body.get("spec") or {}).get("runner") == BackupRunner.JOB.value:
                # Its Job may still be writing into a scratch database: stopped first.
                await stop_runner_jobs(self.context.kube, namespace, uid)
            try:
                status = RestoreDrillStatus.model_validate(body.get("status") or {})
            except ValidationError:
                status = RestoreDrillStatus()
            names = recorded_scratch(status)
            if uid and self.context.postgres is not None:
                try:
                    names |= set(await self.scratch.on_server(uid))
                except ManagedDatabaseError as exc:
                    return Outcome.again(f"scratch databases not listed: {exc.message}")
            undropped = await self.scratch.drop(names, raw=body)
        if undropped:
            return Outcome.again(f"scratch databases not dropped yet: {', '.join(undropped)}")
        if names:
            post(body, reason="ScratchDropped", message=f"Dropped {', '.join(sorted(names))}")
        self.forget(namespace, name)
        return Outcome.done()

    def forget(self, namespace: str, name: str) -> None:
        self._locks.pop((namespace, name), None)
        self.metrics.forget(namespace=namespace, drill=name)

    # -- one pass --------------------------------------------------------------------------

    def _lock(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    async def _tick(self, namespace: str, name: str, now: datetime) -> Outcome:
        loaded = await self._load(namespace, name)
        if loaded is None:
            return Outcome.done()
        status = await self.scratch.expire(loaded.drill, loaded.raw, now)
        status = await self.scratch.release(loaded.drill, loaded.raw, status)
        current = status.current_run
        # A run that no task of this process executes: followed (its Job), or recovered.
        if (
            current is not None
            and not self.running(loaded.uid)
            and not await self._follow(loaded, status, current, now)
        ):
            return self._outcome(loaded)
        plan = plan_tick(loaded.drill.model_copy(update={"status": status}), now)
        status = plan.status
        start: tuple[Backup, DrillCurrentRun] | None = None
        if plan.start:
            status, start = await self._prepare(loaded, status, now)
        await self._write(loaded, status)
        if plan.run_now:
            # Removed once the run started (or found nothing to restore), as documented.
            await self._patch(loaded, {"metadata": {"annotations": {RUN_NOW_ANNOTATION: None}}})
        if plan.skipped is not None:
            post(loaded.raw, reason="Skipped", message=plan.skipped)
        self._announce_ready(loaded, status)
        if start is not None:
            backup, run = start
            post(
                loaded.raw,
                reason="Started",
                message=f"Restoring Backup {run.backup} into {run.scratch_database}",
            )
            await self._begin(loaded, status, backup, run)
        return self._outcome(loaded)

    def _outcome(self, loaded: _Loaded) -> Outcome:
        """Look again soon while the drill's run is in a Job this process follows."""
        if loaded.uid in self._following:
            return Outcome.again("the run's Job is restoring", delay=RUNNER_POLL_SECONDS)
        return Outcome.done()

    async def _prepare(
        self, loaded: _Loaded, status: RestoreDrillStatus, now: datetime
    ) -> tuple[RestoreDrillStatus, tuple[Backup, DrillCurrentRun] | None]:
        """The status of a run starting now, and what it restores; or why nothing is."""
        spec = loaded.drill.spec
        environment = spec.environment_ref.name
        backup = choose_backup(
            await self._backups(loaded.namespace), environment, spec.backup_selection, now
        )
        if backup is None:
            message = no_backup_message(environment, spec.backup_selection)
            post(loaded.raw, reason="NoBackup", message=message, warning=True)
            conditions = set_condition(
                status.conditions,
                type=RestoreDrillConditionType.PASSING,
                status=ConditionStatus.FALSE,
                reason="NoBackup",
                message=message,
                generation=loaded.generation,
                now=now,
            )
            return status.model_copy(update={"conditions": conditions}), None
        recorded = recorded_scratch(status)
        try:
            on_server = set(await self.scratch.on_server(loaded.uid))
        except ManagedDatabaseError as exc:
            # The run will say what is wrong with the server; name it from the record.
            logger.warning("scratch databases not listed", extra={"error": exc.message})
            on_server = set()
        # Left behind by a record that never got written: nothing refers to them.
        await self.scratch.drop(on_server - recorded, raw=loaded.raw)
        current = DrillCurrentRun(
            backup=backup.metadata.name or "",
            started_at=now,
            scratch_database=scratch_database(loaded.uid, recorded | on_server),
            attempts=1,
        )
        return described(status.model_copy(update={"current_run": current})), (backup, current)

    async def _recover(
        self,
        loaded: _Loaded,
        status: RestoreDrillStatus,
        current: DrillCurrentRun,
        now: datetime,
    ) -> None:
        """The run in ``current`` was interrupted: start it again, or record it Failed."""
        recovery = recover_interrupted(
            attempts=current.attempts, runner_alive=False, policy=self.policy
        )
        scratch = current.scratch_database
        if loaded.drill.spec.runner is BackupRunner.JOB:
            # Its Job may still be writing into the scratch database: stopped first.
            self._following.discard(loaded.uid)
            await stop_runner_jobs(self.context.kube, loaded.namespace, loaded.uid)
        undropped = await self.scratch.drop([scratch] if scratch else [], raw=loaded.raw)
        if recovery.action is RecoveryAction.RETRY:
            backup = await self._backup(loaded.namespace, current.backup)
            if backup is not None and drillable(backup, loaded.drill.spec.environment_ref.name):
                again = current.model_copy(update={"attempts": recovery.next_attempt})
                retried = described(status.model_copy(update={"current_run": again}))
                await self._write(loaded, retried)
                post(loaded.raw, reason="AttemptFailed", message=recovery.message, warning=True)
                await self._begin(loaded, retried, backup, again)
                return
            reason = f"Backup {current.backup} is gone or no longer completed"
        else:
            reason = recovery.message
        run = judge_run(
            backup=current.backup,
            backup_size=None,
            started_at=current.started_at,
            finished_at=now,
            restore_seconds=None,
            backup_age_seconds=None,
            objectives=loaded.drill.spec.objectives,
            failures=[failed(RESTORE_CHECK, reason)],
            scratch_database=scratch if undropped else None,
        )
        await self._finish(loaded, status, run, backup=None, now=now)

    # -- a run -----------------------------------------------------------------------------

    async def _begin(
        self, loaded: _Loaded, status: RestoreDrillStatus, backup: Backup, current: DrillCurrentRun
    ) -> None:
        """Start the run ``status`` records: in a task of its own, or its Job."""
        if loaded.drill.spec.runner is BackupRunner.JOB:
            await self._start_job(loaded, status, backup, current)
        else:
            self._spawn(loaded, backup, current, self._execute(loaded, backup, current))

    def _spawn(
        self,
        loaded: _Loaded,
        backup: Backup,
        current: DrillCurrentRun,
        work: Coroutine[Any, Any, DrillRun],
    ) -> None:
        uid = loaded.uid
        task = asyncio.create_task(
            self._run(loaded, backup, current, work),
            name=f"drill {loaded.namespace}/{loaded.name}",
        )
        self._tasks[uid] = task

        def done(finished: asyncio.Task[None]) -> None:
            if self._tasks.get(uid) is finished:
                del self._tasks[uid]

        task.add_done_callback(done)

    async def _run(
        self,
        loaded: _Loaded,
        backup: Backup,
        current: DrillCurrentRun,
        work: Coroutine[Any, Any, DrillRun],
    ) -> None:
        try:
            run = await self.context.inline(loaded.uid, work)
        except RunDeadlineExceeded as exc:
            run = self._judged(loaded, backup, current, [failed(RESTORE_CHECK, exc.message)])
        except RunCancelled:
            return  # the drill is being deleted; its finalizer drops the database
        except Exception:
            # Not a failed check but a fault (the API server refused a read, a bug): the
            # run stays in status.currentRun and the next pass retries it as interrupted.
            logger.exception(
                "drill run stopped by an error; the next pass retries it",
                extra={"namespace": loaded.namespace, "drill": loaded.name},
            )
            return
        async with self._lock(loaded.namespace, loaded.name):
            fresh = await self._load(loaded.namespace, loaded.name)
            if fresh is None or fresh.uid != loaded.uid:
                return  # deleted meanwhile: the finalizer drops the database
            await self._finish(fresh, fresh.drill.status, run, backup=backup)

    async def _execute(self, loaded: _Loaded, backup: Backup, current: DrillCurrentRun) -> DrillRun:
        """Restore in this process, check, judge: the run's record (failures are checks,
        not exceptions)."""
        scratch = self._scratch(loaded, current)
        clock = time.monotonic()
        try:
            tenant = await tenant_login(
                self.context.kube, loaded.namespace, loaded.drill.spec.environment_ref.name
            )
            await fresh_database(self.context, scratch, owner=tenant)
            await restore_backup(self.context, backup, database=scratch, tenant=tenant)
        except BackupError as exc:
            return self._judged(loaded, backup, current, [failed(RESTORE_CHECK, exc.message)])
        return await self._check(loaded, backup, current, time.monotonic() - clock, tenant)

    async def _check(
        self,
        loaded: _Loaded,
        backup: Backup,
        current: DrillCurrentRun,
        restore_seconds: float | None,
        tenant: TenantLogin | None = None,
    ) -> DrillRun:
        """The checks on the restored scratch database, and the run's verdict."""
        spec = loaded.drill.spec
        try:
            if tenant is None:
                tenant = await tenant_login(
                    self.context.kube, loaded.namespace, spec.environment_ref.name
                )
        except BackupError as exc:
            return self._judged(loaded, backup, current, [failed(RESTORE_CHECK, exc.message)])
        scratch = self._scratch(loaded, current)
        failures = await run_checks(
            self.context, backup, spec.checks, database=scratch, tenant=tenant
        )
        return self._judged(loaded, backup, current, failures, restore_seconds)

    def _judged(
        self,
        loaded: _Loaded,
        backup: Backup | None,
        current: DrillCurrentRun,
        failures: list[FailedCheck],
        restore_seconds: float | None = None,
    ) -> DrillRun:
        """The record of the run in ``current``, finished now, its scratch database kept."""
        return judge_run(
            backup=current.backup,
            backup_size=backup.status.size if backup is not None else None,
            started_at=current.started_at,
            finished_at=datetime.now(UTC),
            restore_seconds=restore_seconds,
            backup_age_seconds=(
                backup_age_seconds(backup, current.started_at) if backup is not None else None
            ),
            objectives=loaded.drill.spec.objectives,
            failures=failures,
            scratch_database=self._scratch(loaded, current),
        )

    @staticmethod
    def _scratch(loaded: _Loaded, current: DrillCurrentRun) -> str:
        return current.scratch_database or scratch_database(loaded.uid, ())

    # -- runner: Job -----------------------------------------------------------------------

    def _job(self, loaded: _Loaded, current: DrillCurrentRun) -> RestoreJob:
        """The runner Job of the run's attempt: one per attempt, named for both."""
        run = self._scratch(loaded, current).rsplit("_", 1)[-1]  # the scratch's number
        return RestoreJob(
            owner=Owner.of(loaded.drill),
            name=jobs.job_name(f"{loaded.name}-{run}", current.attempts, kind="drill"),
            runner="drill",
            environment=loaded.drill.spec.environment_ref.name,
        )

    async def _start_job(
        self, loaded: _Loaded, status: RestoreDrillStatus, backup: Backup, current: DrillCurrentRun
    ) -> None:
        """Make the scratch database and the attempt's Job; later passes follow it."""
        scratch = self._scratch(loaded, current)
        try:
            tenant = await tenant_login(
                self.context.kube, loaded.namespace, loaded.drill.spec.environment_ref.name
            )
            await fresh_database(self.context, scratch, owner=tenant)
            await start_restore_job(
                self.context, backup, database=scratch, job=self._job(loaded, current)
            )
        except BackupError as exc:
            run = self._judged(loaded, backup, current, [failed(RESTORE_CHECK, exc.message)])
            await self._finish(loaded, status, run, backup=backup)
            return
        self._following.add(loaded.uid)

    async def _follow(
        self,
        loaded: _Loaded,
        status: RestoreDrillStatus,
        current: DrillCurrentRun,
        now: datetime,
    ) -> bool:
        """The run in ``current``, which no task of this process executes: follow its Job,
        or recover it. Whether the pass goes on (nothing was recorded)."""
        if loaded.drill.spec.runner is not BackupRunner.JOB:
            await self._recover(loaded, status, current, now)
            return False
        job = await read_job(self.context.kube, loaded.namespace, self._job(loaded, current).name)
        if job.state == "Missing" and loaded.uid not in self._following:
            # Recorded but never made: the operator that started it died in between.
            await self._recover(loaded, status, current, now)
            return False
        # A Job found after a restart is a runner still there: followed, as a Backup's is.
        self._following.add(loaded.uid)
        failure: BackupError | None = None
        try:
            if await job_result(self.context, job, now) is None:
                return True
        except BackupError as exc:
            failure = exc
        self._following.discard(loaded.uid)
        backup = await self._backup(loaded.namespace, current.backup)
        if failure is not None or backup is None:
            reason = failure.message if failure else f"Backup {current.backup} is gone"
            run = self._judged(loaded, backup, current, [failed(RESTORE_CHECK, reason)])
            await self._finish(loaded, status, run, backup=backup, now=now)
            return False
        self._spawn(loaded, backup, current, self._check(loaded, backup, current, job.seconds(now)))
        return True

    async def _finish(
        self,
        loaded: _Loaded,
        status: RestoreDrillStatus,
        run: DrillRun,
        *,
        backup: Backup | None,
        now: datetime | None = None,
    ) -> None:
        """Record ``run``: the run log and the backup's verdict, then the drill's status
        (so a status showing the run means both are written), events and metrics."""
        spec = loaded.drill.spec
        after = status.with_run(run, spec.history_limit)
        after = described(
            passing_condition(after, run, loaded.generation, now or datetime.now(UTC))
        )
        await self._log_run(loaded, run)
        if backup is not None:
            await record_verdict(self.context, drill=loaded.name, chosen=backup, run=run)
        # Runs that fell off the bounded history take their kept databases with them.
        await self.scratch.drop(recorded_scratch(status) - recorded_scratch(after), raw=loaded.raw)
        await self._write(loaded, after)
        summary = (
            f"Backup {run.backup}: restored in {run.restore_seconds:.1f} s"
            if run.restore_seconds is not None
            else f"Backup {run.backup}: not restored"
        )
        if run.result is DrillResult.PASSED:
            post(loaded.raw, reason="Passed", message=f"{summary}; every check passed")
        else:
            reasons = "; ".join(f"{c.check}: {c.reason}" for c in run.failed_checks)
            post(loaded.raw, reason="Failed", message=f"{summary}; {reasons}", warning=True)
        self.metrics.observe(
            namespace=loaded.namespace,
            drill=loaded.name,
            result=run.result,
            restore_seconds=run.restore_seconds,
            backup_age_seconds=run.backup_age_seconds,
        )

    # -- reading and writing ---------------------------------------------------------------

    async def _load(self, namespace: str, name: str) -> _Loaded | None:
        raw = await get(self.context.kube, RESTORE_DRILLS.path(namespace, name))
        if raw is None or raw.get("metadata", {}).get("deletionTimestamp"):
            return None
        try:
            return _Loaded(raw, RestoreDrill.model_validate(raw))
        except ValidationError as exc:
            # The API server's schema makes this unreachable for stored objects.
            problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            logger.warning("invalid RestoreDrill", extra={"drill": name, "error": problem})
            return None

    async def _backups(self, namespace: str) -> list[Backup]:
        listing = await self.context.kube.get(BACKUPS.path(namespace))
        backups = []
        for item in listing.get("items", ()):
            try:
                backups.append(Backup.model_validate(item))
            except ValidationError:
                continue  # its own handler reports it; it is no candidate
        return backups

    async def _backup(self, namespace: str, name: str) -> Backup | None:
        raw = await get(self.context.kube, BACKUPS.path(namespace, name))
        try:
            return None if raw is None else Backup.model_validate(raw)
        except ValidationError:
            return None

    async def _write(self, loaded: _Loaded, status: RestoreDrillStatus) -> None:
        body = status.model_dump(mode="json", by_alias=True)
        if body == loaded.drill.status.model_dump(mode="json", by_alias=True):
            return
        await self._patch(loaded, {"status": body}, subresource="status")

    async def _patch(
        self, loaded: _Loaded, body: dict[str, Any], *, subresource: str | None = None
    ) -> None:
        path = RESTORE_DRILLS.path(loaded.namespace, loaded.name, subresource)
        try:
            await self.context.kube.merge_patch(path, body)
        except KubeError as exc:
            if exc.status != 404:  # deleted meanwhile: the finalizer cleans up
                raise

    def _announce_ready(self, loaded: _Loaded, status: RestoreDrillStatus) -> None:
        before = find(loaded.drill.status.conditions, RestoreDrillConditionType.READY)
        after = find(status.conditions, RestoreDrillConditionType.READY)
        if after is not None and (before is None or before.reason != after.reason):
            post(
                loaded.raw,
                reason=after.reason,
                message=after.message,
                warning=after.status is ConditionStatus.FALSE,
            )

    async def _log_run(self, loaded: _Loaded, run: DrillRun) -> None:
        catalog = self.context.catalog
        if catalog is None:
            return
        try:
            await drill_log.append_run(
                catalog.pool, namespace=loaded.namespace, drill=loaded.name, run=run
            )
        except (OSError, asyncpg.PostgresError) as exc:
            logger.warning(
                "drill run not logged in the platform database; it is in the status",
                extra={"namespace": loaded.namespace, "drill": loaded.name, "error": str(exc)},
            )


__all__ = ["RESTORE_DRILLS", "DrillRuns"]
