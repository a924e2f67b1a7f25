"""Environment handlers: route Kopf's causes to the reconciler, and its outcome back to Kopf.

- create, update of the spec, and resume at start-up: one reconcile pass; an
  unfinished pass becomes ``TemporaryError`` (retried with backoff) or
  ``PermanentError``;
- a timer every ``reconcile_interval`` seconds, the first one interval after the
  environment appears: ttl expiry and drift repair (registered by
  ``register_drift_repair``, as the interval is a setting);
- an index of the children per kind, and of the ScalingPolicies, Backups and
  RestoreDrills by environment (``environments.children``), which Kopf fills before
  any handler runs: passes read them there instead of asking the apiserver;
- an event on any child labelled ``app.kubernetes.io/managed-by=dockyard`` (changed or
  deleted): a pass for its controlling Environment, so drift is repaired within
  moments instead of at the next timer tick; when only the child's status changed
  (the object is the one the operator applied), a Deployment's new status refreshes
  the Environment's status alone, and any other child's needs nothing;
- deletion: the database's deletionPolicy, behind the operator's finalizer;
- create and resume: the default BackupSchedule and RestoreDrill of a production
  Environment, each when it should have one (``environments.defaults``), with an Event
  ``DefaultBackupSchedule`` or ``DefaultRestoreDrill`` for each created.

The logic lives in ``dockyard.operator.environments``; these functions only translate.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import CHILD_TYPES, ENVIRONMENTS
from dockyard.operator.apply import controller_of
from dockyard.operator.builders.metadata import MANAGED_BY, MANAGED_BY_LABEL
from dockyard.operator.environments import deletion
from dockyard.operator.environments.children import (
    RELATED_TYPES,
    index_by_environment,
    index_child,
    index_id,
    related_index_id,
)
from dockyard.operator.environments.defaults import ensure_defaults
from dockyard.operator.environments.reconciler import Key
from dockyard.operator.services import OperatorMemo, namespaced, reconciles


def _key(namespace: str | None, name: str) -> Key:
    return namespaced(namespace, name), name


@reconciles(ENVIRONMENTS, on_update="spec")
async def reconcile(
    *, namespace: str | None, name: str, memo: OperatorMemo, retry: int, **_: Any
) -> None:
    outcome = await memo.services.environments.reconcile(_key(namespace, name))
    outcome.raise_if_unfinished(retry)


@kopf.on.delete(API_VERSION, ENVIRONMENTS.plural, optional=False)
async def finalize(
    *,
    namespace: str | None,
    name: str,
    memo: OperatorMemo,
    retry: int,
    runtime: timedelta,
    **_: Any,
) -> None:
    reconciler = memo.services.environments
    outcome = await deletion.finalize(reconciler, _key(namespace, name), runtime=runtime)
    outcome.raise_if_unfinished(retry)


async def repair(*, namespace: str | None, name: str, memo: OperatorMemo, **_: Any) -> None:
    await memo.services.environments.repair(_key(namespace, name))


def register_drift_repair(interval: float) -> None:
    """Run ``repair`` for every environment every ``interval`` seconds."""
    # The create or resume pass has just run: the first repair is due one interval later.
    kopf.timer(
        API_VERSION,
        ENVIRONMENTS.plural,
        interval=interval,
        initial_delay=interval,
        id="drift-repair",
    )(repair)


async def child_changed(
    *, type: str, body: kopf.Body, namespace: str | None, memo: OperatorMemo, **_: Any
) -> None:
    # The initial listing (type None) and additions are the operator's own doing, or
    # covered by the resume pass; edits and deletions may be drift.
    if type not in ("MODIFIED", "DELETED"):
        return
    owner = controller_of(body, ENVIRONMENTS.kind)
    if owner is None:
        return
    environments = memo.services.environments
    if type == "MODIFIED" and environments.children.only_status_changed(body):
        # The object the operator applied, with a new status: only a Deployment's
        # status is read (replicas, rollout), and it needs no child applied again.
        if body.get("kind") == "Deployment":
            await environments.refresh_status(_key(namespace, owner))
        return
    await environments.reconcile_owner(_key(namespace, owner))


for _child in CHILD_TYPES:
    kopf.on.event(
        _child.api_version,
        _child.plural,
        labels={MANAGED_BY_LABEL: MANAGED_BY},
        id=f"{_child.plural}-changed",
    )(child_changed)
    kopf.index(
        _child.api_version,
        _child.plural,
        labels={MANAGED_BY_LABEL: MANAGED_BY},
        id=index_id(_child),
    )(index_child)

for _related in RELATED_TYPES:
    kopf.index(API_VERSION, _related.plural, id=related_index_id(_related))(index_by_environment)


@kopf.on.resume(API_VERSION, ENVIRONMENTS.plural, id="production-defaults")
@kopf.on.create(API_VERSION, ENVIRONMENTS.plural, id="production-defaults")
async def production_defaults(
    *, namespace: str | None, name: str, body: kopf.Body, memo: OperatorMemo, **_: Any
) -> None:
    for kind, created in await ensure_defaults(memo.services.runs, *_key(namespace, name)):
        kopf.info(
            body, reason=f"Default{kind}", message=f"Created {kind} {created} (production default)"
        )
