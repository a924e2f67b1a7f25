"""The CR models validate what a manifest or a request body may say, with field paths."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from dockyard.core.models import (
    Condition,
    ConditionStatus,
    CRDInfo,
    DeletionPolicy,
    Environment,
    EnvironmentSpec,
    EnvironmentStatus,
    RuleReason,
    Tier,
    ValidationRule,
)


def _errors(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[tuple[str | int, ...], str]]:
    return [(tuple(error["loc"]), error["type"]) for error in exc.value.errors()]


def _spec(**overrides: Any) -> dict[str, Any]:
    return {"tier": "staging", "image": "registry.example.com/shop/api:1.4.2", **overrides}


def test_a_minimal_spec_gets_the_documented_defaults() -> None:
    spec = EnvironmentSpec.model_validate(_spec())

    assert spec.tier is Tier.STAGING
    assert spec.replicas is None
    assert spec.port == 8080
    assert spec.database.enabled is True
    assert spec.database.deletion_policy is DeletionPolicy.RETAIN
    assert spec.suspend is False


def test_wire_names_are_camel_case_and_python_names_are_accepted_too() -> None:
    by_wire = EnvironmentSpec.model_validate(_spec(database={"deletionPolicy": "Snapshot"}))
    by_name = EnvironmentSpec.model_validate(_spec(database={"deletion_policy": "Snapshot"}))

    assert by_wire == by_name
    assert by_wire.model_dump(mode="json")["database"] == {
        "enabled": True,
        "deletionPolicy": "Snapshot",
    }


def test_default_database_is_not_shared_between_specs() -> None:
    first = EnvironmentSpec.model_validate(_spec())
    second = EnvironmentSpec.model_validate(_spec())

    first.database.enabled = False

    assert second.database.enabled is True


def test_unknown_fields_are_rejected_with_their_path() -> None:
    with pytest.raises(ValidationError) as exc:
        EnvironmentSpec.model_validate(_spec(replica=3, database={"retention": "7d"}))

    assert sorted(_errors(exc)) == [
        (("database", "retention"), "extra_forbidden"),
        (("replica",), "extra_forbidden"),
    ]


def test_bad_enum_values_are_rejected_with_their_path() -> None:
    with pytest.raises(ValidationError) as exc:
        EnvironmentSpec.model_validate(_spec(tier="prod", database={"deletionPolicy": "Drop"}))

    assert sorted(_errors(exc)) == [
        (("database", "deletionPolicy"), "enum"),
        (("tier",), "enum"),
    ]


def test_tier_and_image_are_required() -> None:
    with pytest.raises(ValidationError) as exc:
        EnvironmentSpec.model_validate({})

    assert sorted(_errors(exc)) == [(("image",), "missing"), (("tier",), "missing")]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("replicas", -1),
        ("replicas", 101),
        ("port", 0),
        ("port", 65536),
        ("image", ""),
        ("image", "shop/api 1.0"),
        ("image", "x" * 513),
    ],
)
def test_out_of_range_values_are_rejected(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as exc:
        EnvironmentSpec.model_validate(_spec(**{field: value}))

    assert [loc for loc, _ in _errors(exc)] == [(field,)]


def test_an_environment_object_from_the_api_server_parses() -> None:
    body = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {
            "name": "shop",
            "namespace": "team-a",
            "generation": 3,
            "creationTimestamp": "2025-01-02T03:04:05Z",
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": _spec(tier="production", replicas=2),
        "status": {
            "observedGeneration": 3,
            "phase": "Ready",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "lastTransitionTime": "2025-01-02T03:05:00Z",
                    "reason": "AllChildrenReady",
                    "message": "",
                }
            ],
            "url": "https://shop.example.com",
        },
    }

    env = Environment.model_validate(body)

    assert env.metadata.generation == 3
    assert env.metadata.creation_timestamp == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert env.spec.tier is Tier.PRODUCTION
    assert env.status.conditions[0].status is ConditionStatus.TRUE
    assert env.model_dump(mode="json", exclude_none=True)["metadata"]["managedFields"] == [
        {"manager": "kubectl"}
    ]


def test_api_version_and_kind_default_to_the_class() -> None:
    env = Environment.model_validate({"spec": _spec()})

    assert (env.api_version, env.kind) == ("dockyard.io/v1alpha1", "Environment")
    assert env.status == EnvironmentStatus()


def test_a_body_of_another_kind_is_rejected() -> None:
    with pytest.raises(ValidationError, match=r"expected apiVersion dockyard\.io/v1alpha1"):
        Environment.model_validate({"kind": "Backup", "spec": _spec()})


def test_condition_follows_the_kubernetes_shape() -> None:
    condition = Condition(
        type="DatabaseReady",
        status=ConditionStatus.FALSE,
        observed_generation=2,
        last_transition_time=datetime(2025, 1, 1, tzinfo=UTC),
        reason="ServerUnreachable",
        message="connection refused",
    )

    assert condition.model_dump(mode="json") == {
        "type": "DatabaseReady",
        "status": "False",
        "observedGeneration": 2,
        "lastTransitionTime": "2025-01-01T00:00:00Z",
        "reason": "ServerUnreachable",
        "message": "connection refused",
    }


def test_condition_rejects_a_reason_kubernetes_would_refuse() -> None:
    with pytest.raises(ValidationError) as exc:
        Condition.model_validate(
            {
                "type": "Ready",
                "status": "Maybe",
                "lastTransitionTime": "2025-01-01T00:00:00Z",
                "reason": "not camel case",
                "message": "",
            }
        )

    assert sorted(_errors(exc)) == [(("reason",), "string_pattern_mismatch"), (("status",), "enum")]


def test_crd_info_derives_its_names() -> None:
    info = CRDInfo(kind="RestoreDrill", plural="restoredrills", short_names=("drill",))

    assert info.singular == "restoredrill"
    assert info.name == "restoredrills.dockyard.io"
    assert info.api_version == "dockyard.io/v1alpha1"
    assert info.list_kind == "RestoreDrillList"
    assert info.categories == ("dockyard",)


def test_crd_info_rejects_names_kubernetes_would_refuse() -> None:
    with pytest.raises(ValueError, match="'Envs' is not a lowercase DNS label"):
        CRDInfo(kind="Environment", plural="environments", short_names=("Envs",))


def test_validation_rule_renders_only_what_is_set() -> None:
    plain = ValidationRule(rule="self.a <= self.b", message="a must not exceed b")
    full = ValidationRule(
        rule="self.a <= self.b",
        message="a must not exceed b",
        message_expression="'a is ' + string(self.a)",
        field_path=".a",
        reason=RuleReason.FORBIDDEN,
    )

    assert plain.to_schema() == {"rule": "self.a <= self.b", "message": "a must not exceed b"}
    assert full.to_schema() == {
        "rule": "self.a <= self.b",
        "message": "a must not exceed b",
        "messageExpression": "'a is ' + string(self.a)",
        "fieldPath": ".a",
        "reason": "FieldValueForbidden",
    }
