"""Backups over REST: the objects kubectl sees, read from the API's watch cache and
written to the apiserver as the caller.

The contract of every kind (``kinds``), with the paged, filtered lists of the backup
kinds (``recovery``): ``?environment=`` and ``?phase=`` (Pending, Running, Completed,
Failed). A Backup's spec is immutable but for ``ttl``, which the apiserver's CEL rules
enforce; a refused change comes back as 422 with its field path. Deleting a Backup
deletes its artifact (the operator's finalizer), so the answer is 204 once accepted.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from dockyard.api import keys
from dockyard.api.openapi import OperationRegistry
from dockyard.api.routes.recovery import MetadataInput, RecoveryKindRoutes
from dockyard.core.models.backup import Backup, BackupPhase, BackupSpec
from dockyard.core.models.common import API_VERSION


class BackupCreate(BaseModel):
    """The body of ``POST .../backups``: a one-off backup."""

    model_config = ConfigDict(extra="forbid")

    api_version: str | None = Field(
        default=None, alias="apiVersion", description=f"optional; {API_VERSION}"
    )
    kind: str | None = Field(default=None, description="optional; Backup")
    metadata: MetadataInput = Field(description="name, labels and annotations")
    spec: BackupSpec = Field(description="what to back up, how and where")


class BackupList(BaseModel):
    """A page of the backups of a namespace, ordered by name."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    items: list[Backup] = Field(description="the backups on this page")
    next_cursor: str | None = Field(
        default=None, alias="nextCursor", description="pass as ?cursor= for the next page"
    )
    resource_version: str = Field(
        alias="resourceVersion", description="the cache's resourceVersion for this list"
    )


ROUTES = RecoveryKindRoutes(
    model=Backup,
    spec_model=BackupSpec,
    create_model=BackupCreate,
    list_model=BackupList,
    cache=keys.BACKUP_CACHE,
    plural_title="Backups",
    noun="backup",
    phases=BackupPhase,
)


def register(registry: OperationRegistry) -> None:
    ROUTES.register(registry)
