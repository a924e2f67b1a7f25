"""The safety Backup a Restore takes of its target before it replaces the database.

With ``spec.safetyBackup`` (the default) the restore is BackingUp until the Backup
``<restore>-safety`` of its target completed: in the source backup's storage, with its
key, labelled with the restore's name and not owned by it, so it outlives the Restore.
A target whose database is not ready, or a safety backup that failed, fails the
restore before the target is touched.

The name is known in advance, so a Backup already under it is the restore's own only if
it backs up the target, carries the restore's label, and was made no earlier than the
restore (or, for one that needed approval, the approval): otherwise someone made it to
pass for the safety backup (a completed backup of some tiny environment, taken before
the approval), and the restore fails rather than replace the target unprotected.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

from dockyard.core.models.backup import Backup, BackupPhase
from dockyard.core.models.common import API_VERSION
from dockyard.core.models.environment import Environment
from dockyard.core.models.restore import Restore, RestorePhase, RestorePlan
from dockyard.operator.apply import create
from dockyard.operator.backups.schedules import ENVIRONMENT_LABEL
from dockyard.operator.builders.metadata import MANAGED_BY, MANAGED_BY_LABEL
from dockyard.operator.outcomes import Outcome
from dockyard.operator.restores.records import LoadedRestore, RestoreRecords
from dockyard.operator.runs.stores import filled
from dockyard.operator.store import post

RESTORE_LABEL: Final = "dockyard.io/restore"
# How often a restore waiting for its safety backup looks at it again.
SAFETY_POLL_SECONDS: Final = 2.0


def safety_backup_name(restore: str) -> str:
    """The Backup a restore takes of its target first."""
    return f"{restore[:246].rstrip('-.')}-safety"


def safety_backup(restore: Restore, source: Backup, target: str) -> dict[str, Any]:
    """The safety Backup of ``target``: where and with which key the source is stored."""
    name = restore.metadata.name or ""
    storage, encryption = filled(source)
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
            "storage": storage.model_dump(mode="json", by_alias=True),
            "encryption": encryption.model_dump(mode="json", by_alias=True),
            **({"storeRef": {"name": source.spec.store_ref.name}} if source.spec.store_ref else {}),
        },
    }


async def back_up_target(
    records: RestoreRecords,
    loaded: LoadedRestore,
    source: Backup,
    plan: RestorePlan,
    target: Environment | None,
) -> Outcome | None:
    """None once the target is backed up, else a wait (or the restore's failure)."""
    name = safety_backup_name(loaded.name)
    if target is None:
        return await records.fail(loaded, f"target environment {plan.target} does not exist")
    database = target.status.database
    if database is None or not database.ready:
        return await records.fail(
            loaded, f"the database of target environment {plan.target} is not ready"
        )
    raw = await records.backups.read(loaded.namespace, name)
    if raw is None:
        await create(records.context.kube, safety_backup(loaded.restore, source, plan.target))
        raw = await records.backups.read(loaded.namespace, name)
        post(
            loaded.raw,
            reason="SafetyBackup",
            message=f"Backing up {plan.target} first: Backup {name}",
        )
    status = loaded.status
    if status.phase is not RestorePhase.BACKING_UP or status.safety_backup != name:
        await records.write(
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
    backup = records.backups.parse(raw) if raw is not None else None
    if backup is not None and (foreign := not_ours(backup, loaded.restore, plan)) is not None:
        return await records.fail(
            loaded,
            f"Backup {name} exists but is not this restore's safety backup: {foreign}; delete "
            "it, or restore under another name",
            reason="SafetyBackupTaken",
        )
    phase = backup.status.phase if backup is not None else None
    if phase is BackupPhase.COMPLETED:
        return None
    if phase is BackupPhase.FAILED:
        why = backup.status.message if backup is not None else ""
        return await records.fail(loaded, f"the safety backup {name} failed: {why}")
    return Outcome.again(f"waiting for the safety backup {name}", delay=SAFETY_POLL_SECONDS)


def not_ours(backup: Backup, restore: Restore, plan: RestorePlan) -> str | None:
    """Why ``backup``, under the safety backup's name, was not made by ``restore``'s
    operator; ``None`` when it may have been."""
    source = backup.spec.environment_ref.name
    if source != plan.target:
        return f"it backs up environment {source}, not {plan.target}"
    if (backup.metadata.labels or {}).get(RESTORE_LABEL) != restore.metadata.name:
        return f"it lacks the label {RESTORE_LABEL}={restore.metadata.name}"
    approval = restore.status.approval
    since = (approval.approved_at if approval is not None else None) or (
        restore.metadata.creation_timestamp
    )
    made = backup.metadata.creation_timestamp
    # Creation times are whole seconds: the operator's own may carry the approval's second.
    if since is not None and made is not None and made < since.replace(microsecond=0):
        what = "approved" if approval is not None and approval.approved_at else "created"
        return f"it was made before the restore was {what}"
    return None


__all__ = [
    "RESTORE_LABEL",
    "SAFETY_POLL_SECONDS",
    "back_up_target",
    "not_ours",
    "safety_backup",
    "safety_backup_name",
]
