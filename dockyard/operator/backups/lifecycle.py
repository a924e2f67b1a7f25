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
  platform database was down), then nothing.

A run's success is committed in this order: the artifact (atomically, by the runner),
the catalog row, then the status. Failures carry the runner's ``BackupError.reason``.
Deletion removes every artifact of the Backup's attempts (the finalizer's job).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, cast

import asyncpg
import kopf
from pydantic import ValidationError

from dockyard.core.attempts import (
    Recovery,
    RecoveryAction,
    RetryPolicy,
    after_failure,
    recover_interrupted,
)
from dockyard.core.conditions import set_condition
from dockyard.core.durations import parse_duration
from dockyard.core.kube import KubeError
from dockyard.core.models.backup import (
    Backup,
    BackupConditionType,
    BackupManifest,
    BackupPhase,
    BackupRunner,
    BackupStatus,
    TableRows,
)
from dockyard.core.models.common import ConditionStatus
from dockyard.core.resources import BACKUPS, JOBS
from dockyard.core.retention import ttl_expiry
from dockyard.operator.apply import FIELD_MANAGER, delete, get
from dockyard.operator.backups import deletion as backup_deletion
from dockyard.operator.backups.sweeping import sweep
from dockyard.operator.builders import environment as environment_builders
from dockyard.operator.outcomes import Outcome
from dockyard.operator.runs import jobs
from dockyard.operator.runs.catalog import CatalogEntry
from dockyard.operator.runs.context import (
    Loaded,
    RunCancelled,
    RunContext,
    artifact_name,
    environment_dsn,
    load_key,
    retryable,
)
from dockyard.operator.runs.runner_jobs import apply_runner_identity, runner_message
from dockyard.runner import BackupError, BackupResult, run_backup

logger = logging.getLogger(__name__)

# How often a Job-mode run is looked at while its Job works.
JOB_POLL_SECONDS: Final = 10.0
_EVENT_MESSAGE_LIMIT: Final = 1024
# Status fields someone else writes (a drill verifies a backup): never overwritten here.
_NOT_OURS: Final = frozenset({"verified"})


def status_patch(status: BackupStatus) -> dict[str, Any]:
    """A merge patch that makes the status ``status`` (None clears a field)."""
    body = status.model_dump(mode="json", by_alias=True, exclude=set(_NOT_OURS))
    return {"status": body}


def post(raw: Mapping[str, Any], *, reason: str, message: str, warning: bool = False) -> None:
    """A Kubernetes Event about the object ``raw`` (sent by Kopf in the background)."""
    kopf.event(
        kopf.Body(cast(kopf.RawBody, dict(raw))),
        type="Warning" if warning else "Normal",
        reason=reason,
        message=message[:_EVENT_MESSAGE_LIMIT],
    )


def manifest_of(result: BackupResult) -> BackupManifest:
    return BackupManifest(
        tables=[TableRows(name=table, rows=rows) for table, rows in sorted(result.manifest.items())]
    )


def completed_status(
    status: BackupStatus, result: BackupResult, generation: int | None
) -> BackupStatus:
    """``status`` once the run that produced ``result`` is catalogued."""
    return status.model_copy(
        update={
            "phase": BackupPhase.COMPLETED,
            "message": (
                f"Stored {result.size} bytes ({len(result.manifest)} tables) in "
                f"{result.duration_seconds:.1f}s"
            ),
            "completed_at": result.finished_at,
            "size": result.size,
            "sha256": result.sha256,
            "location": result.location,
            "key_id": result.key_id,
            "manifest": manifest_of(result),
            "observed_generation": generation,
            "conditions": set_condition(
                status.conditions,
                type=BackupConditionType.READY,
                status=ConditionStatus.TRUE,
                reason="Completed",
                message="The artifact is stored, checksummed and catalogued.",
                generation=generation,
            ),
        }
    )


def recovery_status(
    status: BackupStatus, recovery: Recovery, reason: str, generation: int | None
) -> BackupStatus:
    """``status`` after a failed or interrupted attempt: Pending for a retry, else Failed."""
    giving_up = recovery.action is RecoveryAction.GIVE_UP
    return status.model_copy(
        update={
            "phase": BackupPhase.FAILED if giving_up else BackupPhase.PENDING,
            "message": recovery.message,
            "completed_at": datetime.now(UTC) if giving_up else None,
            "observed_generation": generation,
            "conditions": set_condition(
                status.conditions,
                type=BackupConditionType.READY,
                status=ConditionStatus.FALSE,
                reason=reason,
                message=recovery.message,
                generation=generation,
            ),
        }
    )


class _Loaded(Loaded[Backup]):
    __slots__ = ()

    @property
    def backup(self) -> Backup:
        return self.resource


class BackupRuns:
    """Drives Backups; one per operator, kept in the memo beside its ``RunContext``."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        settings = context.settings
        self.policy = RetryPolicy(
            max_attempts=settings.backup_max_attempts,
            base_delay_seconds=settings.backup_retry_delay,
            max_delay_seconds=max(settings.backup_retry_delay * 16, 1.0),
        )

    # -- entry points ----------------------------------------------------------------------

    async def drive(self, namespace: str, name: str) -> Outcome:
        """One step of the life cycle, for creation, the resume and retries."""
        loaded = await self._load(namespace, name)
        if loaded is None:
            return Outcome.done()
        phase = loaded.backup.status.phase
        if phase is BackupPhase.COMPLETED:
            await self._catalog(loaded, quiet=True)
            return Outcome.done()
        if phase is BackupPhase.FAILED:
            return Outcome.done()
        if phase is BackupPhase.RUNNING:
            if self.context.running_here(loaded.uid):
                return Outcome.done()
            return await self._recover(loaded)
        return await self._start(loaded)

    async def expire(self, namespace: str, name: str) -> None:
        """Apply the Backup's ttl: record when it expires, delete it once it has.

        Deleting the object deletes the artifact through the finalizer. The newest
        backup of its environment that a drill verified is kept past its ttl.
        """
        loaded = await self._load(namespace, name)
        if loaded is None or loaded.backup.spec.ttl is None:
            return
        listing = await self.context.kube.get(BACKUPS.path(namespace))
        siblings = []
        for item in listing.get("items", ()):
            with contextlib.suppress(ValidationError):
                siblings.append(Backup.model_validate(item))
        expiry = ttl_expiry(
            loaded.backup, parse_duration(loaded.backup.spec.ttl), siblings, datetime.now(UTC)
        )
        if expiry.expires_at != loaded.backup.status.expires_at:
            at = expiry.expires_at.isoformat() if expiry.expires_at else None
            await self.context.kube.merge_patch(
                BACKUPS.path(namespace, name, "status"), {"status": {"expiresAt": at}}
            )
        if expiry.delete:
            post(loaded.raw, reason="Expired", message=f"{expiry.reason}; deleting the backup")
            await delete(self.context.kube, BACKUPS.path(namespace, name), uid=loaded.uid)

    async def finalize(self, namespace: str, name: str, body: Mapping[str, Any]) -> Outcome:
        """Delete every artifact of the Backup's attempts (within a bound), then let it go."""
        return await backup_deletion.finalize(self.context, namespace, name, body)

    # -- the phases ------------------------------------------------------------------------

    async def _load(self, namespace: str, name: str) -> _Loaded | None:
        raw = await get(self.context.kube, BACKUPS.path(namespace, name))
        if raw is None or raw.get("metadata", {}).get("deletionTimestamp"):
            return None
        try:
            return _Loaded(raw, Backup.model_validate(raw))
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            await self.context.kube.merge_patch(
                BACKUPS.path(namespace, name, "status"),
                {"status": {"phase": BackupPhase.FAILED.value, "message": problem[:4096]}},
            )
            post(raw, reason="InvalidSpec", message=problem, warning=True)
            return None

    async def _start(self, loaded: _Loaded) -> Outcome:
        backup = loaded.backup
        attempt = backup.status.attempts + 1
        runner = backup.spec.runner
        started = backup.status.model_copy(
            update={
                "phase": BackupPhase.RUNNING,
                "attempts": attempt,
                "started_at": datetime.now(UTC),
                "completed_at": None,
                "message": f"Attempt {attempt} of {self.policy.max_attempts} running ({runner})",
                "observed_generation": loaded.generation,
                "conditions": set_condition(
                    backup.status.conditions,
                    type=BackupConditionType.READY,
                    status=ConditionStatus.FALSE,
                    reason="Running",
                    message=f"Attempt {attempt} is running.",
                    generation=loaded.generation,
                ),
            }
        )
        if runner is BackupRunner.JOB:
            return await self._start_job(loaded, started, attempt)
        # Marked as ours before Running is visible, so no other pass sees an orphan.
        try:
            return await self.context.inline(loaded.uid, self._run_inline(loaded, started, attempt))
        except RunCancelled as exc:
            return await self._failed(loaded, started, exc)

    async def _run_inline(self, loaded: _Loaded, started: BackupStatus, attempt: int) -> Outcome:
        await self._write(loaded, started)
        post(loaded.raw, reason="Started", message=f"Attempt {attempt} started (Inline)")
        backup = loaded.backup
        try:
            # Storage first: a spec that can never work fails before anything else.
            async with self.context.storage(backup.spec.storage, loaded.namespace) as storage:
                if swept := await sweep(storage, self.context.settings):
                    post(
                        loaded.raw,
                        reason="StalePartialsRemoved",
                        message=f"Removed {swept} partial artifacts or uploads of dead runs",
                    )
                key = await load_key(
                    self.context.kube, loaded.namespace, backup.spec.encryption.key_secret_ref
                )
                dsn = await environment_dsn(
                    self.context.kube,
                    self.context.settings,
                    loaded.namespace,
                    backup.spec.environment_ref.name,
                    self.context.postgres,
                )
                result = await run_backup(
                    dsn=dsn,
                    storage=storage,
                    name=artifact_name(loaded.namespace, loaded.name, loaded.uid, attempt),
                    key=key,
                )
        except BackupError as exc:
            return await self._failed(loaded, started, exc)
        return await self._complete(loaded, started, result)

    async def _complete(
        self, loaded: _Loaded, status: BackupStatus, result: BackupResult
    ) -> Outcome:
        done = completed_status(status, result, loaded.generation)
        await self._catalog(_Loaded(loaded.raw, loaded.backup.model_copy(update={"status": done})))
        await self._write(loaded, done)
        post(
            loaded.raw,
            reason="Completed",
            message=f"{done.message}; sha256 {result.sha256}, key {result.key_id}",
        )
        return Outcome.done()

    async def _failed(self, loaded: _Loaded, status: BackupStatus, error: BackupError) -> Outcome:
        recovery = after_failure(
            attempts=status.attempts,
            reason=f"{error.reason}: {error.message}",
            retryable=retryable(error),
            policy=self.policy,
        )
        return await self._apply_recovery(loaded, status, recovery, error.reason)

    async def _recover(self, loaded: _Loaded) -> Outcome:
        backup = loaded.backup
        status = backup.status
        if backup.spec.runner is BackupRunner.JOB:
            return await self._follow_job(loaded)
        recovery = recover_interrupted(
            attempts=status.attempts, runner_alive=False, policy=self.policy
        )
        return await self._apply_recovery(loaded, status, recovery, "Interrupted")

    async def _apply_recovery(
        self, loaded: _Loaded, status: BackupStatus, recovery: Recovery, reason: str
    ) -> Outcome:
        after = recovery_status(status, recovery, reason, loaded.generation)
        await self._write(loaded, after)
        if recovery.action is RecoveryAction.GIVE_UP:
            post(loaded.raw, reason="Failed", message=recovery.message, warning=True)
            await self._catalog(
                _Loaded(loaded.raw, loaded.backup.model_copy(update={"status": after})),
                quiet=True,
            )
            return Outcome.done()
        post(loaded.raw, reason="AttemptFailed", message=recovery.message, warning=True)
        # Kopf calls drive again after the delay (kept across restarts in its annotations),
        # which finds the Backup Pending and starts the next attempt.
        return Outcome.again(recovery.message, delay=max(recovery.delay_seconds, 1.0))

    # -- Job mode --------------------------------------------------------------------------

    async def _start_job(self, loaded: _Loaded, started: BackupStatus, attempt: int) -> Outcome:
        backup = loaded.backup
        kube = self.context.kube
        try:
            key = await load_key(kube, loaded.namespace, backup.spec.encryption.key_secret_ref)
        except BackupError as exc:
            await self._write(loaded, started)
            return await self._failed(loaded, started, exc)
        await apply_runner_identity(kube, loaded.namespace)
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
        await kube.apply(
            JOBS.path(loaded.namespace, job["metadata"]["name"]), job, field_manager=FIELD_MANAGER
        )
        await self._write(loaded, started)
        post(
            loaded.raw,
            reason="Started",
            message=f"Attempt {attempt} started in Job {job['metadata']['name']}",
        )
        return Outcome.again("following the runner Job", delay=JOB_POLL_SECONDS)

    async def _follow_job(self, loaded: _Loaded) -> Outcome:
        status = loaded.backup.status
        name = jobs.job_name(loaded.name, max(status.attempts, 1))
        state = jobs.job_state(await get(self.context.kube, JOBS.path(loaded.namespace, name)))
        if state == "Running":
            return Outcome.again(f"Job {name} is running", delay=JOB_POLL_SECONDS)
        if state == "Succeeded" and status.sha256 and status.location:
            done = status.model_copy(
                update={
                    "phase": BackupPhase.COMPLETED,
                    "completed_at": status.completed_at or datetime.now(UTC),
                    "message": f"Stored {status.size} bytes by Job {name}",
                    "conditions": set_condition(
                        status.conditions,
                        type=BackupConditionType.READY,
                        status=ConditionStatus.TRUE,
                        reason="Completed",
                        message="The artifact is stored, checksummed and catalogued.",
                        generation=loaded.generation,
                    ),
                }
            )
            await self._catalog(
                _Loaded(loaded.raw, loaded.backup.model_copy(update={"status": done}))
            )
            await self._write(loaded, done)
            post(loaded.raw, reason="Completed", message=f"{done.message}; sha256 {done.sha256}")
            return Outcome.done()
        reason = {
            "Missing": f"runner Job {name} is gone",
            "Failed": f"runner Job {name} failed",
            "Succeeded": f"runner Job {name} succeeded without reporting its artifact",
        }[state]
        if state == "Failed":
            reason += await self._runner_says(loaded.namespace, name)
        recovery = after_failure(attempts=status.attempts, reason=reason, policy=self.policy)
        return await self._apply_recovery(loaded, status, recovery, "RunnerFailed")

    async def _runner_says(self, namespace: str, job: str) -> str:
        """``": <reason>: <message>"`` from the runner's termination message, if any."""
        error = jobs.runner_error(await runner_message(self.context.kube, namespace, job))
        return f": {error[0]}: {error[1]}" if error else ""

    # -- writing ---------------------------------------------------------------------------

    async def _write(self, loaded: _Loaded, status: BackupStatus) -> None:
        try:
            await self.context.kube.merge_patch(
                BACKUPS.path(loaded.namespace, loaded.name, "status"), status_patch(status)
            )
        except KubeError as exc:
            if exc.status != 404:  # deleted meanwhile: the finalizer cleans up
                raise

    async def _catalog(self, loaded: _Loaded, *, quiet: bool = False) -> None:
        """Record the backup in the catalog; the status is authoritative if this fails."""
        catalog = self.context.catalog
        if catalog is None:
            return
        try:
            await catalog.record(CatalogEntry.of(loaded.backup))
        except (OSError, asyncpg.PostgresError) as exc:
            logger.warning(
                "backup not catalogued; retried at the next start-up",
                extra={"namespace": loaded.namespace, "backup": loaded.name, "error": str(exc)},
            )
            if not quiet:
                post(
                    loaded.raw,
                    reason="CatalogUnavailable",
                    message="The platform database did not take the catalog row; it is "
                    "written again at the operator's next start-up.",
                    warning=True,
                )
