"""The first CRD round trip: the apiserver enforces the generated schema and CEL rules,
and the operator sees valid objects and reports on them in status."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, Kubectl, get_json, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")


def _environment(name: str, **spec: object) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


INVALID = [
    ({"tier": "prod", "image": "shop:1.0"}, 'spec.tier: Unsupported value: "prod"'),
    ({"image": "shop:1.0"}, "spec.tier: Required value"),
    ({"tier": "staging"}, "spec.image: Required value"),
    ({"tier": "staging", "image": "shop:1.0", "replicas": -1}, "spec.replicas: Invalid value"),
    ({"tier": "staging", "image": "shop:1.0", "port": 70000}, "spec.port: Invalid value"),
    (
        {"tier": "production", "image": "shop:1.0", "replicas": 1},
        "spec.replicas: Invalid value: production environments need at least 2 replicas",
    ),
    (
        {"tier": "production", "image": "shop:latest", "replicas": 2},
        "spec.image: Invalid value: production images must be pinned",
    ),
    (
        {"tier": "staging", "image": "shop:1.0", "database": {"deletionPolicy": "Shred"}},
        'spec.database.deletionPolicy: Unsupported value: "Shred"',
    ),
    (
        {"tier": "staging", "image": "shop:1.0", "env": [{"name": "DB_PASSWORD", "value": "x"}]},
        "spec.env[0].value: Invalid value: variables whose name contains PASSWORD, TOKEN, "
        "SECRET or KEY must take their value from a Secret (valueFrom.secretKeyRef)",
    ),
    (
        {"tier": "staging", "image": "shop:1.0", "env": [{"name": "api_key", "value": "x"}]},
        "must take their value from a Secret",
    ),
    (
        {"tier": "staging", "image": "shop:1.0", "env": [{"name": "LOG_LEVEL"}]},
        "spec.env[0]: Invalid value: exactly one of value and valueFrom must be set",
    ),
    (
        {"tier": "staging", "image": "shop:1.0", "env": [{"name": "1X", "value": "x"}]},
        "spec.env[0].name: Invalid value",
    ),
    (
        {
            "tier": "staging",
            "image": "shop:1.0",
            "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
        },
        "spec.env[1]: Duplicate value",
    ),
    (
        {"tier": "staging", "image": "shop:1.0", "env": [{"name": "DATABASE_URL", "value": "x"}]},
        "spec.env: Invalid value: DATABASE_URL is set by Dockyard while the database is enabled",
    ),
    (
        {"tier": "staging", "image": "shop:1.0", "ttl": "72h"},
        "spec.ttl: Invalid value: ttl is only allowed for development environments",
    ),
    (
        {"tier": "development", "image": "shop:1.0", "ttl": "3 days"},
        'spec.ttl: Invalid value: "3 days": spec.ttl in body should match',
    ),
    (
        {"tier": "development", "image": "shop:1.0", "ttl": "0s"},
        'spec.ttl: Invalid value: "0s": ttl must be positive',
    ),
    (
        {"tier": "staging", "image": "shop:1.0", "ingress": {"host": "https://shop.example.com"}},
        'spec.ingress.host: Invalid value: "https://shop.example.com"',
    ),
    (
        {"tier": "staging", "image": "shop:1.0", "ingress": {"tlsSecretName": "cert"}},
        "spec.ingress.host: Required value",
    ),
    (
        {"tier": "staging", "image": "shop:1.0", "resources": {"limits": {"memory": "lots"}}},
        'spec.resources.limits.memory: Invalid value: "lots"',
    ),
    (
        {
            "tier": "staging",
            "image": "shop:1.0",
            "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "500m"}},
        },
        "spec.resources.requests.cpu: Invalid value: resources.requests.cpu must not exceed "
        "resources.limits.cpu",
    ),
]


@pytest.mark.parametrize(("spec", "message"), INVALID)
def test_invalid_environment_is_rejected_with_its_field_path(
    kubectl: Kubectl, namespace: str, spec: dict[str, object], message: str
) -> None:
    result = kubectl(
        "apply", "-n", namespace, "-f", "-", input=_environment("bad", **spec), check=False
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert kubectl("get", "environments", "-n", namespace, "-o", "name").stdout == ""


@pytest.mark.parametrize("name", ["a" * 54, "has.a-dot", "1shop"])
def test_a_name_the_api_would_refuse_is_refused_by_the_apiserver_too(
    kubectl: Kubectl, namespace: str, name: str
) -> None:
    """Kubernetes takes names of 253 characters, with dots; an Environment's Service,
    Secret and default schedule are named after it, so the CRD holds it to the API's
    rule; a Service's name must begin with a letter, so the environment's must too. A
    name of 53 characters is taken."""
    spec = {"tier": "staging", "image": "shop:1.0"}
    result = kubectl(
        "apply", "-n", namespace, "-f", "-", input=_environment(name, **spec), check=False
    )

    assert result.returncode != 0
    assert "metadata.name must be a DNS-1035 label (lowercase letters" in result.stderr
    assert "of at most 53 characters" in result.stderr
    assert kubectl("get", "environments", "-n", namespace, "-o", "name").stdout == ""
    kubectl("apply", "-n", namespace, "-f", "-", input=_environment("b" * 53, **spec))


EXAMPLES = sorted((ROOT / "docs" / "examples").glob("environment-*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[path.name for path in EXAMPLES])
def test_documented_examples_are_accepted(kubectl: Kubectl, example: Path) -> None:
    result = kubectl("apply", "--dry-run=server", "-f", str(example), check=False)

    assert result.returncode == 0, result.stderr


def test_unknown_fields_are_rejected(kubectl: Kubectl, namespace: str) -> None:
    result = kubectl(
        "apply",
        "--validate=strict",
        "-n",
        namespace,
        "-f",
        "-",
        input=_environment("typo", tier="staging", image="shop:1.0", replcias=3),
        check=False,
    )
    assert result.returncode != 0
    assert 'unknown field "spec.replcias"' in result.stderr


def test_tier_is_immutable(kubectl: Kubectl, namespace: str) -> None:
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=_environment(
            "shop", tier="development", image="shop:1.0", database={"enabled": False}
        ),
    )
    result = kubectl(
        "patch",
        "environment",
        "shop",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"tier": "staging"}}),
        check=False,
    )
    assert result.returncode != 0
    assert "spec.tier: Invalid value" in result.stderr
    assert "tier is immutable" in result.stderr


def test_defaults_are_filled_in_by_the_apiserver(kubectl: Kubectl, namespace: str) -> None:
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=_environment("defaults", tier="staging", image="shop:1.0"),
    )
    spec = get_json(kubectl, "environment", "defaults", "-n", namespace)["spec"]
    assert spec["database"] == {"enabled": True, "deletionPolicy": "Retain"}  # type: ignore[index]
    assert spec["port"] == 8080  # type: ignore[index]
    # Should an operator be running, leave no database behind.
    kubectl(
        "patch",
        "environment",
        "defaults",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"database": {"deletionPolicy": "Delete"}}}),
    )


def test_kubectl_explain_teaches_the_api(kubectl: Kubectl) -> None:
    explained = wait_for(
        lambda: kubectl("explain", "environment.spec.database", check=False).stdout, timeout=20
    )
    assert "deletionPolicy" in str(explained)
    assert "Retain" in str(explained)


@pytest.mark.usefixtures("operator_process")
def test_operator_writes_observed_generation_and_conditions(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=_environment(
            "shop", tier="development", image="shop:1.0", database={"enabled": False}
        ),
    )

    def status() -> dict[str, object]:
        obj = get_json(kubectl, "environment", "shop", "-n", namespace)
        return obj.get("status") or {}  # type: ignore[return-value]

    observed = wait_for(lambda: status().get("observedGeneration") == 1 and status(), timeout=60)
    assert isinstance(observed, dict)
    types = {c["type"]: c for c in observed["conditions"]}
    assert set(types) == {"Ready", "DatabaseReady", "WorkloadAvailable"}
    assert all(c["observedGeneration"] == 1 for c in types.values())
    assert observed["phase"] in ("Provisioning", "Ready")

    kubectl(
        "patch",
        "environment",
        "shop",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"suspend": True}}),
    )
    suspended = wait_for(lambda: status().get("observedGeneration") == 2 and status(), timeout=60)
    assert isinstance(suspended, dict)
    assert suspended["phase"] == "Suspended"
    printed = kubectl("get", "environment", "shop", "-n", namespace).stdout
    assert "Suspended" in printed
    assert "development" in printed
