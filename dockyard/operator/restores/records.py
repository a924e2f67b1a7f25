"""A Restore as the operator reads and records it, and the ends an attempt can have.

Every stage of the life cycle (``planning``, ``safety``, ``running``, ``switch_over``)
reads and writes through one ``RestoreRecords``:

- the Restore's ``KindStore``: a Restore that does not validate is failed with the
  store's one message format; one annotated ``dockyard.io/skip-reconcile: "true"`` is
  left alone (for handling one by hand);
- the stores of what a restore reads: Backups, Environments, and the past Restores and
  RestoreDrills its estimate comes from;
- the transitions a stage may end in: ``fail`` (Failed; the target was not changed,
  which holds at every step before the switch-over), ``attempt_failed`` and
  ``apply_recovery`` (Pending again for the retry the policy allows, else Failed),
  ``abandon`` (the staging database dropped first) and ``completed``.

A Completed or Failed restore uses none of its databases: ``fail`` and ``completed``
sweep them all (``leftovers``), and say to look again while one could not be dropped.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from dockyard.core.attempts import Recovery, RecoveryAction, RetryPolicy, after_failure
from dockyard.core.models.backup import Backup
from dockyard.core.models.environment import Environment
from dockyard.core.models.restore import Restore, RestorePlan, RestoreStatus
from dockyard.core.models.restore_drill import RestoreDrill
from dockyard.operator import crash_points
from dockyard.operator.database import ManagedDatabaseError, TenantLogin
from dockyard.operator.outcomes import Outcome
from dockyard.operator.restores.leftovers import sweep
from dockyard.operator.runs.context import RunContext, retryable, tenant_login
from dockyard.operator.runs.restoring import DatabaseTaken, ManifestMismatch, drop_database
from dockyard.operator.store import KindStore, Loaded, OnInvalid, deleting, post
from dockyard.runner import BackupError

logger = logging.getLogger(__name__)

SKIP_ANNOTATION: Final = "dockyard.io/skip-reconcile"
MESSAGE_LIMIT: Final = 4096
# An attempt that ended has no staging database left.
_NO_STAGING: Final = {"staging_database": None, "staging_database_oid": None}


class LoadedRestore(Loaded[Restore]):
    """A Restore as read (for Events) and as validated."""

    __slots__ = ()

    @property
    def restore(self) -> Restore:
        return self.resource

    @property
    def status(self) -> RestoreStatus:
        return self.resource.status


def _skipped(raw: dict[str, Any]) -> bool:
    annotations = raw.get("metadata", {}).get("annotations") or {}
    return str(annotations.get(SKIP_ANNOTATION, "")).lower() == "true"


class RestoreRecords:
    """Reads Restores and what they restore; records their progress in status."""

    def __init__(self, context: RunContext, policy: RetryPolicy) -> None:
        self.context = context
        self.policy = policy
        kube = context.kube
        self.restores = KindStore(kube, Restore)
        self.backups = KindStore(kube, Backup)
        self.environments = KindStore(kube, Environment)
        self.drills = KindStore(kube, RestoreDrill)

    # -- reading ---------------------------------------------------------------------------

    async def load(self, namespace: str, name: str) -> LoadedRestore | None:
        """The Restore, read afresh; None when it is gone, being deleted, left alone by
        its annotation, or invalid (then failed with the problem)."""
        raw = await self.restores.read(namespace, name)
        if raw is None or deleting(raw) or _skipped(raw):
            return None
        found = await self.restores.loaded(raw, on_invalid=OnInvalid.FAIL)
        return None if found is None else LoadedRestore(found.raw, found.resource)

    async def reload(self, loaded: LoadedRestore) -> LoadedRestore:
        fresh = await self.load(loaded.namespace, loaded.name)
        return fresh if fresh is not None else loaded

    # -- writing ---------------------------------------------------------------------------

    async def write(self, loaded: LoadedRestore, status: RestoreStatus) -> None:
        body = status.body()
        await self.restores.write_status(loaded.namespace, loaded.name, body, uid=loaded.uid)

    @staticmethod
    def changed(before: RestoreStatus, after: RestoreStatus) -> bool:
        return before.model_dump(mode="json") != after.model_dump(mode="json")

    # -- the ends of an attempt ------------------------------------------------------------

    async def completed(
        self,
        loaded: LoadedRestore,
        status: RestoreStatus,
        plan: RestorePlan,
        seconds: float | None,
        detail: str,
    ) -> Outcome:
        """Record the restore Completed, then drop its databases: the target's as it was
        before among them, kept until now as the mark of a switch-over that happened
        (``switch_over.recover``)."""
        done, message = completion(status, plan, seconds, detail, generation=loaded.generation)
        await self.reassert_target(loaded, plan)
        await self.write(loaded, done)
        crash_points.exit_here(crash_points.RESTORE_COMPLETED)
        post(loaded.raw, reason="Completed", message=message)
        return await self._swept(loaded, done)

    async def reassert_target(
        self, loaded: LoadedRestore, plan: RestorePlan, login: TenantLogin | None = None
    ) -> None:
        """After another environment's backup was restored as the target's role (its
        constraints, defaults and policies ran as it), undo what that code may have done
        to the role itself (``ManagedPostgres.reassert``): a failed restore leaves the
        target as it was, its role included, and a completed one gives the source's
        owner no hold on it."""
        postgres = self.context.postgres
        if postgres is None or plan.source_environment == plan.target:
            return
        try:
            if login is None:
                login = await tenant_login(self.context.kube, loaded.namespace, plan.target)
            await postgres.reassert(login)
        except (BackupError, ManagedDatabaseError) as exc:
            logger.warning(
                "the target's role was not checked after a restore into it",
                extra={"restore": loaded.name, "target": plan.target, "error": exc.message},
            )

    async def abandon(
        self, loaded: LoadedRestore, status: RestoreStatus, staging: str, error: BackupError
    ) -> Outcome:
        """Drop the attempt's staging database; then retry or give up, as ``error`` says."""
        await self.drop_quietly(staging)
        if status.plan is not None:
            await self.reassert_target(loaded, status.plan)
        return await self.attempt_failed(loaded, status, error)

    async def attempt_failed(
        self, loaded: LoadedRestore, status: RestoreStatus, error: BackupError
    ) -> Outcome:
        recovery = after_failure(
            attempts=status.attempts,
            reason=f"{error.reason}: {error.message}",
            retryable=retryable(error) and not isinstance(error, ManifestMismatch | DatabaseTaken),
            policy=self.policy,
        )
        return await self.apply_recovery(loaded, status, recovery, error.reason)

    async def apply_recovery(
        self, loaded: LoadedRestore, status: RestoreStatus, recovery: Recovery, reason: str
    ) -> Outcome:
        if recovery.action is RecoveryAction.GIVE_UP:
            return await self.fail(loaded, recovery.message, reason=reason, status=status)
        retry = status.retrying(recovery.message).model_copy(update=_NO_STAGING)
        await self.write(loaded, retry)
        post(loaded.raw, reason="AttemptFailed", message=recovery.message, warning=True)
        return Outcome.again(recovery.message, delay=max(recovery.delay_seconds, 1.0))

    async def fail(
        self,
        loaded: LoadedRestore,
        message: str,
        *,
        reason: str = "Failed",
        status: RestoreStatus | None = None,
    ) -> Outcome:
        base = status or loaded.status
        text = f"{message}; the target environment was not changed"
        failed = base.failed(reason, text, generation=loaded.generation)
        failed = failed.model_copy(update=_NO_STAGING)
        await self.write(loaded, failed)
        post(loaded.raw, reason="Failed", message=text, warning=True)
        return await self._swept(loaded, failed)

    async def _swept(self, loaded: LoadedRestore, status: RestoreStatus) -> Outcome:
        """Done once no database of the finished restore is left; else its next pass
        (``RestoreRuns.drive``) sweeps again."""
        left = await sweep(self.context, loaded.uid, status)
        return Outcome.done() if left is None else Outcome.again(left)

    async def drop_quietly(self, database: str) -> None:
        try:
            await drop_database(self.context, database)
        except BackupError as exc:
            logger.warning(
                "staging database not dropped", extra={"database": database, "error": exc.message}
            )


def completion(
    status: RestoreStatus,
    plan: RestorePlan,
    seconds: float | None,
    detail: str,
    *,
    generation: int | None,
) -> tuple[RestoreStatus, str]:
    """``status`` Completed after restoring ``plan``, and what it says; ``seconds`` is how
    long the attempt took, None when nobody measured it (a restore completed by recovery:
    the pass that switched over died with its clock). Not measured, no duration is
    recorded, so no made-up one reaches the estimates of later restores."""
    if seconds is None:
        told = f"{detail}; how long it took was not measured"
    else:
        told = f"restored in {seconds:.1f}s; {detail}"
    message = f"Environment {plan.target} now runs on backup {plan.backup} ({told})"
    duration = None if seconds is None else round(seconds, 3)
    done = status.completed(message, generation=generation).model_copy(
        update={**_NO_STAGING, "duration_seconds": duration}
    )
    return done, message


__all__ = ["MESSAGE_LIMIT", "SKIP_ANNOTATION", "LoadedRestore", "RestoreRecords", "completion"]
