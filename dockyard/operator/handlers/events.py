"""Event handlers: every watch event of an announcing kind goes to the ``Emitter``, and
to ``Observed``, which computes the status-based metrics from it.

Watch events carry the object as the apiserver stored it, so an event is logged only
for a status that was persisted. The initial listing (type None) announces each
object's current state again after a restart; the log keeps each event id once.
"""

from __future__ import annotations

from typing import Any

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import (
    BACKUP_SCHEDULES,
    BACKUPS,
    ENVIRONMENTS,
    RESTORE_DRILLS,
    RESTORES,
    SCALING_POLICIES,
)
from dockyard.operator.services import OperatorMemo


async def announce(*, type: str | None, body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    memo.services.observed.observe(type, body)
    await memo.services.events.observe(type, body)


for _kind in (ENVIRONMENTS, BACKUPS, BACKUP_SCHEDULES, RESTORES, RESTORE_DRILLS, SCALING_POLICIES):
    kopf.on.event(API_VERSION, _kind.plural, id="events")(announce)
