"""The Backup life cycle: Pending, Running (inline or in a Job), Completed or Failed.

One entry point, ``BackupRuns.drive``, serves creation and the resume at start-up: it
reads the Backup afresh and acts on its phase, so running it twice is harmless.

- Pending (or new): start attempt ``attempts + 1`` (status Running, startedAt, an
  Event), then run it inline (in the event loop, in one of ``backup_concurrency``
  slots) or create its Job and follow it.
- Running, found by a process that is not running it: the run was interrupted. An
  inline run died with the previous operator process, a Job may still be working;
  ``dockyard.core.attempts.recover_interrupted`` decides: follow the Job, or count the
  attempt as failed and retry after a backoff (status back to Pending with the reason),
  or give up (Failed). Nothing stays Running without a runner behind it.
- Completed: make sure the catalog has it (a status can get ahead of its row when the
  platform database was down; the pass is retried until the row is written).

While the managed PostgreSQL server does not answer, a Backup is paused rather than
failed: before an attempt starts, and after one fails, the server is asked
(``ManagedPostgres.ping``); if it does not answer, the Backup goes back to Pending with
a ``DatabaseUnavailable`` condition, the failed attempt is not counted, and the pass is
retried every ``outages.DATABASE_POLL_SECONDS`` until the server answers (a Job's failed
attempt is deleted first). A Job past ``DOCKYARD_RUN_DEADLINE`` fails it, not retried.

A run's success is committed in this order: the artifact (atomically, by the runner),
the catalog row, then the status (computed by ``backups.status``). Failures carry the
runner's ``BackupError.reason``. Deletion removes every artifact of the Backup's
attempts (the finalizer's job, in ``backups.deletion``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

import asyncpg

from dockyard.core.attempts import (
    Recovery,
    RecoveryAction,
    RetryPolicy,
    after_failure,
    recover_interrupted,
)
from dockyard.core.durations import parse_duration
from dockyard.core.models.backup import (
    Backup,
    BackupPhase,
    BackupRunner,
    BackupStatus,
)
from dockyard.core.models.environment import Environment
from dockyard.core.retention import ttl_expiry
from dockyard.operator.apply import apply_as
from dockyard.operator.backups import deletion as backup_deletion
from dockyard.operator.backups import starting
from dockyard.operator.backups import status as report
from dockyard.operator.backups.inline import attempt_inline
from dockyard.operator.backups.schedules import held_backups
from dockyard.operator.builders import environment as environment_builders
from dockyard.operator.outcomes import Outcome
from dockyard.operator.runs import jobs
from dockyard.operator.runs.catalog import CatalogEntry
from dockyard.operator.runs.context import (
    RunContext,
    artifact_location,
    artifact_name,
    load_key,
    retryable,
)
from dockyard.operator.runs.inline import RunCancelled, RunDeadlineExceeded, RunOrphaned
from dockyard.operator.runs.outages import pause_while_out
from dockyard.operator.runs.runner_jobs import (
    RunnerJob,
    apply_backup_runner_identity,
    check_deadline,
    clear_finished,
    read_job,
    runner_message,
)
from dockyard.operator.runs.stores import chosen_by_a_store, fill_from_store, filled
from dockyard.operator.store import KindStore, Loaded, OnInvalid, post
from dockyard.runner import ArtifactError, BackupError, BackupResult

logger = logging.getLogger(__name__)

# How often a Job-mode run is looked at while its Job works.
JOB_POLL_SECONDS: Final = 10.0
# How often a completed Backup whose catalog row was not written tries again.
CATALOG_RETRY_SECONDS: Final = 30.0
# How often a Backup that names no storage looks for a BackupStore again.
STORE_RETRY_SECONDS: Final = 15.0

_Loaded = Loaded[Backup]


def _with_status(loaded: _Loaded, status: BackupStatus) -> _Loaded:
    """``loaded`` as it is once ``status`` is written (what the catalog records)."""
    return Loaded(loaded.raw, loaded.resource.model_copy(update={"status": status}))


class BackupRuns:
    """Drives Backups; one per operator, kept in the memo beside its ``RunContext``."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self.backups = KindStore(context.kube, Backup)
        self.environments = KindStore(context.kube, Environment)
        settings = context.settings
        self.policy = RetryPolicy(
            max_attempts=settings.backup_max_attempts,
            base_delay_seconds=settings.backup_retry_delay,
            max_delay_seconds=max(settings.backup_retry_delay * 16, 1.0),
        )

    # -- entry points ----------------------------------------------------------------------

    async def drive(self, namespace: str, name: str) -> Outcome:
        """One step of the life cycle, for creation, the resume and retries."""
        loaded = await self.backups.load(namespace, name, on_invalid=OnInvalid.FAIL)
        if loaded is None:
            return Outcome.done()
        if loaded.resource.status.environment_tier is None:
            tier = await starting.record_tier(self.backups, self.environments, loaded)
            loaded = _with_status(
                loaded, loaded.resource.status.model_copy(update={"environment_tier": tier})
            )
        phase = loaded.resource.status.phase
        if phase is BackupPhase.COMPLETED:
            return await self._catalogued(loaded, quiet=True)
        if phase is BackupPhase.FAILED:
            return Outcome.done()
        if phase is BackupPhase.RUNNING:
            if self.context.inline_runs.running_here(loaded.uid):
                return Outcome.done()
            return await self._recover(loaded)
        return await self._start(loaded)

    async def expire(self, namespace: str, name: str) -> None:
        """Apply the Backup's ttl: record when it expires, delete it once it has.

        Deleting the object deletes the artifact through the finalizer. The newest
        backup of its environment that a drill verified is kept past its ttl, and so is
        one a Restore not finished or a drill's current run takes (``held_backups``). It
        is deleted only as read (its resourceVersion), as schedule retention deletes.
        """
        loaded = await self.backups.load(namespace, name, on_invalid=OnInvalid.FAIL)
        ttl = None if loaded is None else loaded.resource.spec.ttl
        if loaded is None or ttl is None:
            return
        backup, lifetime, now = loaded.resource, parse_duration(ttl), datetime.now(UTC)
        if (expiry := ttl_expiry(backup, lifetime, (), now)).delete:  # siblings count now
            expiry = ttl_expiry(backup, lifetime, await self.backups.in_namespace(namespace), now)
        if expiry.expires_at != backup.status.expires_at:
            at = expiry.expires_at.isoformat() if expiry.expires_at else None
            await self.backups.write_status(namespace, name, {"expiresAt": at}, uid=loaded.uid)
            return  # that write moved its resourceVersion on: the next pass decides
        if not expiry.delete or name in await held_backups(self.context.kube, namespace):
            return  # looked at again on the next timer, once the run that takes it is over
        # Changed since it was read (a drill verified it), it is left to the next pass.
        version = backup.metadata.resource_version
        if await self.backups.delete(namespace, name, uid=loaded.uid, resource_version=version):
            post(loaded.raw, reason="Expired", message=f"{expiry.reason}; deleting the backup")
            await self.context.audited(
                "DELETE backups (ttl)", "backups", namespace, name, str(expiry.reason), ttl=ttl
            )

    async def finalize(self, namespace: str, name: str, body: Mapping[str, Any]) -> Outcome:
        """Delete every artifact of the Backup's attempts (within a bound), then let it go."""
        return await backup_deletion.finalize(self.context, namespace, name, body)

    # -- the phases ------------------------------------------------------------------------

    async def _start(self, loaded: _Loaded) -> Outcome:
        backup = loaded.resource
        if backup.spec.storage is None or backup.spec.encryption is None:
            return await self._fill(loaded)
        if (paused := await self._pause_if_unreachable(loaded, backup.status.attempts)) is not None:
            return paused
        attempt = backup.status.attempts + 1
        started = report.started(
            backup.status,
            attempt=attempt,
            max_attempts=self.policy.max_attempts,
            runner=backup.spec.runner,
            generation=loaded.generation,
        )
        if backup.spec.runner is BackupRunner.JOB:
            return await self._start_job(loaded, started, attempt)
        # Marked as ours before Running is visible, so no other pass sees an orphan.
        try:
            return await self.context.inline_runs.run(
                loaded.uid,
                self._run_inline(loaded, started, attempt),
                path=self.backups.path(loaded.namespace, loaded.name),
                namespace=loaded.namespace,
            )
        except RunOrphaned:
            return Outcome.done()  # being deleted: its finalizer deletes what it stored
        except RunCancelled as exc:
            return await self._failed(loaded, started, exc)

    async def _fill(self, loaded: _Loaded) -> Outcome:
        """Take what the Backup does not name from its BackupStore; wait while there is none."""
        try:
            store = await fill_from_store(self.context.kube, loaded.resource)
        except BackupError as exc:
            status = loaded.resource.status
            message = f"Waiting for a BackupStore: {exc.message}"
            if status.message != message:
                post(loaded.raw, reason=exc.reason, message=exc.message, warning=True)
            waiting = status.retrying(message, reason=exc.reason, generation=loaded.generation)
            await self._write(loaded, waiting.observed(loaded.generation))
            return Outcome.again(message, delay=STORE_RETRY_SECONDS)
        if store is None:
            return Outcome.done()  # deleted meanwhile: nothing to run
        post(
            loaded.raw,
            reason="StoreAssigned",
            message=f"Storage and encryption key from BackupStore {store}",
        )
        return Outcome.again(f"filled from BackupStore {store}", delay=0.5)

    async def _run_inline(self, loaded: _Loaded, started: BackupStatus, attempt: int) -> Outcome:
        if not await starting.begin(self.backups, loaded, started):
            return Outcome.done()
        post(loaded.raw, reason="Started", message=f"Attempt {attempt} started (Inline)")
        backup = loaded.resource
        try:
            storage_spec, encryption = filled(backup)
            # Storage first: a spec that can never work fails before anything else.
            ambient = await chosen_by_a_store(self.context.kube, backup)
            async with self.context.quota(storage_spec, loaded.namespace) as quota:
                result = await attempt_inline(
                    self.context, loaded, attempt, storage_spec, encryption, ambient, quota
                )
                # Still counted against the quota until the catalog has it.
                return await self._complete(loaded, started, result)
        except BackupError as exc:
            return await self._failed(loaded, started, exc)

    async def _complete(
        self, loaded: _Loaded, status: BackupStatus, result: BackupResult
    ) -> Outcome:
        done = report.completed(status, result, loaded.generation)
        catalogued = await self._catalog(_with_status(loaded, done))
        await self._write(loaded, done)
        post(
            loaded.raw,
            reason="Completed",
            message=f"{done.message}; sha256 {result.sha256}, key {result.key_id}",
        )
        return Outcome.done() if catalogued else _catalog_again()

    async def _failed(self, loaded: _Loaded, status: BackupStatus, error: BackupError) -> Outcome:
        if retryable(error):
            # The attempt may have failed because the server went away: then it is
            # paused, and the attempt it used is not counted.
            uncounted = max(status.attempts - 1, 0)
            if (paused := await self._pause_if_unreachable(loaded, uncounted)) is not None:
                return paused
        recovery = after_failure(
            attempts=status.attempts,
            reason=f"{error.reason}: {error.message}",
            retryable=retryable(error),
            policy=self.policy,
        )
        return await self._apply_recovery(loaded, status, recovery, error.reason)

    async def _recover(self, loaded: _Loaded) -> Outcome:
        backup = loaded.resource
        if backup.spec.runner is BackupRunner.JOB:
            return await self._follow_job(loaded)
        recovery = recover_interrupted(
            attempts=backup.status.attempts, runner_alive=False, policy=self.policy
        )
        return await self._apply_recovery(loaded, backup.status, recovery, "Interrupted")

    async def _apply_recovery(
        self, loaded: _Loaded, status: BackupStatus, recovery: Recovery, reason: str
    ) -> Outcome:
        after = report.after_recovery(status, recovery, reason, loaded.generation)
        await self._write(loaded, after)
        if recovery.action is RecoveryAction.GIVE_UP:
            post(loaded.raw, reason="Failed", message=recovery.message, warning=True)
            await self._catalog(_with_status(loaded, after), quiet=True)
            return Outcome.done()
        post(loaded.raw, reason="AttemptFailed", message=recovery.message, warning=True)
        # Kopf calls drive again after the delay (kept across restarts in its annotations),
        # which finds the Backup Pending and starts the next attempt.
        return Outcome.again(recovery.message, delay=max(recovery.delay_seconds, 1.0))

    # -- Job mode --------------------------------------------------------------------------

    async def _start_job(self, loaded: _Loaded, started: BackupStatus, attempt: int) -> Outcome:
        backup = loaded.resource
        kube = self.context.kube
        try:
            key = await load_key(kube, loaded.namespace, filled(backup)[1].key_secret_ref)
            job = jobs.backup_job(
                backup,
                attempt=attempt,
                artifact=artifact_name(loaded.namespace, loaded.name, loaded.uid, attempt),
                key_id=key.key_id,
                database_secret=environment_builders.database_secret_name(
                    backup.spec.environment_ref.name
                ),
                image=self.context.settings.runner_image,
                deadline_seconds=self.context.settings.run_deadline,
            )
        except BackupError as exc:
            if not await starting.begin(self.backups, loaded, started):
                return Outcome.done()
            return await self._failed(loaded, started, exc)
        name = job["metadata"]["name"]
        if await clear_finished(kube, loaded.namespace, name, owner_uid=loaded.uid):
            return Outcome.again(f"deleting the earlier Job {name} of this attempt", delay=1.0)
        await apply_backup_runner_identity(kube, backup)
        # Running first: the runner may report its artifact only while the Backup is
        # Running (manifests/backup-runner-report-policy.yaml).
        if not await starting.begin(self.backups, loaded, started):
            return Outcome.done()
        try:
            await apply_as(kube, job)
        except Exception:
            # Not started after all (a quota refused the Job, say): the status as it was,
            # so that the retry starts this attempt again instead of counting it failed
            # (unless Replace cancelled it meanwhile: Failed stays).
            await starting.undo_begin(self.backups, loaded)
            raise
        if await starting.ended_meanwhile(self.context.kube, self.backups, loaded):
            return Outcome.done()
        post(
            loaded.raw,
            reason="Started",
            message=f"Attempt {attempt} started in Job {name}",
        )
        return Outcome.again("following the runner Job", delay=JOB_POLL_SECONDS)

    async def _follow_job(self, loaded: _Loaded) -> Outcome:
        status = loaded.resource.status
        name = jobs.job_name(loaded.name, max(status.attempts, 1))
        job = await read_job(self.context.kube, loaded.namespace, name, owner_uid=loaded.uid)
        try:
            await check_deadline(self.context, job)
        except RunDeadlineExceeded as exc:  # not retried: another run would take as long
            return await self._failed(loaded, status, exc)
        state = job.state
        if state == "Running":
            return Outcome.again(f"Job {name} is running", delay=JOB_POLL_SECONDS)
        if state == "Succeeded" and status.sha256 and status.location:
            secret = filled(loaded.resource)[1].key_secret_ref
            try:
                given = await load_key(self.context.kube, loaded.namespace, secret)
            except BackupError as exc:  # its key Secret went while the Job ran
                return await self._failed(loaded, status, exc)
            # The runner reports its artifact itself; where it goes and the key are the
            # operator's word.
            attempt = max(status.attempts, 1)
            artifact = artifact_name(loaded.namespace, loaded.name, loaded.uid, attempt)
            where = artifact_location(filled(loaded.resource)[0], artifact)
            if why := report.untrusted_report(status, name, location=where, key_id=given.key_id):
                return await self._failed(loaded, status, ArtifactError(why))
            done = report.completed_by_job(status, name, loaded.generation, at=job.completed_at)
            catalogued = await self._catalog(_with_status(loaded, done))
            await self._write(loaded, done)
            post(loaded.raw, reason="Completed", message=f"{done.message}; sha256 {done.sha256}")
            return Outcome.done() if catalogued else _catalog_again()
        reason = {
            "Missing": f"runner Job {name} is gone",
            "Failed": f"runner Job {name} failed",
            "Succeeded": f"runner Job {name} succeeded without reporting its artifact",
        }[state]
        if state == "Failed":
            reason += await self._runner_says(job)
            uncounted = max(status.attempts - 1, 0)
            if (paused := await self._pause_if_unreachable(loaded, uncounted)) is not None:
                return paused
        recovery = after_failure(attempts=status.attempts, reason=reason, policy=self.policy)
        return await self._apply_recovery(loaded, status, recovery, "RunnerFailed")

    async def _runner_says(self, job: RunnerJob) -> str:
        """``": <reason>: <message>"`` from the runner's termination message, if any."""
        error = jobs.runner_error(await runner_message(self.context.kube, job))
        return f": {error[0]}: {error[1]}" if error else ""

    # -- the database server going away -------------------------------------------------

    async def _pause_if_unreachable(self, loaded: _Loaded, attempts: int) -> Outcome | None:
        """Pause the Backup (Pending, ``attempts`` used) while its database server is
        out (:mod:`~dockyard.operator.runs.outages`); None when it answers."""
        status = loaded.resource.status

        def paused(reason: str, message: str) -> BackupStatus:
            return report.paused(
                status, attempts=attempts, reason=reason, message=message,
                generation=loaded.generation,
            )  # fmt: skip

        return await pause_while_out(
            self.context,
            loaded,
            loaded.resource.spec.environment_ref.name,
            status,
            partial(self._write, loaded),
            paused,
        )

    # -- writing ---------------------------------------------------------------------------

    async def _write(self, loaded: _Loaded, status: BackupStatus) -> None:
        # A Backup deleted meanwhile is no error: its finalizer cleans up.
        await self.backups.write_status(
            loaded.namespace, loaded.name, report.status_body(status), uid=loaded.uid
        )

    async def _catalogued(self, loaded: _Loaded, *, quiet: bool = False) -> Outcome:
        """Done once the catalog has the backup's row; else retried later."""
        return Outcome.done() if await self._catalog(loaded, quiet=quiet) else _catalog_again()

    async def _catalog(self, loaded: _Loaded, *, quiet: bool = False) -> bool:
        """Record the backup in the catalog, whether it took; the status is authoritative
        if it did not, and the row is written by a later pass."""
        catalog = self.context.catalog
        if catalog is None:
            return True
        try:
            await catalog.record(CatalogEntry.of(loaded.resource))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            logger.warning(
                "backup not catalogued; retried in %.0fs",
                CATALOG_RETRY_SECONDS,
                extra={"namespace": loaded.namespace, "backup": loaded.name, "error": str(exc)},
            )
            if not quiet:
                post(
                    loaded.raw,
                    reason="CatalogUnavailable",
                    message="The platform database did not take the catalog row; it is "
                    "written once the database answers again.",
                    warning=True,
                )
            return False
        return True


def _catalog_again() -> Outcome:
    return Outcome.again("the catalog row is not written yet", delay=CATALOG_RETRY_SECONDS)
