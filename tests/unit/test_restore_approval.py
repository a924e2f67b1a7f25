"""The SubjectAccessReview the operator asks before it acts on a Restore's approval: the
groups it sends come from a tenant-written annotation, so no ``system:`` group but
``system:authenticated`` is ever among them (``system:masters`` passes any review)."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.core.models.restore import APPROVER_GROUPS_ANNOTATION
from dockyard.operator.restores.approval import approval_review, approver_groups


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
