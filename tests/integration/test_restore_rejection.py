"""Rejecting a restore that awaits approval: the operator fails it, and only an approver
may, while it awaits approval, under their own name.

On the real apiserver, admission policy, API and operator: a production restore
rejected over REST fails with reason Rejected, records who and why, announces
``restore.rejected`` and leaves its target as it was (no safety backup taken). The REST
route and the policy refuse a rejection by a developer, of a restore not awaiting
approval, in another user's name, and a reason written without a rejection.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from dockyard.testbed.cluster import State, Testbed
from tests.conftest import ApiClient, Kubectl, StartApi
from tests.integration.test_restore_approval_policy import (
    _annotate,
    _can,
    _held_restore,
    _restore_annotations,
    _user,
)
from tests.integration.test_restore_operator import (
    _backed_up,
    _condition,
    _empty_environment,
    _get,
    _restore,
    _wait_restore,
)

REJECTED_BY = "dockyard.io/rejected-by"
REASON = "dockyard.io/rejection-reason"


def _reject_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/restores/{name}/reject"


async def _events(state: State, namespace: str, name: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(state.database_url)
    try:
        rows = await conn.fetch(
            "SELECT type, body FROM events WHERE namespace = $1 AND name = $2 ORDER BY seq",
            namespace,
            name,
        )
    finally:
        await conn.close()
    return [{"type": row["type"], **json.loads(row["body"])} for row in rows]


@pytest.mark.usefixtures("operator_process", "approval_policy")
async def test_a_rejected_restore_fails_without_touching_its_target(
    start_api: StartApi,
    kubectl: Kubectl,
    testbed: Testbed,
    testbed_state: State,
    namespace: str,
    backup_root: Path,
) -> None:
    # Seeded with asyncpg's own loop: in a thread, beside the test's.
    await asyncio.to_thread(_backed_up, kubectl, testbed_state, namespace, backup_root)
    _empty_environment(kubectl, namespace, "live", tier="production", replicas=2)
    alice, as_alice = _user(kubectl, testbed, namespace, "dockyard-operator")
    bob, as_bob = _user(kubectl, testbed, namespace, "dockyard-operator")
    manifest = _restore(
        "promote",
        source={"backupRef": {"name": "nightly"}},
        target={"environmentRef": {"name": "live"}},
    )
    manifest["metadata"]["annotations"] = {"dockyard.io/requested-by": alice}
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), token=as_alice)
    _wait_restore(kubectl, namespace, "promote", "AwaitingApproval")
    api = await start_api()

    rejected = await api.post(
        _reject_path(namespace, "promote"),
        json={"reason": "wrong backup:\n\x1b[31mnightly is last week's"},
        headers={"Authorization": f"Bearer {as_bob}"},
    )

    assert rejected.status == 200, await rejected.text()
    annotations = (await rejected.json())["metadata"]["annotations"]
    assert annotations[REJECTED_BY] == bob
    assert annotations[REASON] == "wrong backup: [31mnightly is last week's"  # one line
    status = _wait_restore(kubectl, namespace, "promote", "Failed", timeout=60)
    completed, approved = _condition(status, "Completed"), _condition(status, "Approved")
    assert (completed["status"], completed["reason"]) == ("False", "Rejected")
    assert (approved["status"], approved["reason"]) == ("False", "Rejected")
    assert status["message"].startswith(f"rejected by {bob}: wrong backup")
    assert "the target environment was not changed" in status["message"]
    approval = status["approval"]
    assert (approval["requestedBy"], approval["rejectedBy"]) == (alice, bob)
    assert approval["rejectionReason"] == "wrong backup: [31mnightly is last week's"
    assert approval.get("approvedBy") is None
    assert approval["rejectedAt"]
    assert status["attempts"] == 0
    assert _get(kubectl, namespace, "backup", "promote-safety") is None
    for _ in range(60):  # the operator announces the failure once it is stored
        events = await _events(testbed_state, namespace, "promote")
        if "restore.failed" in [e["type"] for e in events]:
            break
        await asyncio.sleep(0.5)
    announced = [e for e in events if e["type"] == "restore.rejected"]
    assert len(announced) == 1, events  # the API's and the operator's are one event
    assert announced[0]["data"]["actor"] == bob
    assert announced[0]["data"]["reason"] == "Rejected"
    assert "restore.failed" in [e["type"] for e in events]

    # Too late now: the restore is Failed, and a rejection (or approval) changes nothing.
    again = await api.post(
        _reject_path(namespace, "promote"), headers={"Authorization": f"Bearer {as_bob}"}
    )
    assert again.status == 409
    assert (await again.json())["type"].endswith("/not-awaiting-approval")


@pytest.fixture
def held_namespace(unwatched_namespace: str) -> str:
    return unwatched_namespace


@pytest.mark.usefixtures("crds_installed", "roles", "approval_policy")
async def test_only_an_approver_may_reject_and_only_while_it_awaits_approval(
    start_api: StartApi, kubectl: Kubectl, testbed: Testbed, held_namespace: str
) -> None:
    namespace = held_namespace
    _held_restore(kubectl, namespace, "promote", "AwaitingApproval")
    _held_restore(kubectl, namespace, "early", "Pending")
    dev, as_dev = _user(kubectl, testbed, namespace, "dockyard-developer")
    approver, as_approver = _user(kubectl, testbed, namespace, "dockyard-operator")
    assert not _can(kubectl, namespace, as_dev, "approve")
    api: ApiClient = await start_api()

    async def reject(token: str, name: str, body: object = None) -> tuple[int, dict[str, Any]]:
        answer = await api.post(
            _reject_path(namespace, name),
            headers={"Authorization": f"Bearer {token}"},
            **({"json": body} if body is not None else {}),
        )
        return answer.status, await answer.json()

    # Over REST: the approve verb, a restore awaiting approval, and a body it reads.
    status, problem = await reject(as_dev, "promote")
    assert status == 403, problem
    status, problem = await reject(as_approver, "early")
    assert status == 409, problem
    assert "only a restore awaiting approval can be rejected" in problem["detail"]
    status, problem = await reject(as_approver, "promote", {"reason": "x" * 257})
    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["body.reason"]
    status, problem = await reject(as_approver, "promote", {"why": "no"})
    assert status == 422, problem
    assert [e["field"] for e in problem["errors"]] == ["body.why"]
    assert REJECTED_BY not in _restore_annotations(kubectl, namespace, "promote")
    # A body may not set them either: they are the server's to write.
    created = await api.post(
        f"/api/v1/namespaces/{namespace}/restores",
        json={
            "metadata": {"name": "sneaky", "annotations": {REJECTED_BY: approver}},
            "spec": {"source": {"backupRef": {"name": "nightly"}}},
        },
        headers={"Authorization": f"Bearer {as_approver}"},
    )
    assert created.status == 422, await created.text()

    # With kubectl, the policy holds the annotations to the same rules.
    code, err = _annotate(kubectl, namespace, "promote", as_dev, {REJECTED_BY: dev})
    assert code != 0
    assert "rejected-by needs the approve verb" in err
    code, err = _annotate(kubectl, namespace, "promote", as_approver, {REJECTED_BY: dev})
    assert code != 0
    assert "must name the user who rejects" in err
    code, err = _annotate(kubectl, namespace, "early", as_approver, {REJECTED_BY: approver})
    assert code != 0
    assert "only be rejected while it is AwaitingApproval" in err
    code, err = _annotate(kubectl, namespace, "promote", as_approver, {REASON: "because"})
    assert code != 0
    assert "rejection-reason is written with" in err
    assert REJECTED_BY not in _restore_annotations(kubectl, namespace, "promote")

    # The approver's own rejection, with its reason, is written.
    status, body = await reject(as_approver, "promote", {"reason": "not this week"})
    assert status == 200, body
    annotations = _restore_annotations(kubectl, namespace, "promote")
    assert (annotations[REJECTED_BY], annotations[REASON]) == (approver, "not this week")
    # Its reason is part of it: changing the reason is rejecting again, as oneself.
    code, err = _annotate(
        kubectl, namespace, "promote", as_dev, {REASON: f"{uuid.uuid4().hex} changed"}
    )
    assert code != 0
    assert "must name the user who rejects" in err
    assert _restore_annotations(kubectl, namespace, "promote")[REASON] == "not this week"

    # Rejected, it can no longer be approved, over REST or with kubectl.
    approved = await api.post(
        f"/api/v1/namespaces/{namespace}/restores/promote/approve",
        headers={"Authorization": f"Bearer {as_approver}"},
    )
    assert approved.status == 409
    assert f"was rejected by {approver}" in (await approved.json())["detail"]
    code, err = _annotate(
        kubectl, namespace, "promote", as_approver, {"dockyard.io/approved-by": approver}
    )
    assert code != 0
    assert "a rejected restore cannot be approved" in err
