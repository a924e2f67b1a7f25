"""BackupSchedule handlers, and the default schedule of production Environments.

- create, any change (spec, or the ``dockyard.io/run-now`` annotation), resume, and a
  timer every ``backup_schedule_interval`` seconds: one ``ScheduleRuns.tick``;
- create and resume of an Environment: its default BackupSchedule, when it should have
  one (``dockyard.operator.environments.defaults``), beside the Environment's own handlers.

The logic lives in ``dockyard.operator.runs``; these functions only translate.
"""

from __future__ import annotations

from typing import Any, cast

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import BACKUP_SCHEDULES, ENVIRONMENTS
from dockyard.operator.backups.schedules import ScheduleRuns
from dockyard.operator.environments.defaults import default_schedule_name, ensure_default_schedule

MEMO_KEY = "backup_schedules"
"""Where the startup handler puts the operator's ``ScheduleRuns`` in Kopf's memo."""


def _runs(memo: Any) -> ScheduleRuns:
    return cast(ScheduleRuns, memo[MEMO_KEY])


def _namespace(namespace: str | None, name: str) -> str:
    if namespace is None:
        raise kopf.PermanentError(f"{name} has no namespace")
    return namespace


@kopf.on.resume(API_VERSION, BACKUP_SCHEDULES.plural)
@kopf.on.create(API_VERSION, BACKUP_SCHEDULES.plural)
@kopf.on.update(API_VERSION, BACKUP_SCHEDULES.plural)
async def reconcile(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await _runs(memo).tick(_namespace(namespace, name), name)


async def tick(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await _runs(memo).tick(_namespace(namespace, name), name)


def register_timer(interval: float) -> None:
    """Run ``tick`` for every BackupSchedule every ``interval`` seconds."""
    kopf.timer(API_VERSION, BACKUP_SCHEDULES.plural, interval=interval, id="schedule-tick")(tick)


@kopf.on.delete(API_VERSION, BACKUP_SCHEDULES.plural, optional=True)
async def forget(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    _runs(memo).forget(namespace or "", name)


@kopf.on.resume(API_VERSION, ENVIRONMENTS.plural, id="default-backup-schedule")
@kopf.on.create(API_VERSION, ENVIRONMENTS.plural, id="default-backup-schedule")
async def default_schedule(
    *, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> None:
    context = _runs(memo).context
    if await ensure_default_schedule(context, _namespace(namespace, name), name):
        kopf.info(
            body,
            reason="DefaultBackupSchedule",
            message=f"Created BackupSchedule {default_schedule_name(name)} (production default)",
        )
