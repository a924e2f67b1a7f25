"""A drill run: the scratch database, the restore into it, the checks, the verdict.

``DrillRunner.begin`` starts the run ``status.currentRun`` records. Inline, all of it
happens in a task of its own (so a pass never waits for a restore), in one of the
``backup_concurrency`` slots it shares with backups and restores: the scratch database
owned by the environment's role, the restore (checksum first: a flipped byte fails
before the database is touched), the checks (``checks``), the verdict (``judging``).
With ``runner: Job`` the pass makes the database and the run's Job
(``drill-<name>-<run>-<attempt>``, which connects as that role); later passes
``follow`` it, and the one that finds it finished runs the checks in a task. No pass
waits for a Job. Either way the task records the run (``DrillRecords.finish``) under
the drill's lock. Restore seconds (the measured RTO) run from creating the database
(or the Job) to the end of the restore; the backup's age (the measured RPO) is taken
when the run starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum

from dockyard.core.models.backup import Backup, BackupRunner
from dockyard.core.models.drill_runs import DrillCurrentRun, DrillRun, FailedCheck
from dockyard.core.models.restore_drill import RestoreDrillStatus
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.database import TenantLogin
from dockyard.operator.drills.checks import run_checks
from dockyard.operator.drills.judging import RESTORE_CHECK, failed, judge_run, restore_failure
from dockyard.operator.drills.plan import backup_age_seconds
from dockyard.operator.drills.records import DrillRecords, LoadedDrill
from dockyard.operator.drills.scratch import scratch_database
from dockyard.operator.runs import jobs
from dockyard.operator.runs.context import tenant_login
from dockyard.operator.runs.inline import RunCancelled, RunDeadlineExceeded
from dockyard.operator.runs.restoring import fresh_database, restore_backup
from dockyard.operator.runs.runner_jobs import (
    RestoreJob,
    job_result,
    read_job,
    start_restore_job,
)
from dockyard.runner import BackupError

logger = logging.getLogger(__name__)

# How long deleting a drill waits for its cancelled run to stop.
CANCEL_WAIT_SECONDS = 30.0

Work = Callable[[], Awaitable[DrillRun]]


class Followed(StrEnum):
    """What following a run that no task of this process executes found."""

    RUNNING = "Running"
    """Its Job works, or its checks now do: the pass goes on."""
    RECORDED = "Recorded"
    """It ended and is recorded: the pass is over."""
    INTERRUPTED = "Interrupted"
    """Nothing runs it (the operator died): it is to be recovered."""


class DrillRunner:
    """Runs drills' runs: their tasks in this process, and the Jobs it follows."""

    def __init__(self, records: DrillRecords) -> None:
        self.records = records
        self.context = records.context
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # Drills whose run's Job this process started or took up after a restart: such a
        # Job missing is a runner gone, any other a run never begun.
        self._following: set[str] = set()

    def running(self, uid: str) -> bool:
        """Whether this process executes (or is about to execute) a run of drill ``uid``."""
        return uid in self._tasks or self.context.inline_runs.running_here(uid)

    def following(self, uid: str) -> bool:
        """Whether the run of drill ``uid`` is in a Job this process follows."""
        return uid in self._following

    async def begin(
        self,
        loaded: LoadedDrill,
        status: RestoreDrillStatus,
        backup: Backup,
        current: DrillCurrentRun,
    ) -> None:
        """Start the run ``status`` records: in a task of its own, or its Job (the scratch
        database and the Job are made now; later passes follow it)."""
        if loaded.drill.spec.runner is not BackupRunner.JOB:
            self._spawn(loaded, backup, current, lambda: self._execute(loaded, backup, current))
            return
        try:
            await self._fresh_scratch(loaded, current)
            job = self._job(loaded, current)
            await start_restore_job(
                self.context, backup, database=_scratch(loaded, current), job=job
            )
        except BackupError as exc:
            run = self.judged(loaded, backup, current, [restore_failure(exc)])
            await self.records.finish(loaded, status, run, backup=backup)
            return
        self._following.add(loaded.uid)

    async def follow(
        self,
        loaded: LoadedDrill,
        status: RestoreDrillStatus,
        current: DrillCurrentRun,
        now: datetime,
    ) -> Followed:
        """The run in ``current``, which no task of this process executes: its Job's
        progress, or ``INTERRUPTED`` when it has none."""
        if loaded.drill.spec.runner is not BackupRunner.JOB:
            return Followed.INTERRUPTED
        name = self._job(loaded, current).name
        job = await read_job(self.context.kube, loaded.namespace, name, owner_uid=loaded.uid)
        if job.state == "Missing" and loaded.uid not in self._following:
            return Followed.INTERRUPTED  # recorded but never made: the operator died first
        # A Job found after a restart is a runner still there: followed, as a Backup's is.
        self._following.add(loaded.uid)
        failure: BackupError | None = None
        try:
            if await job_result(self.context, job, now) is None:
                return Followed.RUNNING
        except BackupError as exc:
            failure = exc
        self._following.discard(loaded.uid)
        found = await self.records.backups.find(loaded.namespace, current.backup)
        backup = same_backup(found, current)
        if failure is not None or backup is None:
            gone = "was replaced by another of the same name" if found else "is gone"
            why = (
                restore_failure(failure)
                if failure is not None
                else failed(RESTORE_CHECK, f"Backup {current.backup} {gone}")
            )
            run = self.judged(loaded, backup, current, [why])
            await self.records.finish(loaded, status, run, backup=backup, now=now)
            return Followed.RECORDED
        seconds = job.seconds(now)
        self._spawn(loaded, backup, current, lambda: self._check(loaded, backup, current, seconds))
        return Followed.RUNNING

    async def stop(self, uid: str) -> None:
        """Stop the drill's run in this process (its task; its Job is no longer followed)."""
        self._following.discard(uid)
        task = self._tasks.get(uid)
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=CANCEL_WAIT_SECONDS)

    def judged(
        self,
        loaded: LoadedDrill,
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
            scratch_database=_scratch(loaded, current),
        )

    # -- in a task -------------------------------------------------------------------------

    def _spawn(
        self, loaded: LoadedDrill, backup: Backup, current: DrillCurrentRun, work: Work
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
        self, loaded: LoadedDrill, backup: Backup, current: DrillCurrentRun, work: Work
    ) -> None:
        try:
            run = await self.context.inline_runs.run(
                loaded.uid,
                work(),
                path=self.records.drills.path(loaded.namespace, loaded.name),
                namespace=loaded.namespace,
            )
        except RunDeadlineExceeded as exc:
            run = self.judged(loaded, backup, current, [restore_failure(exc)])
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
        async with self.records.lock(loaded.namespace, loaded.name):
            fresh = await self.records.load(loaded.namespace, loaded.name)
            if fresh is None or fresh.uid != loaded.uid:
                return  # deleted meanwhile: the finalizer drops the database
            await self.records.finish(fresh, fresh.drill.status, run, backup=backup)

    async def _execute(
        self, loaded: LoadedDrill, backup: Backup, current: DrillCurrentRun
    ) -> DrillRun:
        """Restore in this process, check, judge: the run's record (failures are checks,
        not exceptions)."""
        clock = time.monotonic()
        try:
            tenant = await self._fresh_scratch(loaded, current)
            scratch = _scratch(loaded, current)
            await restore_backup(self.context, backup, database=scratch, tenant=tenant)
        except BackupError as exc:
            return self.judged(loaded, backup, current, [restore_failure(exc)])
        return await self._check(loaded, backup, current, time.monotonic() - clock, tenant)

    async def _check(
        self,
        loaded: LoadedDrill,
        backup: Backup,
        current: DrillCurrentRun,
        restore_seconds: float | None,
        tenant: TenantLogin | None = None,
    ) -> DrillRun:
        """The checks on the restored scratch database, and the run's verdict."""
        try:
            tenant = tenant or await self._tenant(loaded)
        except BackupError as exc:
            return self.judged(loaded, backup, current, [restore_failure(exc)])
        checks = loaded.drill.spec.checks
        scratch = _scratch(loaded, current)
        failures = await run_checks(self.context, backup, checks, database=scratch, tenant=tenant)
        return self.judged(loaded, backup, current, failures, restore_seconds)

    async def _tenant(self, loaded: LoadedDrill) -> TenantLogin:
        environment = loaded.drill.spec.environment_ref.name
        return await tenant_login(self.context.kube, loaded.namespace, environment)

    async def _fresh_scratch(self, loaded: LoadedDrill, current: DrillCurrentRun) -> TenantLogin:
        """The run's empty scratch database, owned by the environment's role; its login."""
        tenant = await self._tenant(loaded)
        await fresh_database(self.context, _scratch(loaded, current), owner=tenant)
        return tenant

    # -- runner: Job -----------------------------------------------------------------------

    @staticmethod
    def _job(loaded: LoadedDrill, current: DrillCurrentRun) -> RestoreJob:
        """The runner Job of the run's attempt: one per attempt, named for both. The
        scratch database's number alone does not name a run: it is used again once its
        database is dropped, while a finished Job stays an hour; the start time does."""
        number = _scratch(loaded, current).rsplit("_", 1)[-1]
        run = f"{number}-{current.started_at.astimezone(UTC):%Y%m%d%H%M%S}"
        return RestoreJob(
            owner=Owner.of(loaded.drill),
            name=jobs.job_name(f"{loaded.name}-{run}", current.attempts, kind="drill"),
            runner="drill",
            environment=loaded.drill.spec.environment_ref.name,
        )


def _scratch(loaded: LoadedDrill, current: DrillCurrentRun) -> str:
    """The run's scratch database (the first free name, for a record without one)."""
    return current.scratch_database or scratch_database(loaded.uid, ())


def same_backup(backup: Backup | None, current: DrillCurrentRun) -> Backup | None:
    """``backup`` if it is the one the run in ``current`` restores; ``None`` when it is
    gone or another Backup now has its name (that one was never restored: its
    verification would be a lie)."""
    if backup is None or current.backup_uid in (None, backup.metadata.uid):
        return backup
    return None


__all__ = ["CANCEL_WAIT_SECONDS", "DrillRunner", "Followed", "same_backup"]
