"""The apiserver itself refuses forged restore requester and approver annotations."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from dockyard.testbed.cluster import Testbed
from tests.conftest import ROOT, Kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")


@pytest.fixture(scope="module")
def policy(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(ROOT / "manifests" / "restore-approval-policy.yaml"))
    kubectl("apply", "-f", str(ROOT / "manifests" / "rbac-roles.yaml"))


def _restore(name: str, requested_by: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Restore",
            "metadata": {"name": name, "annotations": {"dockyard.io/requested-by": requested_by}},
            "spec": {"source": {"backupRef": {"name": "bk-1"}}},
        }
    )


@pytest.mark.usefixtures("policy")
def test_annotations_must_name_the_user_who_wrote_them(
    testbed: Testbed, kubectl: Kubectl, namespace: str
) -> None:
    alice, bob = f"alice-{uuid.uuid4().hex[:5]}", f"bob-{uuid.uuid4().hex[:5]}"
    for user in (alice, bob):
        kubectl(
            "create",
            "rolebinding",
            user,
            "--clusterrole=dockyard-operator",
            f"--user={user}",
            "-n",
            namespace,
        )
    as_alice, as_bob = testbed.user_token(alice, []), testbed.user_token(bob, [])

    def create(name: str, requested_by: str, token: str) -> tuple[int, str]:
        result = kubectl(
            "apply",
            "-n",
            namespace,
            "-f",
            "-",
            input=_restore(name, requested_by),
            token=token,
            check=False,
        )
        return result.returncode, result.stderr

    # A new policy reaches the apiserver's admission chain after a delay, longer under load.
    # Each probe uses a new name: the rule checks CREATE, and re-applying an object that
    # got in before the policy was active would be an unchanged no-op forever.
    attempts = iter(range(1000))
    forged = wait_for(
        lambda: create(f"forged-{next(attempts)}", bob, as_alice)[0] != 0 and "refused",
        timeout=90,
    )
    assert forged == "refused"
    code, err = create("forged2", bob, as_alice)
    assert code != 0
    assert "requested-by must name the user who creates the restore" in err
    assert create("honest", alice, as_alice)[0] == 0

    def annotate(value: str, token: str) -> tuple[int, str]:
        patch = json.dumps({"metadata": {"annotations": {"dockyard.io/approved-by": value}}})
        result = kubectl(
            "patch",
            "restore",
            "honest",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            patch,
            token=token,
            check=False,
        )
        return result.returncode, result.stderr

    code, err = annotate(bob, as_alice)
    assert code != 0
    assert "approved-by must name the user who approves" in err
    assert annotate(bob, as_bob)[0] == 0
    reassign = kubectl(
        "patch",
        "restore",
        "honest",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"metadata": {"annotations": {"dockyard.io/requested-by": bob}}}),
        token=as_bob,
        check=False,
    )
    assert reassign.returncode != 0
    assert "cannot be changed after creation" in reassign.stderr
