"""The API's mark on the calls it makes with a caller's token: only a holder of the
audit sink's secret can mint it, and it holds for one user, one verb and one path."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from dockyard.core import audit_ids

PATH = "/apis/dockyard.io/v1alpha1/namespaces/shop/restores/promote"
NOW = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)


SECRET = "s"  # a test's sink token


def _mint(secret: str = SECRET, method: str = "PATCH", path: str = PATH) -> str:
    return audit_ids.mint(secret, "alice", method, path, now=NOW.timestamp())


def test_a_minted_id_is_the_apis_for_that_user_only() -> None:
    minted = _mint("sink-secret")
    assert len(minted) <= 64  # the trail's request_id, and the sink's auditID limit
    assert audit_ids.is_own("sink-secret", minted, "alice", "patch", PATH, NOW)
    assert not audit_ids.is_own("sink-secret", minted, "mallory", "patch", PATH, NOW)
    assert not audit_ids.is_own("another-secret", minted, "alice", "patch", PATH, NOW)


def test_a_minted_id_covers_only_the_verb_and_object_it_was_minted_for() -> None:
    """The attack: a mark read from an audit log, sent again with another write, would
    keep that write out of the trail."""
    minted = _mint()
    assert audit_ids.is_own("s", minted, "alice", "patch", f"{PATH}?fieldManager=x", NOW)
    assert not audit_ids.is_own("s", minted, "alice", "delete", PATH, NOW)
    assert not audit_ids.is_own("s", minted, "alice", "update", PATH, NOW)
    other = PATH.replace("promote", "other")
    assert not audit_ids.is_own("s", minted, "alice", "patch", other, NOW)
    assert not audit_ids.is_own("s", minted, "alice", "patch", f"{PATH}/status", NOW)
    assert not audit_ids.is_own("s", minted, "alice", "get", PATH, NOW)  # not a write's verb
    restores = PATH.rsplit("/", 1)[0]
    created = _mint(method="POST", path=restores)
    assert audit_ids.is_own("s", created, "alice", "create", restores, NOW)
    assert not audit_ids.is_own("s", created, "alice", "deletecollection", restores, NOW)


def test_a_minted_id_covers_only_a_call_received_within_the_window() -> None:
    """The same attack later: the call a mark was made for, made again with it, is not
    covered once the window has passed."""
    minted = _mint()
    window = timedelta(seconds=audit_ids.WINDOW)
    for received in (NOW + window, NOW - window):
        assert audit_ids.is_own("s", minted, "alice", "patch", PATH, received)
    for received in (NOW + window + timedelta(seconds=1), NOW - window - timedelta(seconds=1)):
        assert not audit_ids.is_own("s", minted, "alice", "patch", PATH, received)
    assert not audit_ids.is_own("s", minted, "alice", "patch", PATH, None)


def test_ids_are_fresh_and_forgeries_are_not_own() -> None:
    assert _mint() != _mint()
    nonce = _mint().split("-")[1]
    assert len(nonce) == 24
    assert int(nonce[:8], 16) == int(NOW.timestamp())
    for forged in (
        str(uuid.uuid4()),  # the apiserver's own kind of id
        f"dy2-{nonce}-{'0' * 32}",
        f"dy2-{nonce}",
        "dy2--",
        "",
    ):
        assert not audit_ids.is_own("s", forged, "alice", "patch", PATH, NOW), forged


def test_an_id_that_is_not_ascii_is_not_own_and_raises_nothing() -> None:
    """The apiserver keeps whatever Audit-ID a client sent; comparing text that is not
    ASCII would raise, and the sink would refuse the whole batch it came in."""
    nonce, mac = _mint().split("-")[1:]
    for chosen in ("dy2-0-\u00e9", f"dy2-{nonce}-{mac[:-1]}\u00e9", f"dy2-{nonce}-{mac}\n"):
        assert not audit_ids.is_own("s", chosen, "alice", "patch", PATH, NOW), chosen
