"""The apiserver enforces the ScalingPolicy's generated schema and CEL rules, with the
messages `kubectl apply` shows."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.conftest import Kubectl

pytestmark = pytest.mark.usefixtures("crds_installed")


def _policy(**spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "ScalingPolicy",
            "metadata": {"name": "shop"},
            "spec": {"targetRef": {"name": "shop"}, "minReplicas": 2, "maxReplicas": 5, **spec},
        }
    )


def _schedule(**fields: Any) -> dict[str, Any]:
    return {"name": "peak", "schedule": "0 9 * * 1-5", "duration": "8h", "minReplicas": 3, **fields}


INVALID = [
    (
        {"minReplicas": 6},
        "spec.minReplicas: Invalid value: minReplicas must not exceed maxReplicas",
    ),
    ({"minReplicas": 0}, "spec.minReplicas: Invalid value: 0"),
    ({"maxReplicas": 101}, "spec.maxReplicas: Invalid value: 101"),
    ({"metrics": {"cpuUtilization": 0}}, "spec.metrics.cpuUtilization: Invalid value: 0"),
    ({"metrics": {"cpuUtilization": 101}}, "spec.metrics.cpuUtilization: Invalid value: 101"),
    ({"metrics": {"memoryUtilization": 0}}, "spec.metrics.memoryUtilization: Invalid value: 0"),
    (
        {"metrics": {"memoryUtilization": 101}},
        "spec.metrics.memoryUtilization: Invalid value: 101",
    ),
    ({"metrics": {}}, "spec.metrics: Invalid value: set cpuUtilization, memoryUtilization or both"),
    (
        {"schedules": [_schedule(schedule="0 9 * * * *")]},
        'spec.schedules[0].schedule: Invalid value: "0 9 * * * *": expected 5 fields '
        "(minute hour day-of-month month day-of-week), got 6",
    ),
    (
        {"schedules": [_schedule(schedule="0 25 * * *")]},
        "hour (field 2) 25 is invalid",
    ),
    ({"schedules": [_schedule(schedule="@reboot")]}, "@reboot is not a supported macro"),
    (
        {"schedules": [_schedule(minReplicas=6)]},
        "spec.schedules: Invalid value: every schedule's minReplicas must not exceed maxReplicas",
    ),
    ({"schedules": [_schedule(duration="0s")]}, "duration must be positive"),
    ({"schedules": [_schedule(duration="1d")]}, "spec.schedules[0].duration: Invalid value"),
    (
        {"schedules": [_schedule(), _schedule()]},
        'spec.schedules[1]: Duplicate value: {"name":"peak"}',
    ),
    (
        {"behavior": {"scaleUp": {"stabilizationWindowSeconds": 3601}}},
        "spec.behavior.scaleUp.stabilizationWindowSeconds: Invalid value: 3601",
    ),
    (
        {"behavior": {"scaleDown": {"selectPolicy": "Average"}}},
        'spec.behavior.scaleDown.selectPolicy: Unsupported value: "Average"',
    ),
    (
        {
            "behavior": {
                "scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 15}]}
            }
        },
        "spec.behavior.scaleUp.policies[0].value: Invalid value: 0",
    ),
    (
        {
            "behavior": {
                "scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 1801}]}
            }
        },
        "spec.behavior.scaleUp.policies[0].periodSeconds: Invalid value: 1801",
    ),
]


@pytest.mark.parametrize(("spec", "message"), INVALID)
def test_invalid_policies_are_rejected_by_the_apiserver(
    kubectl: Kubectl, namespace: str, spec: dict[str, Any], message: str
) -> None:
    result = kubectl("apply", "-n", namespace, "-f", "-", input=_policy(**spec), check=False)
    assert result.returncode != 0, f"accepted: {spec}"
    assert message in result.stderr


def test_a_valid_policy_is_stored_with_its_defaults(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=_policy(schedules=[_schedule()]))
    stored = yaml.safe_load(kubectl("get", "sp", "shop", "-n", namespace, "-o", "yaml").stdout)
    assert stored["spec"]["pauseDuringRestore"] is True
    assert stored["spec"]["paused"] is False
    assert stored["spec"]["schedules"][0]["timeZone"] == "UTC"
