"""ScalingPolicy handlers: route Kopf's causes to the scaling reconciler.

- create, update of the spec, and resume at start-up: one pass; an unfinished pass
  becomes ``TemporaryError`` (retried with backoff) or ``PermanentError``;
- every ``scaling_interval`` seconds, a pass for every policy: schedule windows open and
  close, and the status follows the HPA's. One operator-wide task (started with the
  services in ``main``) over the policies seen in watch events does this rather than a
  Kopf timer, because Kopf puts a finalizer on every object that has a timer, and a
  policy needs none (its HPA goes with it by owner reference), so deleting a policy
  never waits for the operator;
- an event on any Restore: a pass for every policy of its namespace, so that a restore
  pauses the policy of its target at once, and its end resumes it;
- any event on a policy: it is remembered for the periodic passes; deleted, it is
  forgotten and the others of its namespace get a pass, as a policy it refused may now
  hold the environment.

The logic lives in ``dockyard.operator.scaling``; these functions only translate.
"""

from __future__ import annotations

from typing import Any

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import RESTORES, SCALING_POLICIES
from dockyard.operator.services import OperatorMemo, namespaced, reconciles


@reconciles(SCALING_POLICIES, on_update="spec")
async def reconcile(
    *, namespace: str | None, name: str, memo: OperatorMemo, retry: int, **_: Any
) -> None:
    outcome = await memo.services.scaling.reconcile((namespaced(namespace, name), name))
    outcome.raise_if_unfinished(retry)


@kopf.on.event(API_VERSION, RESTORES.plural, id="restores-scaling")
async def restore_changed(
    *, type: str, namespace: str | None, memo: OperatorMemo, **_: Any
) -> None:
    # The initial listing (type None) is covered by the policies' own resume passes.
    if type is None or namespace is None:
        return
    await memo.services.scaling.refresh_namespace(namespace)


@kopf.on.event(API_VERSION, SCALING_POLICIES.plural, id="policy-seen")
async def policy_changed(
    *, type: str, namespace: str | None, name: str, memo: OperatorMemo, **_: Any
) -> None:
    """Keep the policies the periodic passes serve (``ScalingReconciler.known``).

    Kept from watch events rather than with ``kopf.index``: Kopf holds back every
    handler of the operator until each indexed resource has been listed in every
    watched namespace, and a namespace deleted while it is being listed (the tests make
    and delete them by the dozen) leaves that gate closed for good.
    """
    if namespace is None:
        return
    reconciler = memo.services.scaling
    if type != "DELETED":
        reconciler.known.add((namespace, name))  # the initial listing too (type None)
        return
    reconciler.known.discard((namespace, name))
    reconciler.locks.forget((namespace, name))
    await reconciler.refresh_namespace(namespace, skip=name)
