"""RestoreDrill handlers.

- create, any change (spec, or the ``dockyard.io/run-now`` annotation), resume, and a
  timer every ``backup_schedule_interval`` seconds: one ``DrillRuns.tick``, which never
  waits for a restore (inline runs go on in tasks of their own). While a run's Job
  works, the tick says to look again soon: the timer raises it as a ``TemporaryError``
  with its delay, so Kopf calls it again after that delay instead of the interval (the
  other causes leave the following to the timer);
- deletion, behind the operator's finalizer (which the timer needs anyway): the run in
  progress is stopped and every scratch database of the drill dropped; a server that
  does not answer makes it a ``TemporaryError``, retried, so none is left behind.

A production Environment's default drill is made by ``handlers.environments``.

The logic lives in ``dockyard.operator.drills.lifecycle``; these functions only translate.
"""

from __future__ import annotations

from typing import Any

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import RESTORE_DRILLS
from dockyard.operator.services import OperatorMemo, namespaced, reconciles


@reconciles(RESTORE_DRILLS)
async def reconcile(*, namespace: str | None, name: str, memo: OperatorMemo, **_: Any) -> None:
    await memo.services.drills.tick(namespaced(namespace, name), name)


async def tick(
    *, namespace: str | None, name: str, memo: OperatorMemo, retry: int = 0, **_: Any
) -> None:
    outcome = await memo.services.drills.tick(namespaced(namespace, name), name)
    outcome.raise_if_unfinished(retry)


def register_timer(interval: float) -> None:
    """Run ``tick`` for every RestoreDrill every ``interval`` seconds."""
    kopf.timer(API_VERSION, RESTORE_DRILLS.plural, interval=interval, id="drill-tick")(tick)


@kopf.on.delete(API_VERSION, RESTORE_DRILLS.plural)
async def drop_scratch_databases(
    *, namespace: str | None, name: str, body: kopf.Body, memo: OperatorMemo, retry: int, **_: Any
) -> None:
    drills = memo.services.drills
    outcome = await drills.finalize(namespaced(namespace, name), name, dict(body))
    outcome.raise_if_unfinished(retry)
