"""The apiserver itself keeps production data from whoever may merely change and delete
Environments and Backups (manifests/production-guard-policy.yaml): a developer cannot
delete a production Environment or set its database to be dropped, delete a production
backup, shorten its life or hand it to the garbage collector; an ops user holding
``destroy`` can."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from dockyard.testbed.cluster import Testbed
from tests.conftest import Kubectl, wait_for
from tests.integration.test_backup_operator import PINNED

pytestmark = pytest.mark.usefixtures("crds_installed", "production_guard")

Act = Callable[..., tuple[int, str]]


@pytest.fixture
def namespace(unwatched_namespace: str) -> str:
    """Objects here are only stored: no operator acts on them (nor adds finalizers)."""
    return unwatched_namespace


def _environment(name: str, tier: str, policy: str = "Retain") -> str:
    return json.dumps(
        {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": name},
            "spec": {"tier": tier, "image": PINNED,
                     "database": {"deletionPolicy": policy}},
        }
    )  # fmt: skip


def _backup(kubectl: Kubectl, namespace: str, name: str, tier: str | None) -> None:
    """A Completed Backup whose tier the operator recorded as ``tier`` (None: not yet)."""
    manifest = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": name},
        "spec": {"environmentRef": {"name": "shop"}, "ttl": "720h"},
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
    recorded = {"phase": "Completed", **({"environmentTier": tier} if tier else {})}
    kubectl("patch", "backup", name, "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": recorded}))  # fmt: skip


def _users(kubectl: Kubectl, testbed: Testbed, namespace: str) -> tuple[Act, Act]:
    """A developer and an ops user (dockyard-operator) of ``namespace``: each a function
    running kubectl as them, giving its exit code and stderr."""
    actors = []
    for role in ("dockyard-developer", "dockyard-operator"):
        user = f"{role.removeprefix('dockyard-')}-{uuid.uuid4().hex[:5]}"
        kubectl("create", "rolebinding", user, f"--clusterrole={role}", f"--user={user}",
                "-n", namespace)  # fmt: skip
        token = testbed.user_token(user, [])

        def act(*args: str, token: str = token, **kwargs: Any) -> tuple[int, str]:
            result = kubectl(*args, "-n", namespace, token=token, check=False, **kwargs)
            return result.returncode, result.stderr

        actors.append(act)
    return actors[0], actors[1]


def _delete_policy(act: Act, name: str) -> tuple[int, str]:
    patch = json.dumps({"spec": {"database": {"deletionPolicy": "Delete"}}})
    return act("patch", "environment", name, "--type=merge", "-p", patch)


def test_a_developer_cannot_set_a_production_database_to_be_dropped_nor_drop_it(
    kubectl: Kubectl, testbed: Testbed, namespace: str
) -> None:
    developer, ops = _users(kubectl, testbed, namespace)
    for name, tier in (("shop", "production"), ("lab", "staging"), ("kept", "production")):
        kubectl("apply", "-n", namespace, "-f", "-", input=_environment(name, tier))

    # A new policy reaches admission after a delay: until then the patch gets through.
    def refused() -> str | None:
        code, err = _delete_policy(developer, "shop")
        if code == 0:
            kubectl("patch", "environment", "shop", "-n", namespace, "--type=merge", "-p",
                    json.dumps({"spec": {"database": {"deletionPolicy": "Retain"}}}))  # fmt: skip
            return None
        return err

    err = wait_for(refused, timeout=90)
    assert isinstance(err, str)
    assert (
        "production data: to set database.deletionPolicy Delete on environments/shop takes "
        f"the destroy verb on environments in namespace {namespace}"
    ) in err
    assert _delete_policy(developer, "lab") == (0, "")  # staging is the developer's
    assert developer("delete", "environment", "lab")[0] == 0

    # Even with Retain: its default schedule's backups go with it, and an Environment
    # made again under the name (as development, say) would take over its database.
    code, err = developer("delete", "environment", "kept")
    assert code != 0
    assert "to delete environments/kept takes the destroy verb" in err
    assert _delete_policy(ops, "shop")[0] == 0
    code, err = developer("delete", "environment", "shop")
    assert code != 0
    assert "to delete environments/shop takes the destroy verb" in err
    assert kubectl("get", "environment", "shop", "-n", namespace, check=False).returncode == 0
    assert ops("delete", "environment", "shop")[0] == 0
    assert ops("delete", "environment", "kept")[0] == 0


def test_a_developer_cannot_delete_a_production_backup_nor_shorten_its_ttl(
    kubectl: Kubectl, testbed: Testbed, namespace: str
) -> None:
    developer, ops = _users(kubectl, testbed, namespace)
    _backup(kubectl, namespace, "nightly", "production")
    _backup(kubectl, namespace, "scratch", "development")
    shorter = json.dumps({"spec": {"ttl": "1s"}})

    def refused() -> str | None:
        code, err = developer("patch", "backup", "nightly", "--type=merge", "-p", shorter)
        if code == 0:  # before the policy was active: set back, so the next try changes it
            kubectl("patch", "backup", "nightly", "-n", namespace, "--type=merge", "-p",
                    json.dumps({"spec": {"ttl": "720h"}}))  # fmt: skip
            return None
        return err

    err = wait_for(refused, timeout=90)
    assert isinstance(err, str)
    assert "to change the ttl of backups/nightly takes the destroy verb on backups" in err
    code, err = developer("delete", "backup", "nightly")
    assert code != 0
    assert "to delete backups/nightly takes the destroy verb" in err
    # A dangling owner would have the garbage collector delete it.
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x",
             "uid": "00000000-0000-4000-8000-000000000000"}  # fmt: skip
    adopted = json.dumps({"metadata": {"ownerReferences": [owner]}})
    code, err = developer("patch", "backup", "nightly", "--type=merge", "-p", adopted)
    assert code != 0
    assert "to change the ownerReferences of backups/nightly takes the destroy verb" in err
    # Its labels are the developer's to change; so is a development backup.
    assert developer("label", "backup", "nightly", "team=shop")[0] == 0
    assert developer("patch", "backup", "scratch", "--type=merge", "-p", shorter)[0] == 0
    assert developer("delete", "backup", "scratch")[0] == 0
    # One whose tier the operator has not recorded yet may be production's.
    _backup(kubectl, namespace, "fresh", None)
    code, err = developer("patch", "backup", "fresh", "--type=merge", "-p", shorter)
    assert code != 0
    assert "change the ttl of backups/fresh (its tier not recorded yet)" in err
    code, err = developer("delete", "backup", "fresh")
    assert code != 0
    assert "delete backups/fresh (its tier not recorded yet)" in err

    assert ops("delete", "backup", "nightly")[0] == 0
