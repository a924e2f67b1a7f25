"""The CRDs generated from the models: structural, documented, and kept in sync on disk."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import pytest
import yaml
from pydantic import Field

from dockyard.core import crd_schema, crds
from dockyard.core.models import Condition, CRModel, Environment, EnvironmentSpec, ValidationRule
from dockyard.core.models.environment import PINNED_TAG_PATTERN
from dockyard.core.models.workload import CREDENTIAL_NAME_PATTERN

Schema = dict[str, Any]

# Keywords a structural schema must never contain after conversion.
FORBIDDEN_KEYWORDS = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "title", "const", "$schema"}


def walk(schema: Schema, path: str = "") -> Iterator[tuple[str, Schema]]:
    """Every schema node with its field path; property names are not keywords."""
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from walk(child, f"{path}.{name}")
    if isinstance(schema.get("items"), dict):
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


@pytest.fixture(scope="module")
def crd() -> Schema:
    return crds.render_crd(Environment)


@pytest.fixture(scope="module")
def root(crd: Schema) -> Schema:
    schema: Schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_environment_schema_has_no_json_schema_only_keywords(root: Schema) -> None:
    offending = [
        (path, sorted(FORBIDDEN_KEYWORDS & node.keys()))
        for path, node in walk(root)
        if FORBIDDEN_KEYWORDS & node.keys()
    ]

    assert offending == []


def test_every_environment_property_has_a_description(root: Schema) -> None:
    undocumented = [
        path
        for path, node in walk(root)
        if path not in ("", ".metadata") and not node.get("description")
    ]

    assert undocumented == []


def test_every_environment_node_has_a_type(root: Schema) -> None:
    untyped = [path for path, node in walk(root) if "type" not in node]

    assert untyped == []


def test_environment_envelope_is_what_kubernetes_expects(root: Schema) -> None:
    assert list(root["properties"]) == ["apiVersion", "kind", "metadata", "spec", "status"]
    assert root["properties"]["metadata"] == {"type": "object"}
    assert root["properties"]["apiVersion"]["type"] == "string"
    assert "default" not in root["properties"]["kind"]
    assert root["required"] == ["spec"]
    assert root["description"].startswith("An Environment")


def test_environment_spec_carries_its_cel_rules(root: Schema) -> None:
    rules = root["properties"]["spec"]["x-kubernetes-validations"]

    assert [(rule["rule"], rule["message"]) for rule in rules[:2]] == [
        ("self.tier == oldSelf.tier", "tier is immutable"),
        (
            "self.tier != 'production' || !has(self.replicas) || self.replicas >= 2",
            "production environments need at least 2 replicas",
        ),
    ]
    assert "!self.image.endsWith(':latest')" in rules[2]["rule"]
    assert rules[3]["message"] == "ttl is only allowed for development environments"
    assert [rule["fieldPath"] for rule in rules] == [".tier", ".replicas", ".image", ".ttl", ".env"]
    assert all(list(rule)[:2] == ["rule", "message"] for rule in rules)


def test_cel_rules_sit_on_the_nodes_they_judge(root: Schema) -> None:
    with_rules = [path for path, node in walk(root) if "x-kubernetes-validations" in node]

    assert with_rules == ["", ".spec", ".spec.resources", ".spec.env[]", ".spec.ttl"]


def test_a_new_environments_name_is_held_to_the_apis_rule(root: Schema) -> None:
    [rule] = root["x-kubernetes-validations"]

    assert rule["rule"] == (
        "oldSelf.hasValue() || (size(self.metadata.name) <= 53 "
        "&& self.metadata.name.matches(r'^[a-z]([-a-z0-9]*[a-z0-9])?$'))"
    )
    assert rule["optionalOldSelf"] is True  # checked on create; names never change
    assert rule["message"].startswith("metadata.name must be a DNS-1035 label")


def test_only_environments_narrow_their_names() -> None:
    narrowed = [
        kind.crd.kind
        for kind in crds.ALL_KINDS
        if "x-kubernetes-validations"
        in crds.render_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    ]

    assert narrowed == ["Environment"]


def test_secret_looking_variables_must_come_from_a_secret(root: Schema) -> None:
    item = root["properties"]["spec"]["properties"]["env"]["items"]
    rules = {rule["message"]: rule["rule"] for rule in item["x-kubernetes-validations"]}

    assert rules["exactly one of value and valueFrom must be set"] == (
        "has(self.value) != has(self.valueFrom)"
    )
    [secret_rule] = [rule for message, rule in rules.items() if "PASSWORD" in message]
    assert "(?i)(PASSWORD|TOKEN|SECRET|KEY)" in secret_rule
    assert "has(self.valueFrom)" in secret_rule


@pytest.mark.parametrize(
    ("name", "secret_looking"),
    [
        ("DB_PASSWORD", True),
        ("api_token", True),
        ("AWS_SECRET_ACCESS", True),
        ("STRIPE_KEY", True),
        ("LOG_LEVEL", False),
        ("PORT", False),
    ],
)
def test_credential_pattern_catches_names_in_any_case(name: str, secret_looking: bool) -> None:
    # The same RE2-compatible pattern the CEL rule uses.
    assert (re.search(CREDENTIAL_NAME_PATTERN, name) is not None) is secret_looking


def test_env_is_a_list_map_keyed_by_name(root: Schema) -> None:
    env = root["properties"]["spec"]["properties"]["env"]

    assert env["x-kubernetes-list-type"] == "map"
    assert env["x-kubernetes-list-map-keys"] == ["name"]


@pytest.mark.parametrize(
    ("image", "allowed"),
    [
        ("registry.example.com/shop/api:1.4.2", True),
        ("registry.example.com:5000/shop/api:2025.01", True),
        ("shop/api@sha256:" + "a" * 64, True),
        ("shop/api:latest@sha256:" + "a" * 64, True),
        ("shop/api:latest", False),
        ("shop/api", False),
        ("registry.example.com:5000/shop/api", False),
        ("registry.example.com:5000/shop/api:latest", False),
    ],
)
def test_production_image_rule_accepts_only_pinned_images(image: str, allowed: bool) -> None:
    # The same expression as the CEL rule, over the same RE2-compatible pattern.
    pinned = "@" in image or (
        re.search(PINNED_TAG_PATTERN, image) is not None and not image.endswith(":latest")
    )

    assert pinned is allowed


def test_environment_spec_defaults_are_in_the_schema(root: Schema) -> None:
    spec = root["properties"]["spec"]

    assert spec["required"] == ["tier", "image"]
    assert spec["properties"]["port"]["default"] == 8080
    assert spec["properties"]["database"]["default"] == {
        "enabled": True,
        "deletionPolicy": "Retain",
    }
    assert "default" not in spec["properties"]["replicas"]
    assert spec["properties"]["replicas"] == {
        "description": spec["properties"]["replicas"]["description"],
        "type": "integer",
        "minimum": 0,
        "maximum": 100,
    }


def test_enums_are_typed_strings(root: Schema) -> None:
    tier = root["properties"]["spec"]["properties"]["tier"]

    assert tier["type"] == "string"
    assert tier["enum"] == ["development", "staging", "production"]
    assert tier["description"].startswith("How critical")  # the field's, not the enum's


def test_conditions_are_a_list_map_keyed_by_type(root: Schema) -> None:
    conditions = root["properties"]["status"]["properties"]["conditions"]

    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "x-dockyard-list-map-keys" not in conditions["items"]
    assert conditions["items"]["properties"]["lastTransitionTime"]["format"] == "date-time"


def test_crd_names_and_version(crd: Schema) -> None:
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == "environments.dockyard.io"
    assert crd["spec"]["group"] == "dockyard.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": "Environment",
        "listKind": "EnvironmentList",
        "plural": "environments",
        "singular": "environment",
        "shortNames": ["env"],
        "categories": ["dockyard"],
    }
    [version] = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)
    assert version["subresources"] == {"status": {}}


def test_printer_columns(crd: Schema) -> None:
    columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]

    assert [(c["name"], c["type"], c["jsonPath"]) for c in columns] == [
        ("Tier", "string", ".spec.tier"),
        ("Phase", "string", ".status.phase"),
        ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status'),
        ("Replicas", "integer", ".status.replicas.desired"),
        ("Available", "integer", ".status.replicas.available"),
        ("URL", "string", ".status.url"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    assert all(column["description"] for column in columns)


# --- the conversion rules, on small models ---------------------------------------------


class Inner(CRModel):
    """A nested part."""

    value: int = Field(description="A value.")
    undocumented: str = ""


class Outer(CRModel):
    """A model with an undocumented nested field."""

    inner: Inner = Field(description="The nested part.")


def test_a_missing_description_names_the_field_path() -> None:
    with pytest.raises(
        crd_schema.MissingDescriptionError, match=r"Outer: inner\.undocumented has no"
    ):
        crds.structural_schema(Outer)


class Shapes(CRModel):
    """Every shape the converter translates."""

    fixed: Literal["v1"] = Field(default="v1", description="A constant.")
    positive: int = Field(gt=0, description="Strictly positive.")
    labels: dict[str, str] = Field(default_factory=dict, description="A string map.")
    anything: dict[str, Any] = Field(default_factory=dict, description="Free-form JSON.")
    tags: set[str] = Field(default_factory=set, description="Distinct tags.")
    when: datetime | None = Field(default=None, description="A timestamp.")
    quantity: int | str = Field(default=1, description="A count or a quantity.")
    ruled: Annotated[str, ValidationRule("self != 'x'", "not x")] = Field(
        default="y", description="A string with its own rule."
    )


@pytest.fixture(scope="module")
def shapes() -> Schema:
    properties: Schema = crds.structural_schema(Shapes)["properties"]
    return properties


def test_const_becomes_a_single_value_enum(shapes: Schema) -> None:
    assert shapes["fixed"]["enum"] == ["v1"]
    assert shapes["fixed"]["type"] == "string"


def test_exclusive_bounds_use_the_openapi_v3_0_spelling(shapes: Schema) -> None:
    assert shapes["positive"]["minimum"] == 0
    assert shapes["positive"]["exclusiveMinimum"] is True


def test_string_maps_use_additional_properties(shapes: Schema) -> None:
    assert shapes["labels"]["type"] == "object"
    assert shapes["labels"]["additionalProperties"] == {"type": "string"}


def test_free_form_objects_preserve_unknown_fields(shapes: Schema) -> None:
    assert shapes["anything"]["x-kubernetes-preserve-unknown-fields"] is True
    assert "additionalProperties" not in shapes["anything"]


def test_sets_become_set_lists(shapes: Schema) -> None:
    assert shapes["tags"]["x-kubernetes-list-type"] == "set"
    assert "uniqueItems" not in shapes["tags"]


def test_optional_datetimes_become_date_time_strings(shapes: Schema) -> None:
    assert shapes["when"] == {
        "description": "A timestamp.",
        "type": "string",
        "format": "date-time",
    }


def test_int_or_string_unions_use_the_kubernetes_extension(shapes: Schema) -> None:
    assert shapes["quantity"]["x-kubernetes-int-or-string"] is True
    assert "type" not in shapes["quantity"]


def test_field_level_cel_rules_land_on_the_field(shapes: Schema) -> None:
    assert shapes["ruled"]["x-kubernetes-validations"] == [
        {"rule": "self != 'x'", "message": "not x"}
    ]


class Port(CRModel):
    """An item whose lists are maps keyed by an optional field, which Kubernetes refuses."""

    list_map_keys = ("name",)

    name: str | None = Field(default=None, description="Port name.")


class Ports(CRModel):
    """Lists of keyed items."""

    ports: list[Port] = Field(default_factory=list, description="Ports.")


class AtomicConditions(CRModel):
    """A list whose field overrides what its item model asks for."""

    conditions: list[Condition] = Field(
        default_factory=list,
        description="Replaced as a whole.",
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )


def test_a_list_map_key_must_be_required_in_the_items() -> None:
    with pytest.raises(crds.StructuralSchemaError, match=r"Ports: ports: list map key 'name'"):
        crds.structural_schema(Ports)


def test_a_field_can_override_the_list_type_of_its_items() -> None:
    conditions = crds.structural_schema(AtomicConditions)["properties"]["conditions"]

    assert conditions["x-kubernetes-list-type"] == "atomic"
    assert "x-kubernetes-list-map-keys" not in conditions


class BadDefault(CRModel):
    """A default the schema itself forbids (pydantic does not validate defaults)."""

    code: str = Field(default="abc", pattern=r"^[0-9]+$", description="Digits.")


def test_an_invalid_default_is_an_error() -> None:
    with pytest.raises(crds.StructuralSchemaError, match=r"BadDefault: code: invalid default"):
        crds.structural_schema(BadDefault)


class Node(CRModel):
    """A tree, which a structural schema cannot describe."""

    children: list[Node] = Field(default_factory=list, description="Child nodes.")


def test_a_recursive_model_is_an_error() -> None:
    with pytest.raises(crds.StructuralSchemaError, match="Node contains itself"):
        crds.structural_schema(Node)


class Ambiguous(CRModel):
    """A union apiextensions cannot express."""

    value: int | bool = Field(description="Either.")


def test_an_unsupported_union_is_an_error() -> None:
    with pytest.raises(crds.StructuralSchemaError, match=r"Ambiguous: value: unions other than"):
        crds.structural_schema(Ambiguous)


def test_spec_models_convert_on_their_own() -> None:
    schema = crds.structural_schema(EnvironmentSpec)

    assert schema["type"] == "object"
    assert schema["required"] == ["tier", "image"]


# --- the files in crds/ -----------------------------------------------------------------


def generated_files() -> list[str]:
    """The file of every registered kind, as render_all names and orders them."""
    return sorted(f"{kind.crd.plural}.{kind.crd.group}.yaml" for kind in crds.ALL_KINDS)


def test_render_all_names_files_after_the_crd_and_marks_them_generated() -> None:
    files = crds.render_all()

    assert list(files) == generated_files()
    text = files["environments.dockyard.io.yaml"]
    assert text.startswith(
        "# Generated by 'dockyard crds' from dockyard/core/models; do not edit.\n"
    )
    assert yaml.safe_load(text) == crds.render_crd(Environment)


def test_render_all_is_deterministic() -> None:
    assert crds.render_all() == crds.render_all()


def test_check_all_is_empty_after_write_all(tmp_path: Path) -> None:
    written = crds.write_all(tmp_path / "crds")

    assert written == [tmp_path / "crds" / name for name in generated_files()]
    assert crds.check_all(tmp_path / "crds") == []


def test_check_all_reports_a_hand_edited_file(tmp_path: Path) -> None:
    crds.write_all(tmp_path)
    path = tmp_path / "environments.dockyard.io.yaml"
    path.write_text(path.read_text().replace("maximum: 100", "maximum: 1000"))

    assert crds.check_all(tmp_path) == ["environments.dockyard.io.yaml"]


def test_check_all_reports_a_missing_file(tmp_path: Path) -> None:
    crds.write_all(tmp_path)
    path = tmp_path / "environments.dockyard.io.yaml"
    path.unlink()

    assert crds.check_all(tmp_path) == ["environments.dockyard.io.yaml"]


def test_check_all_reports_a_missing_directory(tmp_path: Path) -> None:
    assert crds.check_all(tmp_path / "absent") == generated_files()


def test_check_all_reports_an_extra_generated_file(tmp_path: Path) -> None:
    crds.write_all(tmp_path)
    (tmp_path / "gone.dockyard.io.yaml").write_text(crds.HEADER)
    (tmp_path / "kustomization.yaml").write_text("resources: []\n")

    assert crds.check_all(tmp_path) == ["gone.dockyard.io.yaml"]


def test_write_all_removes_stale_generated_files_only(tmp_path: Path) -> None:
    (tmp_path / "gone.dockyard.io.yaml").write_text(crds.HEADER)
    (tmp_path / "handwritten.dockyard.io.yaml").write_text("kind: Secret\n")

    crds.write_all(tmp_path)

    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [*generated_files(), "handwritten.dockyard.io.yaml"]
    )


def test_backups_and_drills_can_be_listed_by_their_environment() -> None:
    from dockyard.core.models import Backup, RestoreDrill

    for kind in (Backup, RestoreDrill):
        [version] = crds.render_crd(kind)["spec"]["versions"]
        assert version["selectableFields"] == [{"jsonPath": ".spec.environmentRef.name"}]
    [version] = crds.render_crd(Environment)["spec"]["versions"]
    assert "selectableFields" not in version
