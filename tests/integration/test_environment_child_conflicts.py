"""Objects that are not an environment's are never taken over by it.

The attacks: a developer, who may write Environments and ScalingPolicies in their
namespace but not NetworkPolicies, Secrets or Deployments, names an Environment after an
object an administrator made there. The operator's forced server-side apply would take
the object over (rewriting a namespace-wide ``default-deny`` NetworkPolicy to cover only
the new environment's pods, or reading a hand-made ``<name>-database`` Secret's password
and mounting it into the developer's pods), and deleting the Environment would then
delete it. A ScalingPolicy would scale a hand-made Deployment of the target's name.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.conftest import Kubectl, wait_for
from tests.integration.test_backup_operator import _apply, _get

pytestmark = pytest.mark.usefixtures("operator_process")

IMAGE = "registry.example.com/shop/api:1.4.2"


def _environment(name: str, *, database: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": name},
        "spec": {"tier": "development", "image": IMAGE, "database": {"enabled": database}},
    }


def _condition(kubectl: Kubectl, namespace: str, kind: str, name: str, kind_of: str) -> Any:
    status = (_get(kubectl, namespace, kind, name) or {}).get("status") or {}
    return next((c for c in status.get("conditions") or () if c["type"] == kind_of), {})


def _wait_reason(
    kubectl: Kubectl, namespace: str, kind: str, name: str, kind_of: str, reason: str
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        found = _condition(kubectl, namespace, kind, name, kind_of)
        return found if found.get("reason") == reason else None

    found = wait_for(reached, timeout=60)
    assert isinstance(found, dict)
    return found


def test_an_environment_named_after_an_admins_network_policy_leaves_it_alone(
    kubectl: Kubectl, namespace: str
) -> None:
    deny = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "default-deny"},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
    }
    _apply(kubectl, namespace, deny)
    before = _get(kubectl, namespace, "networkpolicy", "default-deny")
    assert before is not None

    _apply(kubectl, namespace, _environment("default-deny"))

    ready = _wait_reason(
        kubectl, namespace, "environment", "default-deny", "Ready", "ChildConflict"
    )
    assert ready["status"] == "False"
    assert "NetworkPolicy default-deny exists and is not this Environment's" in ready["message"]
    assert "not made by Dockyard" in ready["message"]
    env = _get(kubectl, namespace, "environment", "default-deny") or {}
    assert env["status"]["phase"] == "Failed"
    after = _get(kubectl, namespace, "networkpolicy", "default-deny") or {}
    assert after["spec"] == before["spec"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert "ownerReferences" not in after["metadata"]
    # Nothing of the pass was applied: no workload runs under the conflicting name.
    assert _get(kubectl, namespace, "deployment", "default-deny") is None

    kubectl("delete", "environment", "default-deny", "-n", namespace, "--timeout=60s")
    assert _get(kubectl, namespace, "networkpolicy", "default-deny") is not None


def test_a_hand_made_database_secret_is_neither_read_nor_taken_over(
    kubectl: Kubectl, namespace: str
) -> None:
    uri = "postgresql://billing:s3cret@billing-db.internal:5432/billing"
    kubectl(
        "create", "secret", "generic", "billing-database", "-n", namespace,
        f"--from-literal=uri={uri}", "--from-literal=password=s3cret",
    )  # fmt: skip

    _apply(kubectl, namespace, _environment("billing", database=True))

    ready = _wait_reason(kubectl, namespace, "environment", "billing", "Ready", "ChildConflict")
    assert "Secret billing-database exists and is not this Environment's" in ready["message"]
    secret = _get(kubectl, namespace, "secret", "billing-database") or {}
    assert base64.b64decode(secret["data"]["uri"]).decode() == uri
    assert set(secret["data"]) == {"uri", "password"}
    assert "ownerReferences" not in secret["metadata"]
    # No pod of the developer's gets the Secret.
    assert _get(kubectl, namespace, "deployment", "billing") is None


def test_a_scaling_policy_never_scales_a_deployment_its_environment_does_not_run(
    kubectl: Kubectl, namespace: str
) -> None:
    labels = {"app": "payments"}
    _apply(
        kubectl,
        namespace,
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "payments"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": IMAGE}]},
                },
            },
        },
    )
    _apply(kubectl, namespace, _environment("payments"))
    # (Refused: ChildConflict; without that check, the apiserver's ChildRejected.)
    wait_for(
        lambda: (
            _condition(kubectl, namespace, "environment", "payments", "Ready").get("status")
            == "False"
        ),
        timeout=60,
    )

    _apply(
        kubectl,
        namespace,
        {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "ScalingPolicy",
            "metadata": {"name": "payments"},
            "spec": {"targetRef": {"name": "payments"}, "minReplicas": 1, "maxReplicas": 1},
        },
    )

    accepted = _wait_reason(
        kubectl, namespace, "scalingpolicy", "payments", "Accepted", "TargetNotManaged"
    )
    assert accepted["status"] == "False"
    assert "Deployment payments is not Environment payments's" in accepted["message"]
    assert kubectl("get", "hpa", "-n", namespace, "-o", "name").stdout.strip() == ""
    deployment = _get(kubectl, namespace, "deployment", "payments") or {}
    assert deployment["spec"]["replicas"] == 3
    assert "ownerReferences" not in deployment["metadata"]
