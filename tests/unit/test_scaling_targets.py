"""An environment scaled by a ScalingPolicy leaves its Deployment's replicas to the HPA,
after handing the field over so the API server does not reset it."""

from __future__ import annotations

from typing import Any

from dockyard.core.models.environment import Environment
from dockyard.operator.builders import environment as build
from dockyard.operator.scaling.targets import handover, owns_replicas, scaling_policy_for


def _env(**spec: Any) -> Environment:
    return Environment.model_validate(
        {
            "metadata": {"name": "shop", "namespace": "team-a", "uid": "uid-1"},
            "spec": {"tier": "staging", "image": "registry.example.com/shop:1.4.2", **spec},
        }
    )


def _policy(name: str, target: str = "shop", accepted: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if accepted is not None:
        status["conditions"] = [
            {
                "type": "Accepted",
                "status": accepted,
                "reason": "Accepted" if accepted == "True" else "Conflict",
                "message": "",
                "lastTransitionTime": "2026-03-02T10:00:00Z",
            }
        ]
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "ScalingPolicy",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"targetRef": {"name": target}, "minReplicas": 1, "maxReplicas": 3},
        "status": status,
    }


def _deployment(replicas: int | None, *owners: tuple[str, str]) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "shop",
            "namespace": "team-a",
            "managedFields": [
                {
                    "manager": manager,
                    "operation": operation,
                    "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}},
                }
                for manager, operation in owners
            ],
        },
        "spec": {} if replicas is None else {"replicas": replicas},
    }


# -- the Deployment ----------------------------------------------------------------------


def test_an_autoscaled_deployment_leaves_replicas_out() -> None:
    manifest = build.deployment(_env(replicas=3), autoscaled=True)
    assert "replicas" not in manifest["spec"]
    assert manifest["spec"]["selector"] == {"matchLabels": build.selector(_env())}


def test_a_deployment_without_a_policy_applies_its_replicas() -> None:
    assert build.deployment(_env(replicas=3))["spec"]["replicas"] == 3


def test_a_suspended_environment_runs_no_pods_whatever_the_policy_says() -> None:
    assert build.deployment(_env(suspend=True), autoscaled=True)["spec"]["replicas"] == 0


def test_workload_children_pass_autoscaling_to_the_deployment() -> None:
    children = build.workload_children(_env(), ingress_namespace="x", autoscaled=True)
    [deployment] = [m for m in children.present if m["kind"] == "Deployment"]
    assert "replicas" not in deployment["spec"]


# -- which policy scales an environment ---------------------------------------------------


def test_a_policy_targeting_the_environment_scales_it() -> None:
    policies = [_policy("other", target="billing"), _policy("shop-scaling", accepted="True")]
    assert scaling_policy_for(policies, "shop") == "shop-scaling"


def test_a_new_policy_counts_before_its_first_pass() -> None:
    assert scaling_policy_for([_policy("fresh")], "shop") == "fresh"


def test_a_refused_policy_does_not_count() -> None:
    assert scaling_policy_for([_policy("refused", accepted="False")], "shop") is None


def test_no_policy_for_the_environment() -> None:
    assert scaling_policy_for([_policy("other", target="billing")], "shop") is None
    assert scaling_policy_for([], "shop") is None


# -- handing spec.replicas over -----------------------------------------------------------


def test_ownership_is_read_from_managed_fields() -> None:
    deployment = _deployment(3, ("dockyard-operator", "Apply"))
    assert owns_replicas(deployment, "dockyard-operator")
    assert not owns_replicas(deployment, "someone-else")


def test_an_update_is_not_an_applied_field() -> None:
    assert not owns_replicas(_deployment(3, ("dockyard-operator", "Update")), "dockyard-operator")


def test_a_deployment_without_managed_fields_is_owned_by_nobody() -> None:
    assert not owns_replicas({"metadata": {}, "spec": {"replicas": 1}}, "dockyard-operator")


def test_the_handover_applies_only_replicas_at_the_live_value() -> None:
    assert handover(_deployment(3), fallback=2) == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop", "namespace": "team-a"},
        "spec": {"replicas": 3},
    }


def test_a_deployment_at_zero_is_handed_over_at_the_fallback() -> None:
    assert handover(_deployment(0), fallback=2)["spec"] == {"replicas": 2}
    assert handover(_deployment(None), fallback=2)["spec"] == {"replicas": 2}
