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
"""

from __future__ import annotations

import logging
from typing import Any, Final

from dockyard.core.attempts import Recovery, RecoveryAction, RetryPolicy, after_failure
from dockyard.core.models.backup import Backup
from dockyard.core.models.environment import Environment
from dockyard.core.models.restore import Restore, RestorePlan, RestoreStatus
from dockyard.core.models.restore_drill import RestoreDrill
from dockyard.operator.database import retired_database_name
from dockyard.operator.outcomes import Outcome
from dockyard.operator.runs.context import RunContext, retryable
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
        seconds: float,
        detail: str,
    ) -> Outcome:
        message = (
            f"Environment {plan.target} now runs on backup {plan.backup} "
            f"(restored in {seconds:.1f}s; {detail})"
        )
        done = status.completed(message, generation=loaded.generation).model_copy(
            update={**_NO_STAGING, "duration_seconds": round(seconds, 3)}
        )
        await self.write(loaded, done)
        # The target's database as it was before: kept until now, as the mark of a
        # switch-over that happened (``switch_over.recover``).
        await self.drop_quietly(retired_database_name(loaded.uid))
        post(loaded.raw, reason="Completed", message=message)
        return Outcome.done()

    async def abandon(
        self, loaded: LoadedRestore, status: RestoreStatus, staging: str, error: BackupError
    ) -> Outcome:
        """Drop the attempt's staging database; then retry or give up, as ``error`` says."""
        await self.drop_quietly(staging)
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
        return Outcome.done()

    async def drop_quietly(self, database: str) -> None:
        try:
            await drop_database(self.context, database)
        except BackupError as exc:
            logger.warning(
                "staging database not dropped", extra={"database": database, "error": exc.message}
            )


__all__ = ["MESSAGE_LIMIT", "SKIP_ANNOTATION", "LoadedRestore", "RestoreRecords"]
