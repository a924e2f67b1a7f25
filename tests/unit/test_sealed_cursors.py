"""Sealed page cursors: the position comes back only from a token this key sealed."""

from __future__ import annotations

import base64

import pytest

from dockyard.api import errors
from dockyard.api.cursors import Sealer

KEY = "k" * 32


def _pair(value: object) -> tuple[str, str]:
    namespace, name = value  # type: ignore[misc]
    return str(namespace), str(name)


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_a_sealed_position_opens_with_the_same_key_on_another_replica() -> None:
    token = Sealer(KEY).seal(["team-a", "shop"])
    assert Sealer(KEY).open(token, _pair) == ("team-a", "shop")


def test_a_token_shows_neither_the_position_nor_its_length() -> None:
    sealer = Sealer(KEY)
    short, long = sealer.seal(["a", "~"]), sealer.seal(["secret-tenant-namespace", "~"])
    assert b"secret-tenant" not in _raw(long)
    assert len(short) == len(long)
    assert sealer.seal(["a", "~"]) != short  # a fresh nonce each time


@pytest.mark.parametrize(
    "token",
    [
        Sealer("another key, as long as it must be").seal(["team-a", "shop"]),
        base64.urlsafe_b64encode(b'["team-a","shop"]').decode().rstrip("="),
        "",
        "AAAA",
    ],
    ids=["another key", "plain JSON", "empty", "too short"],
)
def test_a_token_not_sealed_with_this_key_is_refused(token: str) -> None:
    with pytest.raises(errors.Problem) as refused:
        Sealer(KEY).open(token, _pair)
    assert refused.value.status == 422
    assert [e.field for e in refused.value.errors or []] == ["query.cursor"]


def test_an_altered_token_is_refused() -> None:
    raw = bytearray(_raw(Sealer(KEY).seal(["team-a", "shop"])))
    raw[-1] ^= 1
    token = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(errors.Problem):
        Sealer(KEY).open(token, _pair)


def test_a_well_sealed_position_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(errors.Problem):
        Sealer(KEY).open(Sealer(KEY).seal({"namespace": "a"}), _pair)


def test_without_a_key_each_process_draws_its_own() -> None:
    token = Sealer(None).seal(["team-a", "shop"])
    with pytest.raises(errors.Problem):
        Sealer(None).open(token, _pair)
