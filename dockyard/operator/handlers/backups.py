"""Backup handlers: route Kopf's causes to ``dockyard.operator.backups.lifecycle``.

- create, and resume at start-up: one step of the life cycle (``BackupRuns.drive``);
  an unfinished step (a retry after a backoff, a Job to follow) is a
  ``TemporaryError`` with its delay, which Kopf keeps across restarts;
- deletion: the artifacts of every attempt are deleted, behind the operator's finalizer;
- a timer on Backups with a ``ttl``: records ``status.expiresAt`` and deletes the Backup
  once it has passed (``BackupRuns.expire``).
"""

from __future__ import annotations

from typing import Any, cast

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import BACKUPS
from dockyard.operator.backups.lifecycle import BackupRuns

MEMO_KEY = "backups"
"""Where the startup handler puts the operator's ``BackupRuns`` in Kopf's memo."""


def _runs(memo: Any) -> BackupRuns:
    return cast(BackupRuns, memo[MEMO_KEY])


def _namespace(namespace: str | None, name: str) -> str:
    if namespace is None:  # Backups are namespaced; Kopf's types are general
        raise kopf.PermanentError(f"backup {name} has no namespace")
    return namespace


@kopf.on.resume(API_VERSION, BACKUPS.plural)
@kopf.on.create(API_VERSION, BACKUPS.plural)
async def run(*, namespace: str | None, name: str, memo: Any, retry: int, **_: Any) -> None:
    outcome = await _runs(memo).drive(_namespace(namespace, name), name)
    outcome.raise_if_unfinished(retry)


@kopf.on.delete(API_VERSION, BACKUPS.plural, optional=False)
async def delete_artifacts(
    *, namespace: str | None, name: str, body: kopf.Body, memo: Any, retry: int, **_: Any
) -> None:
    outcome = await _runs(memo).finalize(_namespace(namespace, name), name, dict(body))
    outcome.raise_if_unfinished(retry)


async def expire(*, namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await _runs(memo).expire(_namespace(namespace, name), name)


def _has_ttl(spec: kopf.Spec, **_: Any) -> bool:
    return bool(spec.get("ttl"))


def register_ttl_timer(interval: float) -> None:
    """Look at every Backup with a ttl every ``interval`` seconds."""
    kopf.timer(API_VERSION, BACKUPS.plural, interval=interval, id="ttl", when=_has_ttl)(expire)
