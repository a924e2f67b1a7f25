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
    assert {"create", "patch"} <= _verbs("", "events")


def test_runner_jobs_of_restores_and_drills_can_be_owned_and_their_results_read() -> None:
    group = ENVIRONMENTS.group
    assert _verbs(group, "restores/finalizers") == {"update"}
    assert _verbs(group, "restoredrills/finalizers") == {"update"}
    assert {"get", "list", "create", "delete"} <= _verbs("batch", "jobs")
    # Pods are only read (termination messages): never created, patched or deleted.
    assert _verbs("", "pods") == {"get", "list"}
