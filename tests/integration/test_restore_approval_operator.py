"""The operator does not take a restore approval on the annotation's word: it asks the
apiserver (SubjectAccessReview) whether the approver holds the approve verb there, so a
cluster without the admission policy, or a binding removed after the approval, does not
let a production restore through."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard.core.kube import KubeClient, KubeConfig
from dockyard.core.models.restore import APPROVER_GROUPS_ANNOTATION
from dockyard.operator.restores.approval import approver_groups, review_approver
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import Kubectl, wait_for
from tests.integration.test_backup_operator import (
    _apply,
    _backup,
    _environment,
    _fetch,
    _owner_dsn,
    _run_sql,
    _wait_phase,
)
from tests.integration.test_restore_operator import (
    _backed_up,
    _condition,
    _dsn,
    _empty_environment,
    _get,
    _restore,
    _restore_status,
    _wait_restore,
)

SKIP = "dockyard.io/skip-reconcile"


def _bind(kubectl: Kubectl, namespace: str, role: str, subject: str) -> str:
    binding = f"{role.removeprefix('dockyard-')}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "rolebinding", binding, f"--clusterrole={role}", subject, "-n", namespace)
    return binding


def _can_approve(kubectl: Kubectl, namespace: str, token: str) -> bool:
    result = kubectl(
        "auth",
        "can-i",
        "approve",
        "restores.dockyard.io",
        "-n",
        namespace,
        token=token,
        check=False,
    )
    return result.returncode == 0


@pytest.mark.usefixtures("crds_installed")
async def test_the_review_allows_only_users_holding_approve_on_that_namespace(
    kubectl: Kubectl, testbed: Testbed, testbed_state: State, namespace: str, roles: None
) -> None:
    other = f"{namespace[:50]}-o"
    kubectl("create", "namespace", other)
    dev, ops, elsewhere = (f"{who}-{uuid.uuid4().hex[:5]}" for who in ("dev", "ops", "away"))
    team = f"oncall-{uuid.uuid4().hex[:5]}"
    _bind(kubectl, namespace, "dockyard-developer", f"--user={dev}")
    _bind(kubectl, namespace, "dockyard-operator", f"--user={ops}")
    _bind(kubectl, other, "dockyard-operator", f"--user={elsewhere}")
    _bind(kubectl, namespace, "dockyard-operator", f"--group={team}")
    wait_for(lambda: _can_approve(kubectl, namespace, testbed.user_token(ops, [])), timeout=30)
    kube = KubeClient.connect(KubeConfig.from_kubeconfig(Path(testbed_state.kubeconfig)))
    try:

        async def may(user: str, *groups: str) -> bool:
            review = await review_approver(
                kube, namespace=namespace, name="promote", user=user, groups=groups
            )
            return review.allowed

        assert await may(ops, "system:authenticated")
        assert not await may(dev, "system:authenticated")
        assert not await may(elsewhere, "system:authenticated")
        assert await may("carol", team, "system:authenticated")
        assert not await may("carol", "system:authenticated")
    finally:
        await kube.close()
        kubectl("delete", "namespace", other, "--wait=false", check=False)


@pytest.mark.usefixtures("crds_installed")
async def test_a_system_group_named_for_the_approver_never_reaches_the_review(
    kubectl: Kubectl, testbed_state: State, namespace: str, roles: None
) -> None:
    """Without the policy a developer can write ``approver-groups: system:masters``; the
    apiserver allows that group everything, so the operator never sends it."""
    dev = f"dev-{uuid.uuid4().hex[:5]}"
    _bind(kubectl, namespace, "dockyard-developer", f"--user={dev}")
    claimed = approver_groups({APPROVER_GROUPS_ANNOTATION: "system:masters"})
    kube = KubeClient.connect(KubeConfig.from_kubeconfig(Path(testbed_state.kubeconfig)))
    try:
        review = await review_approver(
            kube, namespace=namespace, name="promote", user=dev, groups=claimed
        )
    finally:
        await kube.close()

    assert not review.allowed


def _patch(
    kubectl: Kubectl, namespace: str, body: dict[str, Any], token: str | None = None
) -> None:
    args = ["patch", "restore", "promote", "-n", namespace, "--type=merge"]
    kubectl(*args, "-p", json.dumps(body), **({"token": token} if token else {}))


@pytest.mark.usefixtures("operator_process", "approval_policy")
def test_an_approver_who_lost_the_approve_verb_leaves_the_restore_unapproved(
    kubectl: Kubectl, testbed: Testbed, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _backed_up(kubectl, testbed_state, namespace, backup_root)
    _empty_environment(kubectl, namespace, "live", tier="production", replicas=2)
    requester = f"alice-{uuid.uuid4().hex[:5]}"
    approver = f"bob-{uuid.uuid4().hex[:5]}"
    _bind(kubectl, namespace, "dockyard-operator", f"--user={requester}")
    binding = _bind(kubectl, namespace, "dockyard-operator", f"--user={approver}")
    as_alice, as_bob = testbed.user_token(requester, []), testbed.user_token(approver, [])
    wait_for(lambda: _can_approve(kubectl, namespace, as_bob), timeout=30)
    manifest = _restore(
        "promote",
        source={"backupRef": {"name": "nightly"}},
        target={"environmentRef": {"name": "live"}},
    )
    manifest["metadata"]["annotations"] = {"dockyard.io/requested-by": requester}
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), token=as_alice)
    _wait_restore(kubectl, namespace, "promote", "AwaitingApproval")

    # The operator looks away while bob approves and then loses his binding: what it
    # finds is an approval the apiserver no longer backs (as without the policy, a name
    # written by someone who does not hold the verb).
    _patch(kubectl, namespace, {"metadata": {"annotations": {SKIP: "true"}}})
    _patch(
        kubectl,
        namespace,
        {"metadata": {"annotations": {"dockyard.io/approved-by": approver}}},
        as_bob,
    )
    kubectl("delete", "rolebinding", binding, "-n", namespace)
    wait_for(lambda: not _can_approve(kubectl, namespace, as_bob), timeout=30)
    _patch(kubectl, namespace, {"metadata": {"annotations": {SKIP: None}}})

    def refused() -> dict[str, Any] | None:
        status = _restore_status(kubectl, namespace, "promote")
        message = _condition(status, "Approved").get("message", "")
        return status if "may not approve" in message else None

    status = wait_for(refused, timeout=60)
    assert isinstance(status, dict)
    approved = _condition(status, "Approved")
    assert (approved["status"], approved["reason"]) == ("False", "Refused")
    assert f"{approver} may not approve restores in namespace {namespace}" in approved["message"]
    assert status["phase"] == "AwaitingApproval"
    assert status["approval"].get("approvedBy") is None
    assert _get(kubectl, namespace, "backup", "promote-safety") is None


# -- a restore keeps the tier it was planned with -------------------------------------------

HOLD = "dockyard.io/test-hold"


@pytest.mark.usefixtures("operator_process", "approval_policy")
def test_a_production_target_being_deleted_fails_the_restore_instead_of_skipping_approval(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _backed_up(kubectl, testbed_state, namespace, backup_root)
    # Retain: the database outlives the Environment, so it is still there to restore over.
    _empty_environment(
        kubectl,
        namespace,
        "live",
        tier="production",
        replicas=2,
        database={"deletionPolicy": "Retain"},
    )
    live_dsn = _dsn(testbed_state, namespace, "live")
    _run_sql(_owner_dsn(kubectl, namespace, "live"), "CREATE TABLE precious (id int)")
    _apply(
        kubectl,
        namespace,
        _restore(
            "promote",
            source={"backupRef": {"name": "nightly"}},
            target={"environmentRef": {"name": "live"}},
            safetyBackup=False,
        ),
    )
    status = _wait_restore(kubectl, namespace, "promote", "AwaitingApproval")
    assert status["plan"]["targetTier"] == "production"

    # Someone who may delete environments (not approve restores) deletes the target; a
    # finalizer keeps it in its deleting state, its Secret and database still there.
    kubectl("patch", "environment", "live", "-n", namespace, "--type=merge",
            "-p", json.dumps({"metadata": {"finalizers": [HOLD]}}))  # fmt: skip
    try:
        kubectl("delete", "environment", "live", "-n", namespace, "--wait=false")
        wait_for(
            lambda: (
                (_get(kubectl, namespace, "environment", "live") or {})
                .get("metadata", {})
                .get("deletionTimestamp")
            ),
            timeout=30,
        )
        # Any change drives the restore again.
        kubectl("annotate", "restore", "promote", "-n", namespace, "touched=1")

        status = _wait_restore(kubectl, namespace, "promote", "Failed", timeout=120)
        completed = _condition(status, "Completed")
        assert (completed["status"], completed["reason"]) == ("False", "TargetUnavailable")
        assert "environment live is being deleted" in status["message"]
        assert _condition(status, "Approved")["status"] == "False"
        assert _fetch(live_dsn, "SELECT 1 FROM pg_tables WHERE tablename = 'precious'")
    finally:
        kubectl("patch", "environment", "live", "-n", namespace, "--type=merge",
                "-p", json.dumps({"metadata": {"finalizers": None}}), check=False)  # fmt: skip


# -- the approval covers the backup the plan showed ------------------------------------------


def _requested(
    kubectl: Kubectl, testbed: Testbed, namespace: str, **spec: Any
) -> tuple[dict[str, Any], Callable[[], None]]:
    """Restore ``promote`` into the production environment ``live`` (``spec`` the rest),
    requested by one operator-role user and waiting for a second's approval: its plan,
    and the approval, given when called."""
    requester = f"alice-{uuid.uuid4().hex[:5]}"
    approver = f"bob-{uuid.uuid4().hex[:5]}"
    _bind(kubectl, namespace, "dockyard-operator", f"--user={requester}")
    _bind(kubectl, namespace, "dockyard-operator", f"--user={approver}")
    as_alice, as_bob = testbed.user_token(requester, []), testbed.user_token(approver, [])
    wait_for(lambda: _can_approve(kubectl, namespace, as_bob), timeout=30)
    manifest = _restore("promote", target={"environmentRef": {"name": "live"}}, **spec)
    manifest["metadata"]["annotations"] = {"dockyard.io/requested-by": requester}
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), token=as_alice)
    plan = _wait_restore(kubectl, namespace, "promote", "AwaitingApproval")["plan"]

    def approve() -> None:
        approval = {"metadata": {"annotations": {"dockyard.io/approved-by": approver}}}
        _patch(kubectl, namespace, approval, as_bob)

    return plan, approve


def _failed_leaving_live_as_it_was(
    kubectl: Kubectl, testbed_state: State, namespace: str, reason: str
) -> dict[str, Any]:
    """The status of ``promote`` once Failed with ``reason``; ``live`` still holds its table."""
    status = _wait_restore(kubectl, namespace, "promote", "Failed", timeout=120)
    completed = _condition(status, "Completed")
    assert (completed["status"], completed["reason"]) == ("False", reason)
    live = _dsn(testbed_state, namespace, "live")
    assert _fetch(live, "SELECT 1 FROM pg_tables WHERE tablename = 'precious'")
    return status


@pytest.mark.usefixtures("operator_process", "approval_policy")
def test_a_backup_replaced_after_the_plan_fails_the_approved_restore(
    kubectl: Kubectl, testbed: Testbed, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    """The attack: the requester of a production restore waits for its plan, then puts a
    backup of their own development environment in place of the planned one, under the
    same name, so that the approver's approval restores it into production."""
    _backed_up(kubectl, testbed_state, namespace, backup_root)
    _empty_environment(kubectl, namespace, "live", tier="production", replicas=2)
    _run_sql(_owner_dsn(kubectl, namespace, "live"), "CREATE TABLE precious (id int)")
    # The requester's own environment: the planned tables and row counts (readable in
    # the plan), and data of their choosing.
    _environment(kubectl, testbed_state, namespace, "sandbox")
    _run_sql(
        _owner_dsn(kubectl, namespace, "sandbox"),
        "UPDATE customers SET email = 'planted@attacker.example'",
    )
    planned, approve = _requested(
        kubectl, testbed, namespace, source={"backupRef": {"name": "nightly"}}, safetyBackup=False
    )
    original = _get(kubectl, namespace, "backup", "nightly")
    assert original is not None
    assert planned["backupUid"] == original["metadata"]["uid"]
    assert planned["sourceEnvironment"] == "shop"

    kubectl("delete", "backup", "nightly", "-n", namespace, "--timeout=120s")
    _apply(kubectl, namespace, _backup(namespace, "nightly", backup_root, environment="sandbox"))
    _wait_phase(kubectl, namespace, "nightly", "Completed")
    approve()

    status = _failed_leaving_live_as_it_was(kubectl, testbed_state, namespace, "BackupReplaced")
    assert "replaced by another Backup of the same name" in status["message"]


def _backup_status(kubectl: Kubectl, namespace: str, status: dict[str, Any]) -> None:
    """What a drill's verdict writes on Backup ``nightly`` (here as the test bed's admin)."""
    kubectl("patch", "backup", "nightly", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}))  # fmt: skip


@pytest.mark.usefixtures("operator_process", "approval_policy")
def test_an_approval_of_a_verified_backup_a_drill_failed_on_since_restores_nothing(
    kubectl: Kubectl, testbed: Testbed, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    """The plan the approver saw said the backup was verified; a drill failed on it
    while the restore waited for approval: it is known not to restore."""
    _backed_up(kubectl, testbed_state, namespace, backup_root)
    _backup_status(
        kubectl, namespace, {"verified": {"drill": "nightly", "at": "2026-01-01T00:00:00Z"}}
    )
    _empty_environment(kubectl, namespace, "live", tier="production", replicas=2)
    _run_sql(_owner_dsn(kubectl, namespace, "live"), "CREATE TABLE precious (id int)")
    latest_verified = {"environmentRef": {"name": "shop"}, "select": "latestVerified"}
    planned, approve = _requested(
        kubectl, testbed, namespace, source=latest_verified, safetyBackup=False
    )
    assert (planned["backup"], planned["verified"]) == ("nightly", True)

    failed = {
        "type": "Verified",
        "status": "False",
        "reason": "DrillFailed",
        "message": "RestoreDrill nightly failed: sql/orders",
        "lastTransitionTime": "2026-01-02T00:00:00Z",
    }
    _backup_status(kubectl, namespace, {"conditions": [failed]})
    approve()

    status = _failed_leaving_live_as_it_was(
        kubectl, testbed_state, namespace, "SourceNoLongerVerified"
    )
    assert "a restore drill has failed on it since" in status["message"]


@pytest.mark.usefixtures("operator_process", "approval_policy")
def test_a_backup_made_to_pass_for_the_safety_backup_fails_the_restore(
    kubectl: Kubectl, testbed: Testbed, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    """The attack: the requester makes a completed Backup of a tiny environment under the
    name the restore's safety backup will have, so that production is replaced with no
    backup of it taken first."""
    _backed_up(kubectl, testbed_state, namespace, backup_root)
    _empty_environment(kubectl, namespace, "live", tier="production", replicas=2)
    _empty_environment(kubectl, namespace, "tiny")
    _run_sql(_owner_dsn(kubectl, namespace, "live"), "CREATE TABLE precious (id int)")
    forged = _backup(namespace, "promote-safety", backup_root, environment="tiny")
    forged["metadata"]["labels"] = {"dockyard.io/restore": "promote"}
    _apply(kubectl, namespace, forged)
    _wait_phase(kubectl, namespace, "promote-safety", "Completed")
    _, approve = _requested(kubectl, testbed, namespace, source={"backupRef": {"name": "nightly"}})
    approve()

    status = _failed_leaving_live_as_it_was(kubectl, testbed_state, namespace, "SafetyBackupTaken")
    assert "exists but was not made by this restore" in status["message"]
    assert status.get("safetyBackupUid") is None
