"""The ScalingPolicy's models and CRD: what a valid policy is, in pydantic and in CEL."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dockyard.core.crds import render_crd
from dockyard.core.models.scaling import ScalingPolicy, ScalingPolicySpec

Schema = dict[str, Any]


def _spec(**fields: Any) -> dict[str, Any]:
    return {"targetRef": {"name": "shop"}, "minReplicas": 2, "maxReplicas": 5, **fields}


@pytest.fixture(scope="module")
def crd() -> Schema:
    return render_crd(ScalingPolicy)


def _spec_schema(crd: Schema) -> Schema:
    [version] = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


def test_defaults() -> None:
    spec = ScalingPolicySpec.model_validate(_spec())
    assert (spec.paused, spec.pause_during_restore, spec.schedules) == (False, True, [])
    assert spec.metrics is None
    assert spec.behavior is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"minReplicas": 6}, "minReplicas must not exceed maxReplicas"),
        (
            {
                "schedules": [
                    {"name": "a", "schedule": "@daily", "duration": "1h", "minReplicas": 6}
                ]
            },
            "every schedule's minReplicas must not exceed maxReplicas",
        ),
        ({"metrics": {}}, "set cpuUtilization, memoryUtilization or both"),
        ({"metrics": {"cpuUtilization": 0}}, "greater than or equal to 1"),
        ({"metrics": {"memoryUtilization": 101}}, "less than or equal to 100"),
        (
            {
                "schedules": [
                    {"name": "a", "schedule": "@daily", "duration": "0s", "minReplicas": 2}
                ]
            },
            "duration must be positive",
        ),
        (
            {
                "schedules": [
                    {"name": "a", "schedule": "@daily", "duration": "200h", "minReplicas": 2}
                ]
            },
            "duration must not exceed 168h",
        ),
        (
            {
                "schedules": [
                    {"name": "a", "schedule": "0 0 * * * *", "duration": "1h", "minReplicas": 2}
                ]
            },
            "expected 5 fields",
        ),
        (
            {"behavior": {"scaleUp": {"stabilizationWindowSeconds": 3601}}},
            "less than or equal to 3600",
        ),
        (
            {
                "behavior": {
                    "scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 15}]}
                }
            },
            "greater than or equal to 1",
        ),
        (
            {
                "behavior": {
                    "scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 1801}]}
                }
            },
            "less than or equal to 1800",
        ),
        ({"behavior": {"scaleDown": {"selectPolicy": "Average"}}}, "'Max', 'Min' or 'Disabled'"),
    ],
)
def test_invalid_specs_are_refused_with_the_apiserver_words(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        ScalingPolicySpec.model_validate(_spec(**fields))


def test_range_rules_are_cel_on_the_spec(crd: Schema) -> None:
    rules = {
        rule["message"]: rule["rule"] for rule in _spec_schema(crd)["x-kubernetes-validations"]
    }
    assert (
        rules["minReplicas must not exceed maxReplicas"] == "self.minReplicas <= self.maxReplicas"
    )
    assert (
        "self.schedules.all(s, s.minReplicas <= self.maxReplicas)"
        in rules["every schedule's minReplicas must not exceed maxReplicas"]
    )


def test_utilization_is_bounded_in_the_schema(crd: Schema) -> None:
    metrics = _spec_schema(crd)["properties"]["metrics"]["properties"]
    for name in ("cpuUtilization", "memoryUtilization"):
        assert (metrics[name]["minimum"], metrics[name]["maximum"]) == (1, 100)


def test_schedules_are_a_list_map_keyed_by_name(crd: Schema) -> None:
    schedules = _spec_schema(crd)["properties"]["schedules"]
    assert schedules["x-kubernetes-list-type"] == "map"
    assert schedules["x-kubernetes-list-map-keys"] == ["name"]
    assert schedules["items"]["properties"]["timeZone"]["default"] == "UTC"


def test_pause_during_restore_defaults_to_true_in_the_schema(crd: Schema) -> None:
    assert _spec_schema(crd)["properties"]["pauseDuringRestore"]["default"] is True


def test_crd_names_and_printer_columns(crd: Schema) -> None:
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "ScalingPolicy",
        "scalingpolicies",
        ["sp"],
    )
    [version] = crd["spec"]["versions"]
    columns = [c["name"] for c in version["additionalPrinterColumns"] if c["priority"] == 0]
    assert columns == [
        "Target",
        "Min",
        "Max",
        "Current",
        "Desired",
        "Active Schedule",
        "Paused",
        "Age",
    ]
    assert version["subresources"] == {"status": {}}
