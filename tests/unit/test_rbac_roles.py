"""The four shipped roles (``manifests/rbac-roles.yaml``) grant exactly the verb matrix of
docs/rbac.md, and what may hold a secret is kept from the roles that only read.

A Webhook's ``spec.url`` may carry a token, so no role that aggregates into Kubernetes'
built-in ``view`` (held by whole teams, often cluster-wide) may read Webhooks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = ("viewer", "developer", "operator", "admin")
# Only the roles that manage a kind may read these: their objects may hold a secret.
SECRET_BEARING = ("webhooks",)
READ = ("get", "list", "watch")

Grant = tuple[str, str]  # (resource, verb) in dockyard.io


def _roles() -> dict[str, dict[str, Any]]:
    documents = yaml.safe_load_all((ROOT / "manifests" / "rbac-roles.yaml").read_text())
    return {doc["metadata"]["name"]: doc for doc in documents if doc}


def _grants(role: dict[str, Any]) -> set[Grant]:
    return {
        (resource, verb)
        for rule in role["rules"]
        if "dockyard.io" in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _allows(grants: set[Grant], resource: str, verb: str) -> bool:
    return any(r in (resource, "*") and v in (verb, "*") for r, v in grants)


def _documented() -> dict[str, set[Grant]]:
    """The verb matrix of docs/rbac.md: the grants each role is ticked for."""
    text = (ROOT / "docs" / "rbac.md").read_text()
    header = "| resource | verb | viewer | developer | operator | admin |"
    table = text[text.index(header) :].split("\n\n", 1)[0].splitlines()[2:]
    ticked: dict[str, set[Grant]] = {role: set() for role in ROLES}
    for row in table:
        resources, verbs, *marks = (cell.strip() for cell in row.strip("|").split("|"))
        for role, mark in zip(ROLES, marks, strict=True):
            if "✓" not in mark:
                continue
            for resource in _names(resources):
                ticked[role] |= {(resource, verb) for verb in _names(verbs)}
    return ticked


def _names(cell: str) -> list[str]:
    """``backups, restores`` and ``create, patch (patch also redelivers)`` as names."""
    return [name.strip() for name in re.sub(r"\(.*?\)", "", cell).split(",")]


@pytest.mark.parametrize("role", ROLES)
def test_each_role_grants_what_the_docs_tick(role: str) -> None:
    grants = _grants(_roles()[f"dockyard-{role}"])

    missing = [g for g in sorted(_documented()[role]) if not _allows(grants, *g)]

    assert missing == []


@pytest.mark.parametrize("role", ["viewer", "developer", "operator"])
def test_each_role_grants_nothing_the_docs_leave_out(role: str) -> None:
    grants = _grants(_roles()[f"dockyard-{role}"])

    assert sorted(grants - _documented()[role]) == []


@pytest.mark.parametrize("resource", SECRET_BEARING)
def test_no_role_aggregated_into_view_reads_what_may_hold_a_secret(resource: str) -> None:
    aggregated = [
        role
        for role in _roles().values()
        if (role["metadata"].get("labels") or {}).get("rbac.authorization.k8s.io/aggregate-to-view")
        == "true"
    ]

    assert [role["metadata"]["name"] for role in aggregated] == ["dockyard-viewer"]
    for role in aggregated:
        assert not any(_allows(_grants(role), resource, verb) for verb in READ)


@pytest.mark.parametrize(("role", "reads"), [("viewer", False), ("developer", False),
                                             ("operator", True), ("admin", True)])  # fmt: skip
def test_only_the_roles_that_manage_webhooks_read_them(role: str, reads: bool) -> None:
    grants = _grants(_roles()[f"dockyard-{role}"])

    assert [_allows(grants, "webhooks", verb) for verb in READ] == [reads] * 3
    assert _allows(grants, "webhooks", "patch") is reads
