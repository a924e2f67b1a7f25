"""BackupStore handler: hold a store's deletion while Backups name it.

Only deletion: the stores are read where Backups are filled
(``dockyard.operator.runs.stores``). The handler is not optional, so Kopf puts the
operator's finalizer on every store it sees (``dockyard.operator.runs.store_deletion``).
Registered only with ``DOCKYARD_BACKUP_STORE_GUARD`` (on by default): stores are
cluster-scoped, so of several operators sharing a cluster, one holds them.
"""

from __future__ import annotations

from typing import Any

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import BACKUP_STORES
from dockyard.operator.runs import store_deletion
from dockyard.operator.services import OperatorMemo


async def hold_while_in_use(*, body: kopf.Body, memo: OperatorMemo, retry: int, **_: Any) -> None:
    outcome = await store_deletion.finalize(memo.services.kube, dict(body))
    outcome.raise_if_unfinished(retry)


def register_guard() -> None:
    """Hold every BackupStore's deletion while Backups name it."""
    kopf.on.delete(API_VERSION, BACKUP_STORES.plural, optional=False, id="in-use")(
        hold_while_in_use
    )
