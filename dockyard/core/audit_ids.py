"""Audit IDs that mark the API's calls made with a caller's token as its own.

The API writes to the apiserver with the caller's own token, so the apiserver's audit
event names the caller, exactly as for the caller's kubectl. What tells the two apart is
the ``Audit-ID`` request header, which the apiserver keeps as the event's ``auditID``:
the API sends ``dy1-<nonce>-<mac>``, the MAC binding the nonce to the caller's user name
under a key derived from the audit sink's token (which every API replica holds and no
caller does). The sink (``dockyard.api.routes.kubernetes_audit``) leaves an event with a
valid mark to the REST trail, which has already recorded it; anything else, whatever its
user agent, is a client's own write.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import Final

PREFIX: Final = "dy1"
_CONTEXT: Final = b"dockyard.io/audit-id/v1"
_SHAPE: Final = re.compile(rf"{PREFIX}-([0-9a-f]{{16}})-([0-9a-f]{{32}})", re.ASCII)
"""What ``mint`` makes; a client chooses its own Audit-ID, so anything else is theirs."""


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _CONTEXT, hashlib.sha256).digest()


def _mac(secret: str, nonce: str, username: str) -> str:
    message = f"{nonce}|{username}".encode()
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()[:32]


def mint(secret: str, username: str) -> str:
    """A fresh audit ID for one call the API makes as ``username``."""
    nonce = secrets.token_hex(8)
    return f"{PREFIX}-{nonce}-{_mac(secret, nonce, username)}"


def is_own(secret: str, audit_id: str, username: str) -> bool:
    """Whether ``audit_id`` was minted by an API holding ``secret`` for ``username``.

    Only an ID of the shape ``mint`` makes is checked, and as bytes: the apiserver keeps
    whatever a client sent, and comparing text that is not ASCII would raise.
    """
    shape = _SHAPE.fullmatch(audit_id)
    if shape is None:
        return False
    nonce, mac = shape.groups()
    return hmac.compare_digest(mac.encode(), _mac(secret, nonce, username).encode())
