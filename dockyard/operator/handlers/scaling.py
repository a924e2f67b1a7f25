"""ScalingPolicy handlers: route Kopf's causes to the scaling reconciler.

- create, update of the spec, and resume at start-up: one pass; an unfinished pass
  becomes ``TemporaryError`` (retried with backoff) or ``PermanentError``;
- every ``scaling_interval`` seconds, a pass for every policy: schedule windows open and
  close, and the status follows the HPA's. One operator-wide task over the policies
  seen in watch events does this rather than a Kopf timer, because Kopf puts a
  finalizer on every object that has a timer, and a policy needs none (its HPA goes
  with it by owner reference), so deleting a policy never waits for the operator;
- an event on any Restore: a pass for every policy of its namespace, so that a restore
  pauses the policy of its target at once, and its end resumes it;
- any event on a policy: it is remembered for the periodic passes; deleted, it is
  forgotten and the others of its namespace get a pass, as a policy it refused may now
  hold the environment.

The logic lives in ``dockyard.operator.scaling``; these functions only translate.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import RESTORES, SCALING_POLICIES
from dockyard.core.settings import Settings
from dockyard.operator.scaling.reconciler import Key, ScalingReconciler, refresh_periodically

MEMO_KEY = "scaling"
"""Where the startup handler puts the operator's ``ScalingReconciler`` in Kopf's memo."""
REFRESH_TASK = "scaling-refresh-task"
KNOWN_POLICIES = "scaling-known-policies"


def _reconciler(memo: Any) -> ScalingReconciler:
    return cast(ScalingReconciler, memo[MEMO_KEY])


def _key(namespace: str | None, name: str) -> Key:
    if namespace is None:  # ScalingPolicies are namespaced; Kopf types are general
        raise kopf.PermanentError(f"scaling policy {name} has no namespace")
    return namespace, name


@kopf.on.resume(API_VERSION, SCALING_POLICIES.plural)
@kopf.on.create(API_VERSION, SCALING_POLICIES.plural)
@kopf.on.update(API_VERSION, SCALING_POLICIES.plural, field="spec")
async def reconcile(*, namespace: str | None, name: str, memo: Any, retry: int, **_: Any) -> None:
    outcome = await _reconciler(memo).reconcile(_key(namespace, name))
    outcome.raise_if_unfinished(retry)


def _known(memo: Any) -> set[Key]:
    """The policies the operator serves, by (namespace, name), for the periodic passes.

    Kept from watch events rather than with ``kopf.index``: Kopf holds back every
    handler of the operator until each indexed resource has been listed in every
    watched namespace, and a namespace deleted while it is being listed (the tests make
    and delete them by the dozen) leaves that gate closed for good.
    """
    known: set[Key] = memo.setdefault(KNOWN_POLICIES, set())
    return known


@kopf.on.startup()
async def start_refreshing(*, memo: Any, **_: Any) -> None:
    settings: Settings = memo["settings"]
    known = _known(memo)
    memo[REFRESH_TASK] = asyncio.create_task(
        refresh_periodically(
            lambda: _reconciler(memo), lambda: list(known), settings.scaling_interval
        ),
        name="scaling-policy-refresh",
    )


@kopf.on.cleanup()
async def stop_refreshing(*, memo: Any, **_: Any) -> None:
    task: asyncio.Task[None] | None = memo.get(REFRESH_TASK)
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@kopf.on.event(API_VERSION, RESTORES.plural, id="restores-scaling")
async def restore_changed(*, type: str, namespace: str | None, memo: Any, **_: Any) -> None:
    # The initial listing (type None) is covered by the policies' own resume passes.
    if type is None or namespace is None:
        return
    await _reconciler(memo).refresh_namespace(namespace)


@kopf.on.event(API_VERSION, SCALING_POLICIES.plural, id="policy-seen")
async def policy_changed(
    *, type: str, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    if namespace is None:
        return
    if type != "DELETED":
        _known(memo).add((namespace, name))  # the initial listing too (type None)
        return
    _known(memo).discard((namespace, name))
    _reconciler(memo).forget((namespace, name))
    await _reconciler(memo).refresh_namespace(namespace, skip=name)
