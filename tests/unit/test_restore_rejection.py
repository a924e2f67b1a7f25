"""A restore is rejected only while it awaits approval, and the rejection's words are
kept to one printable line."""

from __future__ import annotations

from datetime import UTC, datetime

from dockyard.core.models.environment import Tier
from dockyard.core.models.restore import (
    REJECTED_BY_ANNOTATION,
    REJECTION_REASON_ANNOTATION,
    REJECTION_REASON_MAX_LENGTH,
    RestoreApproval,
)
from dockyard.core.restore_plan import ApprovalState
from dockyard.core.restore_rejection import decide_rejection, one_line

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
WAITING = RestoreApproval(required_by=Tier.PRODUCTION, requested_by="alice")


def test_a_rejection_of_a_restore_awaiting_approval_fails_it_and_records_who_and_why() -> None:
    annotations = {REJECTED_BY_ANNOTATION: "bob", REJECTION_REASON_ANNOTATION: "wrong backup"}
    decision = decide_rejection(awaiting=True, annotations=annotations, approval=WAITING, now=NOW)
    assert decision is not None
    assert decision.state is ApprovalState.REJECTED
    assert not decision.may_proceed
    assert decision.reason == "rejected by bob: wrong backup"
    assert decision.approval == WAITING.model_copy(
        update={"rejected_by": "bob", "rejected_at": NOW, "rejection_reason": "wrong backup"}
    )


def test_no_rejection_without_a_rejecter_or_outside_awaiting_approval() -> None:
    named = {REJECTED_BY_ANNOTATION: "bob"}
    assert decide_rejection(awaiting=True, annotations={}, approval=WAITING, now=NOW) is None
    blank = {REJECTED_BY_ANNOTATION: " \t", REJECTION_REASON_ANNOTATION: "why"}
    assert decide_rejection(awaiting=True, annotations=blank, approval=WAITING, now=NOW) is None
    # Approved (or never needing approval) and under way: too late to reject.
    assert decide_rejection(awaiting=False, annotations=named, approval=WAITING, now=NOW) is None


def test_a_rejection_without_a_reason_or_a_record_yet_says_who() -> None:
    annotations = {REJECTED_BY_ANNOTATION: "bob"}
    decision = decide_rejection(awaiting=True, annotations=annotations, approval=None, now=NOW)
    assert decision is not None
    assert decision.reason == "rejected by bob"
    assert decision.approval is not None
    assert decision.approval.rejection_reason is None


def test_the_reason_is_one_printable_line_of_bounded_length() -> None:
    assert one_line("wrong\n\tbackup\x1b[2J  again", 100) == "wrong backup[2J again"
    assert len(one_line("x" * 1000, REJECTION_REASON_MAX_LENGTH)) == REJECTION_REASON_MAX_LENGTH
    annotations = {REJECTED_BY_ANNOTATION: "bob", REJECTION_REASON_ANNOTATION: "y" * 1000}
    decision = decide_rejection(awaiting=True, annotations=annotations, approval=None, now=NOW)
    assert decision is not None
    assert decision.approval is not None
    assert decision.approval.rejection_reason == "y" * REJECTION_REASON_MAX_LENGTH
