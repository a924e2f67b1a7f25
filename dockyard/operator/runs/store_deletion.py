"""A BackupStore goes only once no Backup names it.

A Backup filled from a store names it in ``spec.storeRef`` and needs it for as long as
it lives: its finalizer deletes its artifacts, and restores and drills read them, with
the store's identity (S3 storage with no credentials Secret) and its keyring (keys
rotated out). Deleting the store first would strand those artifacts: nothing could read
or delete them. So, like Kubernetes' ``pvc-protection``, the operator's finalizer holds
a store's deletion while any Backup, in any namespace, was filled from it (``users``:
marked ``status.filledFrom`` by the fill; one that merely names the store does not
count):

- the store's condition ``DeletionBlocked`` (True, reason ``InUse``) counts them and
  names the first few, and a Warning Event ``DeletionBlocked`` says so each time that
  changes;
- the check runs again every ``RECHECK_SECONDS``;
- meanwhile the store fills no new Backup (``stores.fill_from_store``).

Once the last Backup is gone (its own finalizer deleted its artifacts), the store goes.
Whoever means to abandon the artifacts removes the finalizer by hand (docs/backups.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from dockyard.core.kube import KubeClient
from dockyard.core.models.backup_store import BackupStore, BackupStoreConditionType
from dockyard.core.resources import BACKUPS
from dockyard.operator.apply import paged
from dockyard.operator.outcomes import Outcome
from dockyard.operator.runs.stores import StoreNotAllowed, check_serves, write_status
from dockyard.operator.store import post

RECHECK_SECONDS: Final = 30.0
IN_USE: Final = "InUse"
_NAMED: Final = 5


async def users(kube: KubeClient, store: BackupStore) -> list[str]:
    """``namespace/name`` of every Backup that ``store`` filled, sorted; read a page at a
    time, as every namespace's Backups are.

    The operator marks a Backup it fills (``status.filledFrom``, which tenants cannot
    write), so a Backup that merely names the store holds nothing: not an unfilled one
    (marked or not: a fill may fail after its mark), nor one a tenant made with a
    storage of its own, whatever its ``storeRef`` says. A Backup filled before the mark
    existed has none: it holds the store when it names it, has storage, and is in a
    namespace the store still serves, so that a tenant the store does not serve cannot
    pin it with a Backup made to look filled.
    """
    name = store.metadata.name or ""
    served: dict[str, bool] = {}
    found = []
    async for raw in paged(kube, BACKUPS, None):
        namespace = raw["metadata"].get("namespace") or ""
        marked = (raw.get("status") or {}).get("filledFrom")
        spec = raw.get("spec") or {}
        if marked is not None:
            # Marked, then not filled (the fill failed after the mark): it never ran.
            holds = marked == name and bool(spec.get("storage")) and bool(spec.get("encryption"))
        else:
            holds = (spec.get("storeRef") or {}).get("name") == name and bool(spec.get("storage"))
            if holds and namespace not in served:
                served[namespace] = await _serves(kube, store, namespace)
            holds = holds and served[namespace]
        if holds:
            found.append(f"{namespace}/{raw['metadata'].get('name')}")
    return sorted(found)


async def _serves(kube: KubeClient, store: BackupStore, namespace: str) -> bool:
    try:
        await check_serves(kube, store, namespace)
    except StoreNotAllowed:
        return False
    return True


def blocked_message(using: list[str]) -> str:
    """What the store's condition says while ``using`` (not empty) name it."""
    named = ", ".join(using[:_NAMED])
    if len(using) > _NAMED:
        named += f" and {len(using) - _NAMED} more"
    return (
        f"Deletion waits for {len(using)} Backup(s) that name this store: {named}. "
        "Delete them first: their finalizers delete their artifacts with this store's "
        "identity and keys (or remove the finalizer to abandon those artifacts)"
    )


async def finalize(kube: KubeClient, body: Mapping[str, Any]) -> Outcome:
    """Let the store ``body`` go once no Backup names it; until then, say which do."""
    try:
        store = BackupStore.model_validate(dict(body))
    except ValidationError:
        return Outcome.done()  # an invalid store filled no Backup
    using = await users(kube, store)
    if not using:
        return Outcome.done()
    message = blocked_message(using)
    kind = BackupStoreConditionType.DELETION_BLOCKED
    said = store.status.condition(kind)
    if said is None or said.message != message:
        status = store.status.with_condition(
            kind, True, IN_USE, message, generation=store.metadata.generation
        )
        await write_status(kube, store, status)
        post(body, reason="DeletionBlocked", message=message, warning=True)
    return Outcome.again(message, delay=RECHECK_SECONDS)
