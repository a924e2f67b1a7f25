"""Page cursors: the opaque ``?cursor=`` tokens that paged lists hand out and take back.

A cursor says where a page ended: as compact JSON (``[namespace, name]`` for the
environment lists, ``[source, startedAt, id]`` for drill runs, ``[occurredAt, id]`` for
the audit trail) or, for the lists paged by object name, the name itself; either way in
unpadded URL-safe base64. Decoding is strict: a token holding anything but that
alphabet was not handed out here. What a decoded position must look like is each list's
own business (``read``'s ``shape``); a token that fails either test is ``InvalidCursor``,
which a list answers with ``refused()``: 422 naming ``query.cursor``.

A list whose position may name something its caller cannot read seals its cursors
(``Sealer``): the all-namespaces Environment list, which goes on after the last
namespace it checked, readable or not. A sealed cursor is the position encrypted with
AES-256-GCM under a key derived from ``DOCKYARD_CURSOR_KEY``, padded to a multiple of
64 bytes, so neither its contents nor their exact length show; one altered, or sealed
under another key, is ``InvalidCursor``.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Callable
from typing import Any, TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from dockyard.api import errors

T = TypeVar("T")


class InvalidCursor(ValueError):
    """A cursor that this API did not hand out (or that was altered)."""


def encode(position: object) -> str:
    """The token of a position made of JSON values."""
    return _pack(json.dumps(position, separators=(",", ":")).encode())


def decode(token: str) -> Any:
    """The position ``encode`` put in ``token``."""
    try:
        return json.loads(_unpack(token))
    except ValueError:  # also UnicodeDecodeError
        raise InvalidCursor("not a cursor returned by this API") from None


def encode_name(name: str) -> str:
    """The token of a list paged by object name: the last name on the page."""
    return _pack(name.encode())


def read_name(token: str) -> str:
    """The object name a ``?cursor=`` of a list paged by name holds; ``refused()`` if none."""
    try:
        return _unpack(token).decode()
    except ValueError:  # InvalidCursor, UnicodeDecodeError
        raise refused() from None


def read(token: str, shape: Callable[[Any], T]) -> T:
    """The position a ``?cursor=`` names, as ``shape`` reads it from the decoded JSON.

    ``shape`` raises ``ValueError`` or ``TypeError`` for a position its list never
    hands out; either way the answer is ``refused()``.
    """
    try:
        return shape(decode(token))
    except (ValueError, TypeError):
        raise refused() from None


_NONCE = 12
_BLOCK = 64
_HKDF_INFO = b"dockyard page cursors v1: aes-256-gcm"


class Sealer:
    """Seals positions into cursors its caller cannot read, and opens them again.

    Every API replica must hold the same ``secret`` for a cursor handed out by one to be
    taken by another; ``None`` draws a key for this process only.
    """

    def __init__(self, secret: str | None) -> None:
        material = secret.encode() if secret is not None else os.urandom(32)
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
            material
        )
        self._aead = AESGCM(key)

    def seal(self, position: object) -> str:
        """The token of a position made of JSON values, readable only by ``open``."""
        plain = json.dumps(position, separators=(",", ":")).encode()
        plain += b" " * (-len(plain) % _BLOCK)  # JSON ignores trailing spaces
        nonce = os.urandom(_NONCE)
        return _pack(nonce + self._aead.encrypt(nonce, plain, None))

    def open(self, token: str, shape: Callable[[Any], T]) -> T:
        """The position ``seal`` put in ``token``, as ``shape`` reads it; ``refused()``
        for a token not sealed here (or altered), or a position ``shape`` rejects."""
        try:
            raw = _unpack(token)
            plain = self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], None)
            return shape(json.loads(plain))
        except (InvalidTag, ValueError, TypeError):  # InvalidCursor is a ValueError
            raise refused() from None


def refused() -> errors.Problem:
    return errors.validation_failed(
        [errors.FieldError(field="query.cursor", message="not a cursor this API issued")]
    )


def _pack(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unpack(token: str) -> bytes:
    try:
        return base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise InvalidCursor("not a cursor returned by this API") from None


__all__ = [
    "InvalidCursor",
    "Sealer",
    "decode",
    "encode",
    "encode_name",
    "read",
    "read_name",
    "refused",
]
