"""What the Environment reconciler asks about scaling, so its Deployment and the HPA agree.

While a ScalingPolicy scales an environment, the HPA sets the Deployment's
``spec.replicas``; the environment's server-side apply must then leave that field out,
or every pass would put the spec's count back. Leaving it out is not enough on its own:
a field that only the operator's field manager owns is *removed* when the manager stops
applying it, and the API server then defaults it to 1. So before its first apply
without replicas, the environment hands the field over (Kubernetes' documented
procedure for handing replicas to an HPA): a second field manager applies only
``spec.replicas`` at its live value, so the field has another owner and keeps its value
when the operator's manager lets go of it.

An environment counts as scaled while some ScalingPolicy targets it that is not refused
(Accepted is not False): a new policy is counted before its first pass, which is
harmless (replicas stay where they are until the HPA moves them) and keeps the
environment from undoing the HPA's first scaling.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from dockyard.core.kube import KubeClient
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.scaling import ScalingPolicy, ScalingPolicyConditionType
from dockyard.core.resources import DEPLOYMENTS, SCALING_POLICIES, Manifest
from dockyard.operator.apply import FIELD_MANAGER, apply_as, get, items
from dockyard.operator.store import valid

HANDOVER_MANAGER: Final = "dockyard-replicas-handover"
"""The field manager that holds ``spec.replicas`` between the environment and the HPA."""


def scaling_policy_for(policies: Iterable[Mapping[str, Any]], environment: str) -> str | None:
    """The name of the policy among ``policies`` (raw objects of one namespace) that scales
    ``environment``, or None. Refused policies (Accepted=False) do not count."""
    names: list[str] = []
    for policy in valid(ScalingPolicy, policies):
        if policy.spec.target_ref.name != environment:
            continue
        accepted = next(
            (
                c
                for c in policy.status.conditions
                if c.type == ScalingPolicyConditionType.ACCEPTED.value
            ),
            None,
        )
        if accepted is None or accepted.status is not ConditionStatus.FALSE:
            names.append(policy.metadata.name or "")
    return min(names, default=None)


async def scaling_policy_of(kube: KubeClient, namespace: str, environment: str) -> str | None:
    """The policy that scales ``environment`` now, read from the API server."""
    # None when the ScalingPolicy CRD is not installed.
    return scaling_policy_for(await items(kube, SCALING_POLICIES, namespace), environment)


def owns_replicas(deployment: Mapping[str, Any], manager: str) -> bool:
    """Whether ``manager`` applied ``spec.replicas`` on ``deployment`` (by its managedFields)."""
    for entry in deployment.get("metadata", {}).get("managedFields") or ():
        if entry.get("manager") != manager or entry.get("operation") != "Apply":
            continue
        spec = (entry.get("fieldsV1") or {}).get("f:spec") or {}
        if "f:replicas" in spec:
            return True
    return False


def handover(deployment: Mapping[str, Any], fallback: int) -> Manifest:
    """The apply body that gives ``spec.replicas`` a second owner at its live value.

    A Deployment at 0 (an environment coming back from suspension) is handed over at
    ``fallback`` instead, as an HPA leaves a target at 0 alone and it would stay there.
    """
    meta = deployment["metadata"]
    live = (deployment.get("spec") or {}).get("replicas")
    replicas = live if isinstance(live, int) and live > 0 else fallback
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": meta["name"], "namespace": meta["namespace"]},
        "spec": {"replicas": replicas},
    }


async def hand_over_replicas(
    kube: KubeClient, namespace: str, deployment_name: str, *, fallback: int
) -> bool:
    """Hand ``spec.replicas`` of the Deployment over before the operator stops applying it.

    Does nothing (and returns False) when the Deployment does not exist yet or the
    operator's manager no longer owns the field (the HPA took it, or it was handed over).
    """
    deployment = await get(kube, DEPLOYMENTS.path(namespace, deployment_name))
    if deployment is None or not owns_replicas(deployment, FIELD_MANAGER):
        return False
    # Forced: the only other owner that could disagree is the operator's own manager,
    # whose value this replaces only when it is 0 (see handover).
    await apply_as(kube, handover(deployment, fallback), field_manager=HANDOVER_MANAGER)
    return True


__all__ = [
    "HANDOVER_MANAGER",
    "hand_over_replicas",
    "handover",
    "owns_replicas",
    "scaling_policy_for",
    "scaling_policy_of",
]
