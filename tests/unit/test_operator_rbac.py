"""The operator's ClusterRole grants what its code touches, and nothing it does not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dockyard.core.resources import CHILD_TYPES, ENVIRONMENTS

MANIFEST = Path(__file__).resolve().parents[2] / "manifests" / "operator-rbac.yaml"
CHILD_VERBS = {"get", "list", "watch", "create", "patch", "delete"}


def _rules() -> list[dict[str, Any]]:
    documents = list(yaml.safe_load_all(MANIFEST.read_text()))
    [role] = [d for d in documents if d["kind"] == "ClusterRole"]
    return list(role["rules"])


def _verbs(group: str, resource: str) -> set[str]:
    return {
        verb
        for rule in _rules()
        if group in rule["apiGroups"] and resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_every_child_kind_can_be_applied_watched_and_deleted() -> None:
    for child in CHILD_TYPES:
        assert _verbs(child.group, child.plural) == CHILD_VERBS, child.kind


def test_environments_can_be_deleted_for_their_ttl_and_their_status_written() -> None:
    assert "delete" in _verbs(ENVIRONMENTS.group, ENVIRONMENTS.plural)
    assert "patch" in _verbs(ENVIRONMENTS.group, f"{ENVIRONMENTS.plural}/status")
    assert _verbs(ENVIRONMENTS.group, f"{ENVIRONMENTS.plural}/finalizers") == {"update"}


def test_no_rule_grants_everything() -> None:
    for rule in _rules():
        assert "*" not in rule["verbs"]
        assert "*" not in rule["resources"]


def test_drills_can_be_created_run_and_their_backups_marked_verified() -> None:
    group = ENVIRONMENTS.group
    # Default drills are created; run-now annotations removed; status written.
    assert {"create", "get", "list", "watch", "patch"} <= _verbs(group, "restoredrills")
    assert "patch" in _verbs(group, "restoredrills/status")
    # A drill lists the environment's backups and writes status.verified on them.
    assert {"get", "list"} <= _verbs(group, "backups")
    assert "patch" in _verbs(group, "backups/status")
    assert _verbs("", "events") == {"create"}


def test_runner_jobs_of_restores_and_drills_can_be_owned_and_their_results_read() -> None:
    group = ENVIRONMENTS.group
    assert _verbs(group, "restores/finalizers") == {"update"}
    assert _verbs(group, "restoredrills/finalizers") == {"update"}
    assert {"get", "list", "create", "delete"} <= _verbs("batch", "jobs")
    # Pods are only listed by label (termination messages): never read one by one,
    # created, patched or deleted.
    assert _verbs("", "pods") == {"list"}


# Verbs the operator was once granted and never used, by (group, resource): each came
# back only with code that needs it (and a row of docs/rbac.md saying why).
NEVER_USED = {
    # Status is merge-patched (apply.patch_status; Kopf patches too, and never PUTs).
    **{
        (ENVIRONMENTS.group, f"{plural}/status"): {"update"}
        for plural in (
            "environments",
            "scalingpolicies",
            "restores",
            "restoredrills",
            "webhooks",
            "backups",
            "backupschedules",
            "backupstores",
        )
    },
    # Kopf (kopf.event) and KindStore.record only POST core/v1 Events.
    ("", "events"): {"patch", "update", "delete"},
    # Runner Jobs are read, listed by label, applied and deleted; no watch on them.
    ("batch", "jobs"): {"watch"},
    # Runner pods are found by a label selector: a list, never a get.
    ("", "pods"): {"get", "watch", "create", "patch", "update", "delete"},
    # No code path deletes a BackupSchedule (a default one goes with its Environment).
    (ENVIRONMENTS.group, "backupschedules"): {"delete"},
    # BackupStores: Kopf's finalizer is merge-patched; the operator never deletes one.
    (ENVIRONMENTS.group, "backupstores"): {"update", "delete"},
    # The runner's RoleBinding is server-side applied, never read.
    ("rbac.authorization.k8s.io", "rolebindings"): {"get", "list", "watch", "delete"},
}


def test_verbs_the_code_never_uses_are_not_granted() -> None:
    for (group, resource), verbs in NEVER_USED.items():
        granted = _verbs(group, resource) & verbs
        assert granted == set(), f"{group or 'core'}/{resource}: {sorted(granted)}"


def test_no_rule_uses_the_events_k8s_io_api() -> None:
    assert all("events.k8s.io" not in rule["apiGroups"] for rule in _rules())


def test_what_the_code_does_is_still_granted() -> None:
    group = ENVIRONMENTS.group
    # Server-side apply is a PATCH, authorized as create too when it makes the object.
    for resource in ("roles", "rolebindings"):
        assert {"create", "patch"} <= _verbs("rbac.authorization.k8s.io", resource)
    assert "get" in _verbs("rbac.authorization.k8s.io", "roles")  # the retired shared Role
    assert {"create", "patch"} <= _verbs("batch", "jobs")
    # The default BackupSchedule of a production Environment; the default BackupStore of
    # a development operator (the one ClusterRole every overlay ships).
    assert "create" in _verbs(group, "backupschedules")
    assert {"get", "list", "create"} <= _verbs(group, "backupstores")
    # The finalizer that holds a store's deletion while Backups name it: a Kopf handler.
    assert {"watch", "patch"} <= _verbs(group, "backupstores")
    assert "patch" in _verbs(group, "backupstores/status")


def test_the_operator_puts_nothing_but_its_lease() -> None:
    """Why no rule grants ``update`` on a status: the only PUT the operator sends is the
    leader-election Lease's (held through its own Role, not this ClusterRole)."""
    operator = Path(__file__).resolve().parents[2] / "dockyard" / "operator"
    putting = sorted(
        path.relative_to(operator).as_posix()
        for path in operator.rglob("*.py")
        if '"PUT"' in path.read_text() or "'PUT'" in path.read_text()
    )
    assert putting == ["leadership.py"]


def test_only_the_operator_may_make_jobs_that_run_as_a_backup_runner_account() -> None:
    # The runner account policy asks for create on backups/runner; no tenant role has it.
    assert _verbs(ENVIRONMENTS.group, "backups/runner") == {"create"}
    roles = yaml.safe_load_all(Path(MANIFEST.parent / "rbac-roles.yaml").read_text())
    granted = {r for role in roles for rule in role["rules"] for r in rule["resources"]}
    # Nor a status, nor "*" (which grants every subresource, those two included).
    assert not {r for r in granted if r == "*" or "/" in r}, granted
