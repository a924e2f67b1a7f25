"""The apiserver itself refuses forged restore requester and approver annotations."""

from __future__ import annotations

import json
import uuid

import pytest
import yaml

from dockyard.testbed.cluster import Testbed
from tests.conftest import Kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")


@pytest.fixture
def namespace(unwatched_namespace: str) -> str:
    """These tests set each Restore's phase themselves, as the operator would. The
    session's operator (started by an earlier module of the same worker) would retry
    planning a restore of a missing backup, and set a patched AwaitingApproval back to
    Pending: so no operator may watch their namespace."""
    return unwatched_namespace


@pytest.fixture(scope="module")
def policy(kubectl: Kubectl, approval_policy: None) -> None:
    _wait_until_policy_is_active(kubectl)


def _wait_until_policy_is_active(kubectl: Kubectl) -> None:
    """A changed policy reaches admission after a delay: probe with a restore created
    approved, which the current policy refuses (older ones let it through)."""
    probes = iter(range(1000))
    # Approved by the creator itself (the test bed's admin), so that the one rule broken
    # is the newest: a restore is approved only once it is AwaitingApproval.
    admin = kubectl("auth", "whoami", "-o", "jsonpath={.status.userInfo.username}").stdout

    def refused() -> bool:
        manifest = yaml.safe_load(_restore(f"policy-probe-{next(probes)}", "unused"))
        del manifest["metadata"]["annotations"]["dockyard.io/requested-by"]
        manifest["metadata"]["annotations"]["dockyard.io/approved-by"] = admin
        result = kubectl(
            "create", "-n", "default", "-f", "-", input=yaml.safe_dump(manifest), check=False
        )
        return "only be approved once it is AwaitingApproval" in result.stderr

    try:
        wait_for(refused, timeout=60)
    except AssertionError:
        pass  # an older policy: the tests below say what it lets through
    finally:
        kubectl("delete", "restores", "--all", "-n", "default", check=False)


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
    kubectl(  # as the operator would once the plan is written (this module runs none)
        "patch",
        "restore",
        "honest",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "AwaitingApproval"}}),
    )

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
    # A new binding reaches the authorizer the policy asks after a delay, longer under load.
    wait_for(lambda: _can(kubectl, namespace, as_bob, "approve"), timeout=30)
    code, err = annotate(bob, as_bob)
    assert code == 0, err
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


# -- approval needs the approve verb, on a restore that shows its plan ---------------------

APPROVED_BY = "dockyard.io/approved-by"
APPROVER_GROUPS = "dockyard.io/approver-groups"


def _held_restore(kubectl: Kubectl, namespace: str, name: str, phase: str | None) -> None:
    """A Restore the operator leaves alone, in ``phase`` (None: no status, no plan yet)."""
    manifest = yaml.safe_load(_restore(name, "unused"))
    manifest["metadata"]["annotations"] = {"dockyard.io/skip-reconcile": "true"}
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))
    if phase is not None:
        kubectl(
            "patch",
            "restore",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps({"status": {"phase": phase}}),
        )


def _bind(kubectl: Kubectl, namespace: str, role: str, *, user: str = "", group: str = "") -> None:
    subject = f"--user={user}" if user else f"--group={group}"
    binding = f"{role.removeprefix('dockyard-')}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "rolebinding", binding, f"--clusterrole={role}", subject, "-n", namespace)


def _can(kubectl: Kubectl, namespace: str, token: str, verb: str) -> bool:
    result = kubectl(
        "auth", "can-i", verb, "restores.dockyard.io", "-n", namespace, token=token, check=False
    )
    return result.returncode == 0


def _annotate(
    kubectl: Kubectl, namespace: str, name: str, token: str, annotations: dict[str, str]
) -> tuple[int, str]:
    result = kubectl(
        "patch",
        "restore",
        name,
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"metadata": {"annotations": annotations}}),
        token=token,
        check=False,
    )
    return result.returncode, result.stderr


def _user(kubectl: Kubectl, testbed: Testbed, namespace: str, role: str) -> tuple[str, str]:
    name = f"{role.removeprefix('dockyard-')}-{uuid.uuid4().hex[:5]}"
    _bind(kubectl, namespace, role, user=name)
    token = testbed.user_token(name, [])
    wait_for(lambda: _can(kubectl, namespace, token, "patch"), timeout=30)
    return name, token


@pytest.mark.usefixtures("policy")
def test_a_developer_without_the_approve_verb_cannot_approve(
    testbed: Testbed, kubectl: Kubectl, namespace: str
) -> None:
    _held_restore(kubectl, namespace, "promote", "AwaitingApproval")
    dev, as_dev = _user(kubectl, testbed, namespace, "dockyard-developer")
    assert not _can(kubectl, namespace, as_dev, "approve")

    code, err = _annotate(kubectl, namespace, "promote", as_dev, {APPROVED_BY: dev})
    assert code != 0
    assert "approved-by needs the approve verb" in err
    annotations = _restore_annotations(kubectl, namespace, "promote")
    assert APPROVED_BY not in annotations


@pytest.mark.usefixtures("policy")
def test_the_operator_role_in_another_namespace_does_not_approve_here(
    testbed: Testbed, kubectl: Kubectl, namespace: str
) -> None:
    other = f"{namespace[:50]}-o"
    kubectl("create", "namespace", other)
    try:
        _held_restore(kubectl, namespace, "promote", "AwaitingApproval")
        # Developer here (so the patch itself is allowed), operator over there.
        user, token = _user(kubectl, testbed, namespace, "dockyard-developer")
        _bind(kubectl, other, "dockyard-operator", user=user)
        wait_for(lambda: _can(kubectl, other, token, "approve"), timeout=30)

        code, err = _annotate(kubectl, namespace, "promote", token, {APPROVED_BY: user})
        assert code != 0
        assert "approved-by needs the approve verb" in err
        assert APPROVED_BY not in _restore_annotations(kubectl, namespace, "promote")
    finally:
        kubectl("delete", "namespace", other, "--wait=false", check=False)


@pytest.mark.usefixtures("policy")
def test_an_approval_before_the_plan_is_shown_is_refused(
    testbed: Testbed, kubectl: Kubectl, namespace: str
) -> None:
    ops, as_ops = _user(kubectl, testbed, namespace, "dockyard-operator")
    _held_restore(kubectl, namespace, "early", None)
    _held_restore(kubectl, namespace, "planning", "Pending")

    for name in ("early", "planning"):
        code, err = _annotate(kubectl, namespace, name, as_ops, {APPROVED_BY: ops})
        assert code != 0
        assert "only be approved once it is AwaitingApproval" in err
    # Nor can a restore be created approved.
    manifest = yaml.safe_load(_restore("born-approved", ops))
    manifest["metadata"]["annotations"][APPROVED_BY] = ops
    created = kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(manifest),
        token=as_ops,
        check=False,
    )
    assert created.returncode != 0
    assert "only be approved once it is AwaitingApproval" in created.stderr

    # Once the plan is shown, the same user approves.
    kubectl(
        "patch",
        "restore",
        "planning",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "AwaitingApproval"}}),
    )
    assert _annotate(kubectl, namespace, "planning", as_ops, {APPROVED_BY: ops}) == (0, "")


@pytest.mark.usefixtures("policy")
def test_an_approve_right_held_through_a_group_counts_and_only_own_groups_can_be_named(
    testbed: Testbed, kubectl: Kubectl, namespace: str
) -> None:
    _held_restore(kubectl, namespace, "promote", "AwaitingApproval")
    team = f"oncall-{uuid.uuid4().hex[:5]}"
    _bind(kubectl, namespace, "dockyard-operator", group=team)
    user = f"carol-{uuid.uuid4().hex[:5]}"
    token = testbed.user_token(user, [team])
    wait_for(lambda: _can(kubectl, namespace, token, "approve"), timeout=30)

    code, err = _annotate(
        kubectl,
        namespace,
        "promote",
        token,
        {APPROVED_BY: user, APPROVER_GROUPS: f"{team},platform-admins"},
    )
    assert code != 0
    assert "approver-groups may only name groups of the approving user" in err
    assert _annotate(
        kubectl, namespace, "promote", token, {APPROVED_BY: user, APPROVER_GROUPS: team}
    ) == (0, "")
    annotations = _restore_annotations(kubectl, namespace, "promote")
    assert (annotations[APPROVED_BY], annotations[APPROVER_GROUPS]) == (user, team)


def _restore_annotations(kubectl: Kubectl, namespace: str, name: str) -> dict[str, str]:
    raw = json.loads(kubectl("get", "restore", name, "-n", namespace, "-o", "json").stdout)
    return dict(raw["metadata"].get("annotations") or {})
