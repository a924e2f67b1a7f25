"""``POST .../restores/{name}/approve`` approves the Restore the approver read: with the
ETag of its plan as ``If-Match``, a Restore deleted and made again under the name since
(another backup, no safety backup) is refused; without ``If-Match`` the answer warns,
or is 428 where the server requires it (``DOCKYARD_APPROVAL_REQUIRES_IF_MATCH``).

The Restores' phases and plans are written here as the operator would, in a namespace no
operator watches; the API, its authorization and the apiserver are the real ones.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from dockyard.testbed.cluster import Testbed
from tests.conftest import ApiClient, Kubectl, StartApi

pytestmark = pytest.mark.usefixtures("crds_installed", "roles")


@pytest.fixture
def namespace(unwatched_namespace: str) -> str:
    return unwatched_namespace


@pytest.fixture
def people(kubectl: Kubectl, testbed: Testbed, namespace: str) -> tuple[dict[str, str], ...]:
    """A requester and an approver, both with the operator role in the namespace."""
    headers = []
    for who in ("alice", "bob"):
        user = f"{who}-{uuid.uuid4().hex[:5]}"
        kubectl("create", "rolebinding", user, "--clusterrole=dockyard-operator",
                f"--user={user}", "-n", namespace)  # fmt: skip
        headers.append({"Authorization": f"Bearer {testbed.user_token(user, [])}"})
    return tuple(headers)


async def _request(
    api: ApiClient,
    kubectl: Kubectl,
    namespace: str,
    as_alice: dict[str, str],
    backup: str,
    **spec: Any,
) -> None:
    """Alice asks for a restore of ``backup`` into production; the operator's plan says so."""
    body = {"metadata": {"name": "fix"},
            "spec": {"source": {"backupRef": {"name": backup}},
                     "target": {"environmentRef": {"name": "live"}}, **spec}}  # fmt: skip
    for _ in range(60):  # 403 until the RoleBinding reaches the authorizer
        created = await api.post(
            f"/api/v1/namespaces/{namespace}/restores", json=body, headers=as_alice
        )
        if created.status != 403:
            break
    assert created.status == 201, await created.text()
    plan = {"backup": backup, "sourceEnvironment": "live", "target": "live", "inPlace": True,
            "targetTier": "production", "requiresApproval": True, "estimatedDurationSeconds": 60,
            "safetyBackup": spec.get("safetyBackup", True)}  # fmt: skip
    kubectl("patch", "restore", "fix", "-n", namespace, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": {"phase": "AwaitingApproval", "plan": plan}}))  # fmt: skip


def _approved_by(kubectl: Kubectl, namespace: str) -> str:
    return kubectl("get", "restore", "fix", "-n", namespace, "-o",
                   "jsonpath={.metadata.annotations.dockyard\\.io/approved-by}").stdout  # fmt: skip


async def test_an_approval_names_the_restore_whose_plan_was_read(
    start_api: StartApi, kubectl: Kubectl, namespace: str, people: tuple[dict[str, str], ...]
) -> None:
    """The attack: the requester deletes the Restore while the approver reads its plan, and
    makes it again under the name with another backup and no safety backup."""
    as_alice, as_bob = people
    api = await start_api()
    await _request(api, kubectl, namespace, as_alice, "nightly")
    read = await api.get(f"/api/v1/namespaces/{namespace}/restores/fix/plan", headers=as_bob)
    assert read.status == 200
    assert (await read.json())["backup"] == "nightly"
    shown = read.headers["ETag"]

    kubectl("delete", "restore", "fix", "-n", namespace)
    await _request(api, kubectl, namespace, as_alice, "last-year", safetyBackup=False)
    approve = f"/api/v1/namespaces/{namespace}/restores/fix/approve"
    refused = await api.post(approve, headers={**as_bob, "If-Match": shown})

    assert refused.status == 412, await refused.text()
    assert _approved_by(kubectl, namespace) == ""
    # Where the server requires If-Match, an approval without one is refused too ...
    strict = await start_api(approval_requires_if_match=True)
    required = await strict.post(approve, headers=as_bob)
    assert required.status == 428
    problem = await required.json()
    assert problem["type"].endswith("/precondition-required")
    assert "If-Match" in problem["detail"]
    assert _approved_by(kubectl, namespace) == ""
    # ... and one naming the Restore now shown is made.
    again = await strict.get(f"/api/v1/namespaces/{namespace}/restores/fix/plan", headers=as_bob)
    assert (await again.json())["backup"] == "last-year"
    approved = await strict.post(approve, headers={**as_bob, "If-Match": again.headers["ETag"]})
    assert approved.status == 200, await approved.text()
    assert "Warning" not in approved.headers
    assert _approved_by(kubectl, namespace).startswith("bob-")


async def test_an_approval_without_if_match_is_made_with_a_warning_where_not_required(
    start_api: StartApi, kubectl: Kubectl, namespace: str, people: tuple[dict[str, str], ...]
) -> None:
    as_alice, as_bob = people
    api = await start_api()
    await _request(api, kubectl, namespace, as_alice, "nightly")

    approved = await api.post(
        f"/api/v1/namespaces/{namespace}/restores/fix/approve", headers=as_bob
    )

    assert approved.status == 200, await approved.text()
    assert approved.headers["Warning"].startswith('299 - "approved without If-Match')
    assert _approved_by(kubectl, namespace).startswith("bob-")
