"""BackupSchedule handlers, and the default schedule of production Environments.

- create, any change (spec, or the ``dockyard.io/run-now`` annotation), resume, and a
  timer every ``backup_schedule_interval`` seconds: one ``ScheduleRuns.tick``;
- create and resume of an Environment: its default BackupSchedule, when it should have
  one (``dockyard.operator.environments.defaults``), beside the Environment's own handlers.

The logic lives in ``dockyard.operator.backups.schedules`` and
``dockyard.operator.environments.defaults``; these functions only translate.
"""

from __future__ import annotations

from typing import Any

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import BACKUP_SCHEDULES, ENVIRONMENTS
from dockyard.operator.environments.defaults import default_schedule_name, ensure_default_schedule
from dockyard.operator.services import OperatorMemo, namespaced


@kopf.on.resume(API_VERSION, BACKUP_SCHEDULES.plural)
@kopf.on.create(API_VERSION, BACKUP_SCHEDULES.plural)
@kopf.on.update(API_VERSION, BACKUP_SCHEDULES.plural)
async def reconcile(*, namespace: str | None, name: str, memo: OperatorMemo, **_: Any) -> None:
    await tick(namespace=namespace, name=name, memo=memo)


async def tick(*, namespace: str | None, name: str, memo: OperatorMemo, **_: Any) -> None:
    await memo.services.schedules.tick(namespaced(namespace, name), name)


def register_timer(interval: float) -> None:
    """Run ``tick`` for every BackupSchedule every ``interval`` seconds."""
    kopf.timer(API_VERSION, BACKUP_SCHEDULES.plural, interval=interval, id="schedule-tick")(tick)


@kopf.on.delete(API_VERSION, BACKUP_SCHEDULES.plural, optional=True)
async def forget(*, namespace: str | None, name: str, memo: OperatorMemo, **_: Any) -> None:
    memo.services.schedules.forget(namespace or "", name)


@kopf.on.resume(API_VERSION, ENVIRONMENTS.plural, id="default-backup-schedule")
@kopf.on.create(API_VERSION, ENVIRONMENTS.plural, id="default-backup-schedule")
async def default_schedule(
    *, namespace: str | None, name: str, body: kopf.Body, memo: OperatorMemo, **_: Any
) -> None:
    context = memo.services.runs
    if await ensure_default_schedule(context, namespaced(namespace, name), name):
        kopf.info(
            body,
            reason="DefaultBackupSchedule",
            message=f"Created BackupSchedule {default_schedule_name(name)} (production default)",
        )
