"""The safety Backup a Restore takes of its target before it replaces the database.

With ``spec.safetyBackup`` (the default) the restore is BackingUp until the Backup
``<restore>-safety`` of its target completed: in the source backup's storage, with its
key, labelled with the restore's name and not owned by it, so it outlives the Restore.
A target whose database is not ready, or a safety backup that failed, fails the
restore before the target is touched.

The name is known in advance, so a Backup under it is the restore's own only if the
operator made it: its uid is recorded in ``status.safetyBackupUid`` when it is created.
Any other (say a completed backup of some tiny environment, made to pass for it) fails
the restore rather than let it replace the target unprotected; so does one the
operator made but could not record, as when it stopped between the two.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from typing import Any, Final

from dockyard.core.models.backup import Backup, BackupPhase
from dockyard.core.models.common import API_VERSION
from dockyard.core.models.environment import Environment
from dockyard.core.models.restore import Restore, RestorePhase, RestorePlan
from dockyard.core.names import OBJECT_NAME_MAX, fitted, label_value
from dockyard.operator.apply import create
from dockyard.operator.backups.schedules import ENVIRONMENT_LABEL
from dockyard.operator.builders.metadata import MANAGED_BY, MANAGED_BY_LABEL
from dockyard.operator.outcomes import Outcome
from dockyard.operator.restores.records import LoadedRestore, RestoreRecords
from dockyard.operator.runs.outages import pause_while_out
from dockyard.operator.runs.stores import filled
from dockyard.operator.store import post

RESTORE_LABEL: Final = "dockyard.io/restore"
# How often a restore waiting for its safety backup looks at it again.
SAFETY_POLL_SECONDS: Final = 2.0


def safety_backup_name(restore: str) -> str:
    """The Backup a restore takes of its target first."""
    return fitted(restore, OBJECT_NAME_MAX, suffix="-safety")


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
                ENVIRONMENT_LABEL: label_value(target),
                RESTORE_LABEL: label_value(name),
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
        # Out with its server: wait (DatabaseUnavailable), keeping the plan and approval.
        waiting = await pause_while_out(
            records.context, loaded, plan.target, loaded.status, partial(records.write, loaded)
        )
        if waiting is not None:
            return waiting
        return await records.fail(
            loaded, f"the database of target environment {plan.target} is not ready"
        )
    raw = await records.backups.read(loaded.namespace, name)
    status = loaded.status.database_back(generation=loaded.generation)
    uid = status.safety_backup_uid
    if raw is None:
        made = await create(
            records.context.kube, safety_backup(loaded.restore, source, plan.target)
        )
        raw = await records.backups.read(loaded.namespace, name)
        if made and raw is not None:
            uid = raw["metadata"]["uid"]
            post(
                loaded.raw,
                reason="SafetyBackup",
                message=f"Backing up {plan.target} first: Backup {name}",
            )
    if raw is not None and raw["metadata"].get("uid") != uid:
        return await records.fail(
            loaded,
            f"Backup {name} exists but was not made by this restore as its safety backup; "
            "delete it, or restore under another name",
            reason="SafetyBackupTaken",
        )
    filled_from = source.status.filled_from
    if raw is not None and filled_from and (raw.get("status") or {}).get("filledFrom") is None:
        # It takes the storage and key its source took from a store: it holds that store's
        # deletion as its source does (store_deletion.users), marked as the fill marks.
        mark = {"filledFrom": filled_from}
        await records.backups.write_status(loaded.namespace, name, mark, uid=uid)
    if (
        status is not loaded.status
        or status.phase is not RestorePhase.BACKING_UP
        or status.safety_backup != name
        or status.safety_backup_uid != uid
    ):
        await records.write(
            loaded,
            status.model_copy(
                update={
                    "phase": RestorePhase.BACKING_UP,
                    "safety_backup": name,
                    "safety_backup_uid": uid,
                    "started_at": status.started_at or datetime.now(UTC),
                    "message": f"Backing up environment {plan.target} first (Backup {name})",
                }
            ),
        )
    backup = records.backups.parse(raw) if raw is not None else None
    phase = backup.status.phase if backup is not None else None
    if phase is BackupPhase.COMPLETED:
        return None
    if phase is BackupPhase.FAILED:
        why = backup.status.message if backup is not None else ""
        return await records.fail(loaded, f"the safety backup {name} failed: {why}")
    return Outcome.again(f"waiting for the safety backup {name}", delay=SAFETY_POLL_SECONDS)


__all__ = [
    "RESTORE_LABEL",
    "SAFETY_POLL_SECONDS",
    "back_up_target",
    "safety_backup",
    "safety_backup_name",
]
