"""BackupSchedule handlers.

- create, any change (spec, or the ``dockyard.io/run-now`` annotation), resume, and a
  timer every ``backup_schedule_interval`` seconds: one ``ScheduleRuns.tick``.

A production Environment's default schedule is made by ``handlers.environments``.
The logic lives in ``dockyard.operator.backups.schedules``; these functions only translate.
"""

from __future__ import annotations

from typing import Any

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import BACKUP_SCHEDULES
from dockyard.operator.services import OperatorMemo, namespaced, reconciles


@reconciles(BACKUP_SCHEDULES)
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
