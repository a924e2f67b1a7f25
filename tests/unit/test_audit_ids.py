"""The API's mark on the calls it makes with a caller's token: only a holder of the
audit sink's secret can mint it, and it holds for one user name only."""

from __future__ import annotations

import uuid

from dockyard.core import audit_ids


def test_a_minted_id_is_the_apis_for_that_user_only() -> None:
    minted = audit_ids.mint("sink-secret", "alice")
    assert len(minted) <= 64  # the trail's request_id, and the sink's auditID limit
    assert audit_ids.is_own("sink-secret", minted, "alice")
    assert not audit_ids.is_own("sink-secret", minted, "mallory")  # not replayable by another
    assert not audit_ids.is_own("another-secret", minted, "alice")


def test_ids_are_fresh_and_forgeries_are_not_own() -> None:
    assert audit_ids.mint("s", "alice") != audit_ids.mint("s", "alice")
    nonce = audit_ids.mint("s", "alice").split("-")[1]
    for forged in (
        str(uuid.uuid4()),  # the apiserver's own kind of id
        f"dy1-{nonce}-{'0' * 32}",
        f"dy1-{nonce}",
        "dy1--",
        "",
    ):
        assert not audit_ids.is_own("s", forged, "alice"), forged


def test_an_id_that_is_not_ascii_is_not_own_and_raises_nothing() -> None:
    """The apiserver keeps whatever Audit-ID a client sent; comparing text that is not
    ASCII would raise, and the sink would refuse the whole batch it came in."""
    minted = audit_ids.mint("s", "alice")
    nonce, mac = minted.split("-")[1:]
    for chosen in ("dy1-0-\u00e9", f"dy1-{nonce}-{mac[:-1]}\u00e9", f"dy1-{nonce}-{mac}\n"):
        assert not audit_ids.is_own("s", chosen, "alice"), chosen
