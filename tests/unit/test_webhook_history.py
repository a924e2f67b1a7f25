"""A webhook's deliveries as the API reads them: a row as a delivery, and a cursor that is
a row id this API handed out, and nothing else."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dockyard.api import cursors, errors
from dockyard.api.delivery_history import WebhookDelivery, _fields
from dockyard.api.routes.webhooks import _row_id


def test_a_cursor_holds_the_row_id_to_continue_below() -> None:
    assert cursors.read(cursors.encode([4711]), _row_id) == 4711


def test_a_cursor_may_hold_the_largest_bigint() -> None:
    assert cursors.read(cursors.encode([2**63 - 1]), _row_id) == 2**63 - 1


@pytest.mark.parametrize(
    "position",
    [[True], [0], [-3], ["12"], [1.5], [1, 2], [], {"id": 1}, [2**63], [10**30]],
)
def test_any_other_position_is_refused_naming_the_cursor(position: Any) -> None:
    """A row id past PostgreSQL's bigint among them: it would fail there, a 500."""
    with pytest.raises(errors.Problem) as refused:
        cursors.read(cursors.encode(position), _row_id)

    assert refused.value.status == 422
    assert [e.field for e in refused.value.errors or []] == ["query.cursor"]


def _row(state: str) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "id": 7, "event_id": "evt_" + "0" * 32, "type": "backup.completed", "occurred_at": now,
        "state": state, "attempts": 3, "due_since": now, "next_at": now, "last_status": 503,
        "last_error": "the receiver answered 503", "delivered_at": None,
    }  # fmt: skip


def test_a_row_reads_as_a_delivery_with_its_next_attempt_only_while_pending() -> None:
    pending = WebhookDelivery.model_validate(_fields(_row("pending")))
    dead = WebhookDelivery.model_validate(_fields(_row("dead")))

    assert pending.next_attempt_at is not None
    assert dead.next_attempt_at is None
    body = dead.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert body["state"] == "dead"
    assert (body["attempts"], body["lastStatus"]) == (3, 503)
    assert "id" not in body
