"""Backup handlers: route Kopf's causes to ``dockyard.operator.backups.lifecycle``.

- create, and resume at start-up: one step of the life cycle (``BackupRuns.drive``);
  an unfinished step (a retry after a backoff, a Job to follow) is a
  ``TemporaryError`` with its delay, which Kopf keeps across restarts;
- deletion: the artifacts of every attempt are deleted, behind the operator's finalizer;
- a timer on Backups with a ``ttl``: records ``status.expiresAt`` and deletes the Backup
  once it has passed (``BackupRuns.expire``).
"""

from __future__ import annotations

from typing import Any

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import BACKUPS
from dockyard.operator.services import OperatorMemo, namespaced, reconciles


@reconciles(BACKUPS, on_update="none")
async def run(
    *, namespace: str | None, name: str, memo: OperatorMemo, retry: int, **_: Any
) -> None:
    outcome = await memo.services.backups.drive(namespaced(namespace, name), name)
    outcome.raise_if_unfinished(retry)


@kopf.on.delete(API_VERSION, BACKUPS.plural, optional=False)
async def delete_artifacts(
    *, namespace: str | None, name: str, body: kopf.Body, memo: OperatorMemo, retry: int, **_: Any
) -> None:
    backups = memo.services.backups
    outcome = await backups.finalize(namespaced(namespace, name), name, dict(body))
    outcome.raise_if_unfinished(retry)


async def expire(*, namespace: str | None, name: str, memo: OperatorMemo, **_: Any) -> None:
    await memo.services.backups.expire(namespaced(namespace, name), name)


def _has_ttl(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("ttl"))


def register_ttl_timer(interval: float) -> None:
    """Look at every Backup with a ttl every ``interval`` seconds."""
    kopf.timer(API_VERSION, BACKUPS.plural, interval=interval, id="ttl", when=_has_ttl)(expire)
