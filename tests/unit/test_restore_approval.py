"""The SubjectAccessReview the operator asks before it acts on a Restore's approval: the
groups it sends come from a tenant-written annotation, so no ``system:`` group but
``system:authenticated`` is ever among them (``system:masters`` passes any review)."""

from __future__ import annotations

from typing import Any, cast

import pytest

from dockyard.core.kube import KubeClient
from dockyard.core.models.environment import Tier
from dockyard.core.models.restore import (
    APPROVED_BY_ANNOTATION,
    APPROVER_GROUPS_ANNOTATION,
    REQUESTED_BY_ANNOTATION,
    Restore,
)
from dockyard.core.restore_plan import ApprovalState
from dockyard.operator.restores.approval import approval_review, approver_groups, judge_approval


def _review(listed: str) -> dict[str, Any]:
    groups = approver_groups({APPROVER_GROUPS_ANNOTATION: listed})
    return approval_review(namespace="shop", name="promote", user="bob", groups=groups)


def test_the_review_asks_whether_the_named_user_may_approve_this_restore() -> None:
    review = _review("oncall")

    assert review["kind"] == "SubjectAccessReview"
    assert review["spec"] == {
        "user": "bob",
        "groups": ["oncall", "system:authenticated"],
        "resourceAttributes": {
            "group": "dockyard.io",
            "resource": "restores",
            "verb": "approve",
            "namespace": "shop",
            "name": "promote",
        },
    }


@pytest.mark.parametrize(
    "listed",
    [
        "system:masters",
        " system:masters ",
        "oncall,system:masters",
        "system:nodes,system:serviceaccounts,system:serviceaccounts:kube-system",
    ],
)
def test_system_groups_named_in_the_annotation_are_never_sent(listed: str) -> None:
    groups = _review(listed)["spec"]["groups"]

    assert [g for g in groups if g.startswith("system:")] == ["system:authenticated"]


def test_system_authenticated_is_sent_once_however_often_it_is_named() -> None:
    groups = _review("system:authenticated,oncall")["spec"]["groups"]

    assert groups == ["system:authenticated", "oncall"]


def test_the_builder_drops_system_groups_whoever_passes_them() -> None:
    review = approval_review(
        namespace="shop", name="promote", user="bob", groups=["system:masters", "oncall"]
    )

    assert review["spec"]["groups"] == ["oncall"]


def test_system_groups_do_not_push_real_ones_past_the_limit() -> None:
    listed = ",".join([*(f"system:g{i}" for i in range(100)), "oncall"])

    assert approver_groups({APPROVER_GROUPS_ANNOTATION: listed}) == (
        "oncall",
        "system:authenticated",
    )


# -- which approvals are reviewed --------------------------------------------------------------


class _Reviews:
    """The apiserver's SubjectAccessReviews: nobody holds ``approve``; each asked is kept."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def create(self, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.asked.append(body["spec"]["user"])
        return {"status": {"allowed": False, "reason": "no RBAC rule allows it"}}


def _restore(phase: str, status: dict[str, Any]) -> tuple[dict[str, Any], Restore]:
    raw = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Restore",
        "metadata": {
            "name": "promote",
            "namespace": "shop",
            "uid": "0f0e0d0c-0000-4000-8000-000000000001",
            "annotations": {REQUESTED_BY_ANNOTATION: "alice", APPROVED_BY_ANNOTATION: "bob"},
        },
        "spec": {"source": {"backupRef": {"name": "nightly"}}},
        "status": {"phase": phase, **status},
    }
    return raw, Restore.model_validate(raw)


async def test_a_restore_that_started_without_approval_has_its_new_approver_reviewed() -> None:
    # Its target was not production when it first ran; it is now, as the restore waits to
    # retry: the approval it needs now was never reviewed.
    raw, restore = _restore("AwaitingApproval", {"attempts": 1, "safetyBackup": "promote-safety"})
    reviews = _Reviews()

    decision = await judge_approval(cast(KubeClient, reviews), raw, restore, Tier.PRODUCTION)

    assert reviews.asked == ["bob"]
    assert decision.state is ApprovalState.REFUSED
    assert "bob may not approve restores in namespace shop" in decision.reason
    assert decision.approval is not None
    assert decision.approval.approved_by is None


async def test_an_approval_status_records_is_not_reviewed_again() -> None:
    approval = {"requiredBy": "production", "requestedBy": "alice", "approvedBy": "bob",
                "approvedAt": "2025-03-10T12:00:00Z"}  # fmt: skip
    # A retry re-enters Pending: the approval it was given still counts, unasked.
    raw, restore = _restore("Pending", {"attempts": 1, "approval": approval})
    reviews = _Reviews()

    decision = await judge_approval(cast(KubeClient, reviews), raw, restore, Tier.PRODUCTION)

    assert reviews.asked == []
    assert decision.state is ApprovalState.APPROVED
