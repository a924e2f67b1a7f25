"""Restore handlers: route Kopf's causes to ``dockyard.operator.restores.lifecycle``.

- create, resume at start-up, and every change (the ``dockyard.io/approved-by``
  annotation, ``spec.dryRun`` turned off): one step of the life cycle
  (``RestoreRuns.drive``); waiting for a plan or a safety backup is a
  ``TemporaryError`` with its delay, which Kopf keeps across restarts;
- deletion: an inline run of the Restore is cancelled (its staging database dropped).
"""

from __future__ import annotations

from typing import Any

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import RESTORES
from dockyard.operator.restores.lifecycle import RestoreRuns
from dockyard.operator.services import OperatorMemo


def _runs(memo: OperatorMemo) -> RestoreRuns:
    return memo.services.restores


@kopf.on.resume(API_VERSION, RESTORES.plural)
@kopf.on.create(API_VERSION, RESTORES.plural)
@kopf.on.update(API_VERSION, RESTORES.plural)
async def drive(*, namespace: str | None, name: str, memo: Any, retry: int, **_: Any) -> None:
    if namespace is None:  # Restores are namespaced; Kopf's types are general
        raise kopf.PermanentError(f"restore {name} has no namespace")
    outcome = await _runs(memo).drive(namespace, name)
    outcome.raise_if_unfinished(retry)


@kopf.on.delete(API_VERSION, RESTORES.plural, optional=True)
async def cancel(*, uid: str | None, memo: Any, **_: Any) -> None:
    if uid:
        _runs(memo).context.cancel(uid)
