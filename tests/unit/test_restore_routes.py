"""The pure decisions behind the restore and drill routes: who may approve, and cursors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dockyard.api import errors
from dockyard.api.cursors import encode, encode_name, read_name
from dockyard.api.routes.restoredrills import DATABASE, STATUS, RunsCursor
from dockyard.api.routes.restores import approval_refusal


def _restore(phase: str | None, requester: str | None = "alice") -> dict[str, Any]:
    annotations = {"dockyard.io/requested-by": requester} if requester else {}
    restore: dict[str, Any] = {
        "metadata": {
            "namespace": "shop",
            "name": "r1",
            "annotations": annotations,
            "managedFields": [
                {"manager": "kubectl-client-side-apply", "time": "2025-01-01T00:00:00Z"}
            ],
        }
    }
    if phase is not None:
        restore["status"] = {"phase": phase}
    return restore


def test_another_user_may_approve_a_restore_awaiting_approval() -> None:
    assert approval_refusal(_restore("AwaitingApproval"), "bob") is None


def test_the_requester_is_refused_whatever_the_phase() -> None:
    for phase in ("AwaitingApproval", "Restoring", None):
        refusal = approval_refusal(_restore(phase), "alice")
        assert refusal is not None
        assert (refusal.status, refusal.slug) == (403, "approval-by-requester")


@pytest.mark.parametrize("phase", [None, "Pending", "Restoring", "Completed"])
def test_a_restore_not_awaiting_approval_is_a_conflict(phase: str | None) -> None:
    refusal = approval_refusal(_restore(phase), "bob")
    assert refusal is not None
    assert (refusal.status, refusal.slug) == (409, "not-awaiting-approval")


def test_a_restore_without_a_requester_cannot_be_approved() -> None:
    refusal = approval_refusal(_restore("AwaitingApproval", requester=None), "bob")
    assert refusal is not None
    assert (refusal.status, refusal.slug) == (409, "requester-unknown")


def test_list_cursors_round_trip_names() -> None:
    assert read_name(encode_name("shop-2025.01")) == "shop-2025.01"


def test_run_cursors_round_trip_with_their_source() -> None:
    at = datetime(2025, 2, 1, 4, 30, tzinfo=UTC)
    for cursor in (RunsCursor(DATABASE, at, 42), RunsCursor(STATUS, at)):
        assert RunsCursor.decode(cursor.encode()) == cursor


@pytest.mark.parametrize(
    "cursor",
    [
        "bm9wZQ",  # "nope"
        RunsCursor(DATABASE, datetime(2025, 2, 1, tzinfo=UTC), None).encode(),
        RunsCursor(STATUS, datetime(2025, 2, 1, tzinfo=UTC), 3).encode(),
        RunsCursor(STATUS, datetime(2025, 2, 1), None).encode(),  # naive time
        # Made by hand: an id past PostgreSQL's bigint, a time with no UTC instant.
        encode([DATABASE, "2025-01-01T00:00:00+00:00", 2**63]),
        encode([DATABASE, "2025-01-01T00:00:00+00:00", 0]),
        encode([DATABASE, "0001-01-01T00:00:00+01:00", 5]),
        encode([STATUS, "9999-12-31T23:30:00-01:00", None]),
    ],
)
def test_a_run_cursor_this_api_did_not_issue_is_refused(cursor: str) -> None:
    with pytest.raises(errors.Problem) as raised:
        RunsCursor.decode(cursor)
    assert raised.value.status == 422
    assert [e.field for e in raised.value.errors or []] == ["query.cursor"]


def test_a_run_cursor_may_hold_the_largest_bigint_and_the_first_instant() -> None:
    earliest = datetime(1, 1, 1, tzinfo=UTC)
    for cursor in (RunsCursor(DATABASE, earliest, 2**63 - 1), RunsCursor(STATUS, earliest)):
        assert RunsCursor.decode(cursor.encode()) == cursor
