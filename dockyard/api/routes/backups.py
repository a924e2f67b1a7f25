"""Backups over REST: the objects kubectl sees, read from the API's watch cache and
written to the apiserver as the caller.

The contract of every kind (``kinds``), with the paged, filtered lists of the backup
kinds (``recovery``): ``?environment=`` and ``?phase=`` (Pending, Running, Completed,
Failed). A Backup's spec is immutable but for ``ttl``, which the apiserver's CEL rules
enforce; a refused change comes back as 422 with its field path. Deleting a Backup
deletes its artifact (the operator's finalizer), so the answer is 204 once accepted.
"""

from __future__ import annotations

from dockyard.api import keys
from dockyard.api.openapi import OperationRegistry
from dockyard.api.routes.models import create_body, list_body
from dockyard.api.routes.recovery import MetadataInput, RecoveryKindRoutes
from dockyard.core.models.backup import Backup, BackupPhase

BackupCreate = create_body(
    Backup,
    MetadataInput,
    doc="The body of ``POST .../backups``: a one-off backup.",
    spec="what to back up, how and where",
)
BackupList = list_body(
    Backup,
    doc="A page of the backups of a namespace, ordered by name.",
    items="the backups on this page",
)

ROUTES = RecoveryKindRoutes(Backup, BackupCreate, BackupList, keys.BACKUP_CACHE, phases=BackupPhase)


def register(registry: OperationRegistry) -> None:
    ROUTES.register(registry)
