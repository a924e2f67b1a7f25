"""Restore handlers: route Kopf's causes to ``dockyard.operator.restores.lifecycle``.

- create, resume at start-up, and every change (the ``dockyard.io/approved-by``
  annotation, ``spec.dryRun`` turned off): one step of the life cycle
  (``RestoreRuns.drive``); waiting for a plan, a safety backup or a runner Job is a
  ``TemporaryError`` with its delay, which Kopf keeps across restarts;
- deletion needs no finalizer and no handler of its own: an inline run of the Restore
  reads its Restore every few seconds and is cancelled once it is gone or being deleted,
  up to the switch-over (``dockyard.operator.runs.inline``). Kopf would deliver a
  deletion to this Restore's handlers only after the run holding them ended;
- gone (the watch's DELETED event): the runner Job of an attempt in a Job is stopped
  and every database of the restore dropped, since no pass follows it any more.
"""

from __future__ import annotations

from typing import Any

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import RESTORES
from dockyard.operator.services import OperatorMemo, namespaced, reconciles


@reconciles(RESTORES)
async def drive(
    *, namespace: str | None, name: str, memo: OperatorMemo, retry: int, **_: Any
) -> None:
    outcome = await memo.services.restores.drive(namespaced(namespace, name), name)
    outcome.raise_if_unfinished(retry)


@kopf.on.event(API_VERSION, RESTORES.plural)
async def forget(*, type: str | None, body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    if type == "DELETED":
        await memo.services.restores.forget(dict(body))
