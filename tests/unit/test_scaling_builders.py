"""The HorizontalPodAutoscaler of a ScalingPolicy, as the pure builder computes it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dockyard.core.models.environment import Environment
from dockyard.core.models.scaling import ScalingPolicy
from dockyard.operator.builders.scaling import build_hpa, replica_range
from dockyard.operator.builders.scaling_windows import Window

QUIET = datetime(2026, 3, 2, 20, 0, tzinfo=UTC)  # a Monday evening: no window open
BUSY = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday morning: office hours

OFFICE_HOURS = {"name": "office", "schedule": "0 9 * * 1-5", "duration": "8h", "minReplicas": 4}


def _policy(**spec: Any) -> ScalingPolicy:
    return ScalingPolicy.model_validate(
        {
            "metadata": {"name": "shop-scaling", "namespace": "team-a", "uid": "sp-uid"},
            "spec": {"targetRef": {"name": "shop"}, "minReplicas": 2, "maxReplicas": 8, **spec},
        }
    )


def _env() -> Environment:
    return Environment.model_validate(
        {
            "metadata": {"name": "shop", "namespace": "team-a", "uid": "env-uid"},
            "spec": {"tier": "staging", "image": "registry.example.com/shop:1.4.2"},
        }
    )


def test_the_hpa_scales_the_environment_deployment() -> None:
    hpa = build_hpa(_policy(metrics={"cpuUtilization": 70}), _env(), QUIET)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["kind"] == "HorizontalPodAutoscaler"
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "shop"},
        "minReplicas": 2,
        "maxReplicas": 8,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 70},
                },
            }
        ],
    }


def test_the_hpa_is_named_after_and_controlled_by_the_policy() -> None:
    meta = build_hpa(_policy(), _env(), QUIET)["metadata"]
    assert meta["name"] == "shop-scaling"
    assert meta["namespace"] == "team-a"
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "ScalingPolicy",
            "name": "shop-scaling",
            "uid": "sp-uid",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def test_the_hpa_carries_the_environment_labels_and_its_policy() -> None:
    labels = build_hpa(_policy(), _env(), QUIET)["metadata"]["labels"]
    assert labels == {
        "app.kubernetes.io/name": "shop",
        "app.kubernetes.io/instance": "shop",
        "app.kubernetes.io/managed-by": "dockyard",
        "app.kubernetes.io/part-of": "dockyard",
        "dockyard.io/tier": "staging",
        "dockyard.io/scaling-policy": "shop-scaling",
    }


def test_cpu_and_memory_targets_become_resource_metrics() -> None:
    metrics = build_hpa(
        _policy(metrics={"cpuUtilization": 60, "memoryUtilization": 75}), _env(), QUIET
    )["spec"]["metrics"]
    assert [(m["resource"]["name"], m["resource"]["target"]) for m in metrics] == [
        ("cpu", {"type": "Utilization", "averageUtilization": 60}),
        ("memory", {"type": "Utilization", "averageUtilization": 75}),
    ]


def test_memory_alone_is_the_only_metric() -> None:
    metrics = build_hpa(_policy(metrics={"memoryUtilization": 75}), _env(), QUIET)["spec"][
        "metrics"
    ]
    assert [m["resource"]["name"] for m in metrics] == ["memory"]


def test_without_metrics_the_hpa_holds_cpu_at_eighty_percent() -> None:
    [metric] = build_hpa(_policy(), _env(), QUIET)["spec"]["metrics"]
    assert metric["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 80},
    }


def test_behavior_maps_one_to_one() -> None:
    behavior = {
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Pods", "value": 4, "periodSeconds": 15},
                {"type": "Percent", "value": 100, "periodSeconds": 15},
            ],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 300,
            "selectPolicy": "Disabled",
        },
    }
    hpa = build_hpa(_policy(behavior=behavior), _env(), QUIET)
    assert hpa["spec"]["behavior"] == behavior


def test_one_direction_of_behavior_leaves_the_other_to_the_hpa() -> None:
    behavior = {"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}
    hpa = build_hpa(_policy(behavior=behavior), _env(), QUIET)
    assert hpa["spec"]["behavior"] == behavior


def test_no_behavior_leaves_it_out() -> None:
    assert "behavior" not in build_hpa(_policy(), _env(), QUIET)["spec"]
    assert "behavior" not in build_hpa(_policy(behavior={}), _env(), QUIET)["spec"]


def test_an_open_window_raises_the_floor() -> None:
    policy = _policy(schedules=[OFFICE_HOURS])
    assert build_hpa(policy, _env(), BUSY)["spec"]["minReplicas"] == 4
    assert build_hpa(policy, _env(), QUIET)["spec"]["minReplicas"] == 2


def test_a_window_below_the_spec_floor_changes_nothing() -> None:
    policy = _policy(minReplicas=5, schedules=[{**OFFICE_HOURS, "minReplicas": 3}])
    assert build_hpa(policy, _env(), BUSY)["spec"]["minReplicas"] == 5


def test_a_paused_policy_pins_the_hpa_even_in_a_window() -> None:
    policy = _policy(schedules=[OFFICE_HOURS])
    spec = build_hpa(policy, _env(), BUSY, pinned=3)["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (3, 3)


def test_the_replica_range_remembers_the_window() -> None:
    window = Window("office", BUSY, BUSY, 6)
    replicas = replica_range(_policy().spec, window)
    assert (replicas.minimum, replicas.maximum, replicas.window) == (6, 8, window)
    assert not replicas.pinned
    assert replica_range(_policy().spec, None, pinned=4).pinned
