"""Audit IDs that mark the API's calls made with a caller's token as its own.

The API writes to the apiserver with the caller's own token, so the apiserver's audit
event names the caller, exactly as for the caller's kubectl. What tells the two apart is
the ``Audit-ID`` request header, which the apiserver keeps as the event's ``auditID``:
the API sends ``dy2-<time><nonce>-<mac>``, the MAC binding the time it was minted and the
nonce to the caller's user name and to the one call it marks (its HTTP method and the
path it was sent to) under a key derived from the audit sink's token (which every API
replica holds and no caller does).
The sink (``dockyard.api.routes.kubernetes_audit``) leaves an event with a valid mark to
the REST trail, which has already recorded it; anything else, whatever its user agent,
is a client's own write. A mark read from an audit log covers no other write: not
another user's, not another verb's, not another object's, and none received by the
apiserver more than ``WINDOW`` from the mark's time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from datetime import datetime
from typing import Final

PREFIX: Final = "dy2"
_CONTEXT: Final = b"dockyard.io/audit-id/v2"
_SHAPE: Final = re.compile(rf"{PREFIX}-(([0-9a-f]{{8}})[0-9a-f]{{16}})-([0-9a-f]{{32}})", re.ASCII)
"""What ``mint`` makes; a client chooses its own Audit-ID, so anything else is theirs."""


VERB_METHODS: Final = {
    "create": "POST",
    "update": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
    "deletecollection": "DELETE",
}
"""The HTTP method of each write verb the apiserver audits."""
WINDOW: Final = 60.0
"""Seconds between a mark's minting and the apiserver's receipt of its call, either way
(for the two clocks): a mark replayed later covers nothing."""


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _CONTEXT, hashlib.sha256).digest()


def _mac(secret: str, nonce: str, username: str, method: str, path: str) -> str:
    message = json.dumps([nonce, username, method.upper(), path]).encode()
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()[:32]


def mint(secret: str, username: str, method: str, path: str, *, now: float | None = None) -> str:
    """A fresh audit ID for one call the API makes now (``now``, in Unix seconds) as
    ``username``: ``method`` on ``path`` (the URL's path as sent, without its query)."""
    minted = int(time.time() if now is None else now)
    nonce = f"{minted & 0xFFFFFFFF:08x}{secrets.token_hex(8)}"
    return f"{PREFIX}-{nonce}-{_mac(secret, nonce, username, method, path)}"


def is_own(
    secret: str,
    audit_id: str,
    username: str,
    verb: str,
    request_uri: str,
    received: datetime | None,
) -> bool:
    """Whether ``audit_id`` was minted by an API holding ``secret`` for this call: by
    ``username``, with the method of ``verb``, on the path of ``request_uri``, within
    ``WINDOW`` of ``received`` (as the apiserver's audit event reports them).

    Only an ID of the shape ``mint`` makes is checked, and as bytes: the apiserver keeps
    whatever a client sent, and comparing text that is not ASCII would raise.
    """
    shape = _SHAPE.fullmatch(audit_id)
    method = VERB_METHODS.get(verb)
    if shape is None or method is None or received is None:
        return False
    nonce, minted, mac = shape.groups()
    if abs(received.timestamp() - int(minted, 16)) > WINDOW:
        return False
    path = request_uri.split("?", 1)[0]
    expected = _mac(secret, nonce, username, method, path)
    return hmac.compare_digest(mac.encode(), expected.encode())
