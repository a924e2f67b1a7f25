"""What a compromised operator pod cannot do with its account's rights.

The attacks: someone holding the operator's ServiceAccount token (a flaw in Dockyard or
a dependency, or the image) uses the rights of its ClusterRole, which RBAC grants in
every namespace because environments live anywhere, to become more than Dockyard: mint
a token for another account, run a privileged pod or a pod as another workload's
account, bind its own ClusterRole to an account it controls, expose a node port, or
change and delete Secrets Dockyard never made. ``manifests/operator-bounds-policy.yaml``
holds the account to the shapes of the objects Dockyard builds. Each write below is one
RBAC allows the account, and each is refused by the apiserver with the policy's message
and leaves nothing behind.

The session's operator itself runs as that account (``operator_account`` in
``tests/conftest.py``), so the rest of the suite shows that the bounds let every object
Dockyard makes by.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import OPERATOR_ACCOUNT, PLATFORM_NAMESPACE, Kubectl

pytestmark = pytest.mark.usefixtures("operator_account")

AS_OPERATOR = f"--as=system:serviceaccount:{PLATFORM_NAMESPACE}:{OPERATOR_ACCOUNT}"
LABELS = {"app.kubernetes.io/managed-by": "dockyard"}
RESTRICTED = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
}


def _pod(account: str, **extra: Any) -> dict[str, Any]:
    container = {
        "name": "app",
        "image": "busybox",
        "securityContext": json.loads(json.dumps(RESTRICTED)),
    }
    return {
        "serviceAccountName": account,
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True},
        "containers": [container],
        **extra,
    }


def _deployment(name: str, pod: dict[str, Any]) -> dict[str, Any]:
    selector = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": LABELS},
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": selector}, "spec": pod},
        },
    }


def _job(name: str, pod: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": LABELS},
        "spec": {"template": {"spec": {**pod, "restartPolicy": "Never"}}},
    }


def _capable() -> dict[str, Any]:
    pod = _pod("shop")
    pod["containers"][0]["securityContext"]["capabilities"]["add"] = ["SYS_ADMIN"]
    return pod


ATTACKS: dict[str, tuple[dict[str, Any], str]] = {
    "a token for the namespace's default account": (
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": "minted",
                "labels": LABELS,
                "annotations": {"kubernetes.io/service-account.name": "default"},
            },
        },
        "makes only Opaque Secrets",
    ),
    # (A privileged one the test bed's apiserver refuses itself: --allow-privileged=false.)
    "a pod with the capability to mount file systems": (
        _deployment("shop", _capable()),
        "restricted profile",
    ),
    "a pod on the node's network": (
        _deployment("shop", _pod("shop", hostNetwork=True)),
        "restricted profile",
    ),
    "the node's file system": (
        _deployment("shop", _pod("shop", volumes=[{"name": "root", "hostPath": {"path": "/"}}])),
        "mount only emptyDir, Secret and PersistentVolumeClaim",
    ),
    "a pod as another workload's account": (
        _deployment("shop", _pod("deployer")),
        "as their own account, not as deployer",
    ),
    "a pod holding its account's token": (
        _deployment("shop", _pod("shop", automountServiceAccountToken=True)),
        "mount no API token",
    ),
    "a Job as another workload's account": (
        _job("run", _pod("deployer")),
        "as their own account, not as deployer",
    ),
    "its own ClusterRole bound to an account it controls": (
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "backup-runner-mine", "labels": LABELS},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "dockyard:operator-controller",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "backup-runner-mine"}],
        },
        "binds a Backup runner's Role to that runner's account only",
    ),
    "a Role that reads Secrets": (
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "backup-runner-mine", "labels": LABELS},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
        },
        "patch that Backup's status, and nothing else",
    ),
    "a node port": (
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "shop", "labels": LABELS},
            "spec": {"type": "NodePort", "ports": [{"port": 80}]},
        },
        "ClusterIP, with no external IPs",
    ),
    "another address's traffic": (
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "shop", "labels": LABELS},
            "spec": {"ports": [{"port": 80}], "externalIPs": ["203.0.113.7"]},
        },
        "ClusterIP, with no external IPs",
    ),
}


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_the_operators_account_makes_only_what_dockyard_builds(
    kubectl: Kubectl, namespace: str, attack: str
) -> None:
    manifest, message = ATTACKS[attack]
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    # RBAC alone lets the account make it.
    assert kubectl("auth", "can-i", "create", _resource(kind), "-n", namespace, AS_OPERATOR,
                   check=False).stdout.strip() == "yes"  # fmt: skip

    refused = kubectl(
        "create", "-n", namespace, "-f", "-", AS_OPERATOR, input=json.dumps(manifest), check=False
    )

    assert refused.returncode != 0
    assert "ValidatingAdmissionPolicy" in refused.stderr, refused.stderr
    assert message in refused.stderr, refused.stderr
    assert kubectl("get", _resource(kind), name, "-n", namespace, check=False).returncode != 0


def test_nothing_is_written_in_the_clusters_own_namespaces(kubectl: Kubectl) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "dockyard-planted", "labels": LABELS},
        "stringData": {"x": "y"},
    }

    refused = kubectl(
        "create", "-n", "kube-system", "-f", "-", AS_OPERATOR,
        input=json.dumps(secret), check=False,
    )  # fmt: skip

    assert "the Dockyard operator writes nothing in kube-system" in refused.stderr, refused.stderr
    assert kubectl("get", "secret", "dockyard-planted", "-n", "kube-system",
                   check=False).returncode != 0  # fmt: skip


def test_what_dockyard_did_not_make_is_neither_changed_nor_deleted(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl("create", "secret", "generic", "payments", "-n", namespace, "--from-literal=key=v1")

    changed = kubectl(
        "patch", "secret", "payments", "-n", namespace, AS_OPERATOR,
        "--type=merge", "-p", '{"stringData": {"key": "v2"}}', check=False,
    )  # fmt: skip
    deleted = kubectl("delete", "secret", "payments", "-n", namespace, AS_OPERATOR, check=False)

    assert "changes and deletes only what Dockyard made" in changed.stderr, changed.stderr
    assert "changes and deletes only what Dockyard made" in deleted.stderr, deleted.stderr
    kept = kubectl("get", "secret", "payments", "-n", namespace, "-o", "json").stdout
    assert json.loads(kept)["data"]["key"] == "djE="  # v1


def test_what_dockyard_made_it_may_change_and_delete(kubectl: Kubectl, namespace: str) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "shop-database", "labels": LABELS},
        "stringData": {"uri": "postgresql://shop@db/shop"},
    }
    kubectl("create", "-n", namespace, "-f", "-", AS_OPERATOR, input=json.dumps(secret))
    kubectl(
        "patch", "secret", "shop-database", "-n", namespace, AS_OPERATOR,
        "--type=merge", "-p", '{"stringData": {"uri": "postgresql://shop@db2/shop"}}',
    )  # fmt: skip
    kubectl("delete", "secret", "shop-database", "-n", namespace, AS_OPERATOR)

    assert kubectl("get", "secret", "shop-database", "-n", namespace, check=False).returncode != 0


def _resource(kind: str) -> str:
    return {
        "Secret": "secrets",
        "Deployment": "deployments.apps",
        "Job": "jobs.batch",
        "RoleBinding": "rolebindings.rbac.authorization.k8s.io",
        "Role": "roles.rbac.authorization.k8s.io",
        "Service": "services",
    }[kind]
