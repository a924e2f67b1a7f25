"""What Dockyard's own ServiceAccounts hold: exactly what docs/rbac.md lists, and never
a wildcard, ``impersonate``, or an unexplained ``escalate``/``bind``.

The grants are read from ``manifests/*.yaml`` by following every (Cluster)RoleBinding
whose subjects name the account to its role; the expected grants are the tables of
docs/rbac.md, so adding a permission means saying why there.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = {"dockyard-api": "dockyard-system", "dockyard-operator": "dockyard-system"}
ESCALATING = {"escalate", "bind"}

Grant = tuple[str, str, str]  # (apiGroup, resource, verb)


def _documents(directory: Path) -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(directory.glob("*.yaml"))
        for doc in yaml.safe_load_all(path.read_text())
        if isinstance(doc, dict)
    ]


def rules_of(documents: Iterable[dict[str, Any]], account: str, namespace: str) -> list[Any]:
    """Every rule of every role bound to the ServiceAccount ``namespace/account``."""
    documents = list(documents)
    roles = {
        (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"]): doc
        for doc in documents
        if doc.get("kind") in ("ClusterRole", "Role")
    }
    rules: list[Any] = []
    for doc in documents:
        if doc.get("kind") not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        subjects = doc.get("subjects") or []
        if not any(
            s.get("kind") == "ServiceAccount"
            and s.get("name") == account
            and s.get("namespace", doc["metadata"].get("namespace")) == namespace
            for s in subjects
        ):
            continue
        ref = doc["roleRef"]
        scope = None if ref["kind"] == "ClusterRole" else doc["metadata"].get("namespace")
        role = roles.get((ref["kind"], scope, ref["name"]))
        assert role is not None, f"{doc['metadata']['name']} binds {ref['name']}, not shipped"
        rules.extend(role.get("rules") or [])
    return rules


def grants(rules: Iterable[dict[str, Any]]) -> set[Grant]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups") or []
        for resource in rule.get("resources") or []
        for verb in rule.get("verbs") or []
    }


def violations(rules: Iterable[dict[str, Any]], explained: set[Grant]) -> list[str]:
    """Wildcards, impersonation, and escalate/bind grants the docs do not explain."""
    found = []
    for rule in rules:
        for field in ("verbs", "resources", "apiGroups", "nonResourceURLs"):
            if any("*" in value for value in rule.get(field) or []):
                found.append(f"wildcard in {field}: {rule}")
        if "impersonate" in (rule.get("verbs") or []):
            found.append(f"impersonate: {rule}")
    for grant in grants(rules):
        if grant[2] in ESCALATING and grant not in explained:
            found.append(f"{grant[2]} not explained in docs/rbac.md: {grant}")
    return found


def documented(account: str) -> set[Grant]:
    """The grants the table under ``### `account` `` in docs/rbac.md lists."""
    text = (ROOT / "docs" / "rbac.md").read_text()
    section = re.search(rf"^### `{re.escape(account)}`.*?$(.*?)(?=^#|\Z)", text, re.M | re.S)
    assert section is not None, f"docs/rbac.md has no section for {account}"
    listed: set[Grant] = set()
    for line in section.group(1).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("apiGroup", "") or set(cells[0]) <= {"-"}:
            continue
        groups, resources, verbs, why = cells
        assert why, f"docs/rbac.md gives no reason for {line}"
        for group in groups.split(","):
            group = "" if group.strip() == "(core)" else group.strip()
            for resource in resources.split(","):
                for verb in verbs.split(","):
                    listed.add((group, resource.strip(), verb.strip()))
    return listed


MANIFESTS = _documents(ROOT / "manifests")


@pytest.mark.parametrize("account", sorted(ACCOUNTS))
def test_the_account_holds_exactly_what_the_docs_list(account: str) -> None:
    held = grants(rules_of(MANIFESTS, account, ACCOUNTS[account]))
    assert held, f"nothing is bound to {account}"
    listed = documented(account)
    assert sorted(held - listed) == [], "held but not documented in docs/rbac.md"
    assert sorted(listed - held) == [], "documented in docs/rbac.md but not held"


@pytest.mark.parametrize("account", sorted(ACCOUNTS))
def test_no_wildcard_no_impersonate_no_unexplained_escalation(account: str) -> None:
    rules = rules_of(MANIFESTS, account, ACCOUNTS[account])
    assert violations(rules, documented(account)) == []


def test_the_checks_catch_what_they_are_for() -> None:
    bad = [
        {"apiGroups": ["dockyard.io"], "resources": ["*"], "verbs": ["get"]},
        {"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]},
        {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["bind"]},
    ]
    assert len(violations(bad, set())) == 5
    explained = {("rbac.authorization.k8s.io", "roles", "bind")}
    assert len(violations(bad[-1:], explained)) == 0
