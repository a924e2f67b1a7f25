"""The RestoreDrill life cycle: restore a backup into a scratch database, check it, record it.

``DrillRuns.tick`` is the one entry point of the handlers (create, update, resume, and
a timer every ``backup_schedule_interval`` seconds). Under a lock per drill it reads the
drill afresh and, in this order:

1. drops the scratch databases whose keep window (``spec.scratch.keepFor``) is over,
   and all kept ones once the drill's Environment is gone or being deleted (they are
   owned by its role, and the environment's deletion cannot drop a role that owns one);
2. follows a run recorded in ``status.currentRun`` that no task of this process is
   executing: its runner Job, if it has one (also after a restart); else the run was
   interrupted (the operator died mid-run): its scratch database is dropped, and the
   run is started again (``attempts`` + 1) or, after ``backup_max_attempts``, recorded
   as Failed with reason "interrupted". Nothing stays in progress without a runner;
3. applies ``plan.plan_tick``: when a run is due (cron or the run-now annotation) it
   chooses the backup, writes ``status.currentRun`` (with the scratch database's name)
   *before* anything is restored, removes the annotation, and starts the run
   (``running``): in a task of its own, or its runner Job, so a pass never waits for a
   restore.

While the run's Job works the tick ends with ``Outcome.again`` after
``RUNNER_POLL_SECONDS``, which the timer turns into its next call. A finished run is
recorded by ``records.DrillRecords.finish``; an operator dying before its status is
written runs the drill again (one more ``drill_runs`` row). Keeping and dropping
scratch databases is ``scratch``'s part.

Deleting a drill (the operator's finalizer) stops its run (its task, its Job) and drops
every scratch database whose name carries the drill's uid, recorded or not.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any

from dockyard.core.attempts import RecoveryAction, RetryPolicy, recover_interrupted
from dockyard.core.metrics import DrillMetrics
from dockyard.core.models.backup import Backup
from dockyard.core.models.drill_runs import DrillCurrentRun
from dockyard.core.models.restore_drill import RestoreDrillConditionType, RestoreDrillStatus
from dockyard.core.models.scheduling import RUN_NOW_ANNOTATION
from dockyard.operator.database import ManagedDatabaseError
from dockyard.operator.drills.judging import RESTORE_CHECK, RUN_CHECK, failed, judge_run
from dockyard.operator.drills.plan import (
    choose_backup,
    described,
    drillable,
    no_backup_message,
    plan_tick,
)
from dockyard.operator.drills.records import DrillRecords, LoadedDrill
from dockyard.operator.drills.running import DrillRunner, Followed, same_backup
from dockyard.operator.drills.scratch import ScratchDatabases, recorded_scratch, scratch_database
from dockyard.operator.outcomes import Outcome
from dockyard.operator.runs.context import RunContext
from dockyard.operator.runs.outages import pause_while_out
from dockyard.operator.runs.runner_jobs import RUNNER_POLL_SECONDS, stop_runner_jobs
from dockyard.operator.store import post

logger = logging.getLogger(__name__)


class DrillRuns:
    """Drives RestoreDrills; one per operator, in its services beside its ``RunContext``."""

    def __init__(self, context: RunContext, metrics: DrillMetrics | None = None) -> None:
        self.context = context
        self.metrics = metrics if metrics is not None else DrillMetrics()
        self.scratch = ScratchDatabases(context)
        self.records = DrillRecords(context, self.metrics, self.scratch)
        self.runner = DrillRunner(self.records)
        # An interrupted run is started again at the next pass: the cause (the operator
        # died) is gone by then, so there is nothing to wait for.
        self.policy = RetryPolicy(
            max_attempts=context.settings.backup_max_attempts,
            base_delay_seconds=0.0,
            max_delay_seconds=0.0,
        )

    # -- entry points ----------------------------------------------------------------------

    def running(self, uid: str) -> bool:
        """Whether this process executes (or is about to execute) a run of drill ``uid``."""
        return self.runner.running(uid)

    async def tick(self, namespace: str, name: str, now: datetime | None = None) -> Outcome:
        """One pass; passes over one drill never interleave, nor with its run's record.

        Again after ``RUNNER_POLL_SECONDS`` while the drill's run waits for its Job."""
        async with self.records.lock(namespace, name):
            return await self._tick(namespace, name, now or datetime.now(UTC))

    async def finalize(self, namespace: str, name: str, body: Mapping[str, Any]) -> Outcome:
        """Stop the drill's run and drop all its scratch databases, then let it go."""
        uid = str((body.get("metadata") or {}).get("uid") or "")
        async with self.records.lock(namespace, name):
            await self.runner.stop(uid)
            drill = next(iter(self.records.drills.valid([dict(body)])), None)
            if uid:
                # A Job may still be writing into a scratch database: stopped first, whatever
                # spec.runner says now (it may have changed since the run started).
                await stop_runner_jobs(self.context.kube, namespace, uid)
            names = recorded_scratch(drill.status if drill is not None else RestoreDrillStatus())
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
        self.records.forget(namespace, name)

    # -- one pass --------------------------------------------------------------------------

    async def _tick(self, namespace: str, name: str, now: datetime) -> Outcome:
        records = self.records
        loaded = await records.load(namespace, name)
        if loaded is None:
            return Outcome.done()
        status = await self.scratch.expire(loaded.drill, loaded.raw, now)
        status = await self.scratch.release(loaded.drill, loaded.raw, status)
        await self._sweep(loaded, status)
        current = status.current_run
        if current is not None and not self.running(loaded.uid):
            followed = await self.runner.follow(loaded, status, current, now)
            if followed is Followed.INTERRUPTED:
                await self._recover(loaded, status, current, now)
            if followed is not Followed.RUNNING:
                return self._outcome(loaded)
        plan = plan_tick(loaded.drill.model_copy(update={"status": status}), now)
        if plan.start and (waiting := await self._wait_for_database(loaded, status)):
            return waiting
        status = plan.status
        start: tuple[Backup, DrillCurrentRun] | None = None
        if plan.start:
            status, start = await self._prepare(loaded, status, now)
        await records.write(loaded, status)
        if plan.run_now:
            # Removed once the run started (or found nothing to restore), as documented.
            await records.patch(loaded, {"metadata": {"annotations": {RUN_NOW_ANNOTATION: None}}})
        if plan.skipped is not None:
            post(loaded.raw, reason="Skipped", message=plan.skipped)
        records.announce_ready(loaded, status)
        if start is not None:
            backup, run = start
            post(
                loaded.raw,
                reason="Started",
                message=f"Restoring Backup {run.backup} into {run.scratch_database}",
            )
            await self.runner.begin(loaded, status, backup, run)
        return self._outcome(loaded)

    async def _sweep(self, loaded: LoadedDrill, status: RestoreDrillStatus) -> None:
        """Drop the drill's scratch databases no record names: left by a drop that failed
        as their run fell off the history, or by a record never written. A run's record
        is written before its database is made, so none in use is unnamed."""
        try:
            on_server = set(await self.scratch.on_server(loaded.uid))
        except ManagedDatabaseError as exc:
            logger.warning("scratch databases not listed", extra={"error": exc.message})
            return
        await self.scratch.drop(on_server - recorded_scratch(status), raw=loaded.raw)

    async def _wait_for_database(
        self, loaded: LoadedDrill, status: RestoreDrillStatus
    ) -> Outcome | None:
        """A due run waits while its environment's database server is out: a drill
        failed by an outage would say nothing about the backups. The schedule is not
        moved on (nor ``run-now`` removed), so the next tick starts the run once the
        server answers."""
        environment = loaded.drill.spec.environment_ref.name
        write = partial(self.records.write, loaded)
        return await pause_while_out(self.context, loaded, environment, status, write)

    def _outcome(self, loaded: LoadedDrill) -> Outcome:
        """Look again soon while the drill's run is in a Job this process follows."""
        if self.runner.following(loaded.uid):
            return Outcome.again("the run's Job is restoring", delay=RUNNER_POLL_SECONDS)
        return Outcome.done()

    async def _prepare(
        self, loaded: LoadedDrill, status: RestoreDrillStatus, now: datetime
    ) -> tuple[RestoreDrillStatus, tuple[Backup, DrillCurrentRun] | None]:
        """The status of a run starting now, and what it restores; or why nothing is."""
        spec = loaded.drill.spec
        environment = spec.environment_ref.name
        backups = await self.records.backups.in_namespace(loaded.namespace)
        backup = choose_backup(backups, environment, spec.backup_selection, now)
        if backup is None:
            message = no_backup_message(environment, spec.backup_selection)
            post(loaded.raw, reason="NoBackup", message=message, warning=True)
            failing = status.with_condition(
                RestoreDrillConditionType.PASSING,
                False,
                "NoBackup",
                message,
                generation=loaded.generation,
                now=now,
            )
            return failing, None
        recorded = recorded_scratch(status)
        try:
            on_server = set(await self.scratch.on_server(loaded.uid))
        except ManagedDatabaseError as exc:
            # The run will say what is wrong with the server; name it from the record.
            logger.warning("scratch databases not listed", extra={"error": exc.message})
            on_server = set()
        # Unrecorded ones were dropped at the start of this pass (``_sweep``); one that
        # could not be is still there, and its name is not taken again.
        current = DrillCurrentRun(
            backup=backup.metadata.name or "",
            backup_uid=backup.metadata.uid,
            started_at=now,
            scratch_database=scratch_database(loaded.uid, recorded | on_server),
            attempts=1,
        )
        started = status.model_copy(update={"current_run": current})
        return described(started.database_back(generation=loaded.generation)), (backup, current)

    async def _recover(
        self,
        loaded: LoadedDrill,
        status: RestoreDrillStatus,
        current: DrillCurrentRun,
        now: datetime,
    ) -> None:
        """The run in ``current`` was interrupted: start it again, or record it Failed."""
        recovery = recover_interrupted(
            attempts=current.attempts, runner_alive=False, policy=self.policy
        )
        scratch = current.scratch_database
        # A Job may still be writing into the scratch database: stopped first, whatever
        # spec.runner says now (a run started in a Job whose drill was since switched to
        # Inline is found interrupted, and retried inline once its Job is gone).
        await stop_runner_jobs(self.context.kube, loaded.namespace, loaded.uid)
        undropped = await self.scratch.drop([scratch] if scratch else [], raw=loaded.raw)
        if recovery.action is RecoveryAction.RETRY:
            backup = same_backup(
                await self.records.backups.find(loaded.namespace, current.backup), current
            )
            if backup is not None and drillable(backup, loaded.drill.spec.environment_ref.name):
                again = current.model_copy(update={"attempts": recovery.next_attempt})
                retried = described(status.model_copy(update={"current_run": again}))
                await self.records.write(loaded, retried)
                post(loaded.raw, reason="AttemptFailed", message=recovery.message, warning=True)
                await self.runner.begin(loaded, retried, backup, again)
                return
            why = failed(RESTORE_CHECK, f"Backup {current.backup} is gone or no longer completed")
        else:
            why = failed(RUN_CHECK, recovery.message)  # interrupted: nothing about the backup
        run = judge_run(
            backup=current.backup,
            backup_size=None,
            started_at=current.started_at,
            finished_at=now,
            restore_seconds=None,
            backup_age_seconds=None,
            objectives=loaded.drill.spec.objectives,
            failures=[why],
            scratch_database=scratch if undropped else None,
        )
        await self.records.finish(loaded, status, run, backup=None, now=now)


__all__ = ["DrillRuns"]
