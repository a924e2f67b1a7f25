"""The audit sink's events: one row per event as the apiserver sent it, never one per
``auditID``, which the client that made the request chose (its ``Audit-ID`` header)."""

from __future__ import annotations

from typing import Any

from dockyard.api.routes.kubernetes_audit import _events
from dockyard.core.audit_rows import Source


def event(audit_id: str, received: str) -> dict[str, Any]:
    return {
        "auditID": audit_id,
        "stage": "ResponseComplete",
        "verb": "patch",
        "requestReceivedTimestamp": received,
        "stageTimestamp": received,
        "user": {"username": "bob", "groups": ["ops"]},
        "userAgent": "kubectl/v1.37.1",
        "objectRef": {
            "apiGroup": "dockyard.io",
            "resource": "restores",
            "namespace": "shop",
            "name": "promote",
        },
        "responseStatus": {"code": 200},
    }


def keys(items: list[dict[str, Any]]) -> list[str | None]:
    events, skipped = _events(items)
    assert skipped == 0
    rows = [e.row(frozenset(), "sink-secret", {}) for e in events]
    assert all(row is not None and row.source is Source.KUBECTL for row in rows)
    return [row.event_key for row in rows if row is not None]


def test_two_writes_that_share_a_chosen_audit_id_are_two_events() -> None:
    first, second = keys(
        [
            event("x1", "2026-12-05T12:00:00.000001Z"),
            event("x1", "2026-12-05T12:00:00.000002Z"),
        ]
    )
    assert first
    assert second
    assert first != second


def test_a_batch_sent_again_keys_each_event_as_before() -> None:
    batch = [event("a", "2026-12-05T12:00:00.1Z"), event("b", "2026-12-05T12:00:00.2Z")]
    assert keys(batch) == keys([dict(reversed(list(item.items()))) for item in batch])


def test_an_overlong_audit_id_is_cut_not_skipped() -> None:
    events, skipped = _events([event("a" * 100, "2026-12-05T12:00:00Z")])
    assert skipped == 0
    row = events[0].row(frozenset(), "sink-secret", {})
    assert row is not None
    assert row.request_id == "a" * 64


def test_an_event_without_an_audit_id_is_skipped() -> None:
    missing = event("", "2026-12-05T12:00:00Z")
    del missing["auditID"]
    assert _events([missing])[1] == 1


def _source_ip(source_ips: list[str]) -> str | None:
    events, skipped = _events([{**event("ip", "2026-12-05T12:00:00Z"), "sourceIPs": source_ips}])
    assert skipped == 0
    row = events[0].row(frozenset(), "sink-secret", {})
    assert row is not None
    return row.source_ip


def test_the_source_ip_is_the_apiservers_peer_not_a_forwarded_for_address() -> None:
    """The apiserver lists X-Forwarded-For (any client sets it) first, its peer last."""
    assert _source_ip(["8.8.8.8", "10.0.0.5"]) == "10.0.0.5"
    assert _source_ip(["10.0.0.5"]) == "10.0.0.5"
    assert _source_ip([]) is None


def test_a_forged_list_too_long_to_keep_still_gives_the_peer() -> None:
    forged = [f"203.0.113.{n}" for n in range(1, 40)]
    assert _source_ip([*forged, "10.0.0.5"]) == "10.0.0.5"
