"""BackupSchedules over REST: the objects kubectl sees, read from the API's watch cache
and written to the apiserver as the caller.

The contract of every kind (``kinds``), the paged lists of the backup kinds
(``recovery``, filtered by ``?environment=``), and ``POST .../{name}/run``, which sets
the ``dockyard.io/run-now`` annotation so the operator takes a backup at once. The
cron is checked by the same model as the CRD's schema: a six-field expression is a 422
naming ``spec.schedule`` with what was expected.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from dockyard.api import keys
from dockyard.api.openapi import OperationRegistry
from dockyard.api.routes.recovery import MetadataInput, RecoveryKindRoutes
from dockyard.core.models.backup_schedule import BackupSchedule, BackupScheduleSpec
from dockyard.core.models.common import API_VERSION


class BackupScheduleCreate(BaseModel):
    """The body of ``POST .../backupschedules``."""

    model_config = ConfigDict(extra="forbid")

    api_version: str | None = Field(
        default=None, alias="apiVersion", description=f"optional; {API_VERSION}"
    )
    kind: str | None = Field(default=None, description="optional; BackupSchedule")
    metadata: MetadataInput = Field(description="name, labels and annotations")
    spec: BackupScheduleSpec = Field(description="when and how to back up, and what to keep")


class BackupScheduleList(BaseModel):
    """A page of the backup schedules of a namespace, ordered by name."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    items: list[BackupSchedule] = Field(description="the schedules on this page")
    next_cursor: str | None = Field(
        default=None, alias="nextCursor", description="pass as ?cursor= for the next page"
    )
    resource_version: str = Field(
        alias="resourceVersion", description="the cache's resourceVersion for this list"
    )


ROUTES = RecoveryKindRoutes(
    model=BackupSchedule,
    spec_model=BackupScheduleSpec,
    create_model=BackupScheduleCreate,
    list_model=BackupScheduleList,
    cache=keys.BACKUP_SCHEDULE_CACHE,
    plural_title="BackupSchedules",
    noun="backup schedule",
    runnable=True,
)


def register(registry: OperationRegistry) -> None:
    ROUTES.register(registry)
