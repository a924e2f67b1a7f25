"""BackupSchedules over REST: the objects kubectl sees, read from the API's watch cache
and written to the apiserver as the caller.

The contract of every kind (``kinds``), the paged lists of the backup kinds
(``recovery``, filtered by ``?environment=``), and ``POST .../{name}/run``, which sets
the ``dockyard.io/run-now`` annotation so the operator takes a backup at once. The
cron is checked by the same model as the CRD's schema: a six-field expression is a 422
naming ``spec.schedule`` with what was expected.
"""

from __future__ import annotations

from dockyard.api import keys
from dockyard.api.openapi import OperationRegistry
from dockyard.api.routes.models import create_body, list_body
from dockyard.api.routes.recovery import MetadataInput, RecoveryKindRoutes
from dockyard.core.models.backup_schedule import BackupSchedule

BackupScheduleCreate = create_body(
    BackupSchedule,
    MetadataInput,
    doc="The body of ``POST .../backupschedules``.",
    spec="when and how to back up, and what to keep",
)
BackupScheduleList = list_body(
    BackupSchedule,
    doc="A page of the backup schedules of a namespace, ordered by name.",
    items="the schedules on this page",
)

ROUTES = RecoveryKindRoutes(
    BackupSchedule,
    BackupScheduleCreate,
    BackupScheduleList,
    keys.BACKUP_SCHEDULE_CACHE,
    runnable=True,
)


def register(registry: OperationRegistry) -> None:
    ROUTES.register(registry)
