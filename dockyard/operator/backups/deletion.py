"""A Backup's finalizer: delete every artifact of its attempts, within a bound.

While the storage refuses (a bucket deleted, credentials revoked, a store that is
down), the finalizer retries with Kopf's backoff and says why in the condition
``ArtifactDeleted`` (False, ``DeletionFailed``). Once ``DOCKYARD_BACKUP_DELETE_TIMEOUT``
seconds have passed since the deletion was requested it gives up: the condition says
``GaveUp``, a Warning Event ``ArtifactNotDeleted`` names what may be left behind and
why, and the object goes away. A Backup must not outlive its namespace's deletion,
nor block it forever, for storage that will never answer again; what remains is
left to whoever owns the bucket (the catalog row keeps the location as history).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import asyncpg

from dockyard.core.models.backup import Backup
from dockyard.operator.outcomes import Outcome
from dockyard.operator.runs.context import RunContext, artifact_prefix, retryable, storage_url
from dockyard.operator.runs.stores import chosen_by_a_store
from dockyard.operator.store import InvalidObject, KindStore, post
from dockyard.runner import BackupError

logger = logging.getLogger(__name__)

CONDITION = "ArtifactDeleted"


async def finalize(
    context: RunContext, namespace: str, name: str, body: Mapping[str, Any]
) -> Outcome:
    """Delete the artifacts of ``body`` (a Backup being deleted), or give up in time."""
    backups = KindStore(context.kube, Backup)
    try:
        backup = backups.parse(dict(body))
    except InvalidObject:
        return Outcome.done()  # never stored an artifact we could name
    uid = backup.metadata.uid or ""
    context.inline_runs.cancel(uid, f"Backup {name} is being deleted")
    prefix = artifact_prefix(namespace, name, uid)
    storage_spec = backup.spec.storage
    if storage_spec is None:
        return Outcome.done()  # never filled from a store, so never run: nothing stored
    filesystem = storage_spec.filesystem
    if filesystem is not None and filesystem.claim_name:
        # A runner Job wrote it to the tenant's claim, which the operator does not mount:
        # said, rather than looked for on the operator's own volume and "not found".
        left = f"{filesystem.path}/{prefix}*"
        message = (
            f"The artifacts on PersistentVolumeClaim {filesystem.claim_name} are not deleted "
            f"by the operator, which does not mount it: remove {left} from the claim"
        )
        post(body, reason="ArtifactNotDeleted", message=message, warning=True)
        return Outcome.done()
    try:
        ambient = await chosen_by_a_store(context.kube, backup, deleting=True)
        async with context.storage(storage_spec, namespace, ambient=ambient) as storage:
            names = await storage.list(prefix)
            for artifact in names:
                await storage.delete(artifact)
    except BackupError as exc:
        if not retryable(exc):
            post(body, reason="ArtifactNotDeleted", message=exc.message, warning=True)
            return Outcome.done()
        why = f"{exc.reason}: {exc.message}"
        since = backup.metadata.deletion_timestamp or datetime.now(UTC)
        waited = (datetime.now(UTC) - since).total_seconds()
        bound = context.settings.backup_delete_timeout
        if waited < bound:
            await _condition(backups, backup, "DeletionFailed", f"{why}; retrying")
            return Outcome.again(f"deleting the artifact failed: {why}")
        left = backup.status.location or f"{storage_url(storage_spec)}/{prefix}*"
        message = (
            f"Gave up deleting the artifacts after {waited:.0f}s "
            f"(DOCKYARD_BACKUP_DELETE_TIMEOUT {bound:.0f}s): {why}. What may remain: {left}"
        )
        await _condition(backups, backup, "GaveUp", message)
        post(body, reason="ArtifactNotDeleted", message=message, warning=True)
        logger.warning("backup artifact abandoned", extra={"backup": name, "error": why})
        return Outcome.done()
    if names:
        post(body, reason="ArtifactDeleted", message=f"Deleted {', '.join(names)}")
    if context.catalog is not None and uid:
        try:
            await context.catalog.mark_deleted(uid)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Let go now, and its catalogued bytes would count against the namespace's
            # quota for good: tried again (the artifacts listed are gone, so only this).
            logger.warning("catalog not updated", extra={"backup": name, "error": str(exc)})
            return Outcome.again(f"the artifacts are deleted; the catalog is not yet: {exc}")
    return Outcome.done()


async def _condition(backups: KindStore[Backup], backup: Backup, reason: str, message: str) -> None:
    """Set ``ArtifactDeleted`` False with ``reason``; a vanished object is no error."""
    status = backup.status.with_condition(
        CONDITION, False, reason, message[:4096], generation=backup.metadata.generation
    )
    body = [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in status.conditions]
    meta = backup.metadata
    await backups.write_status(
        meta.namespace or "", meta.name or "", {"conditions": body}, uid=meta.uid
    )
