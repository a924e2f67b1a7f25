"""``spec_diff``: what an update changed, as the audit trail records it.

Handlers of updates put it in ``request[keys.AUDIT]``; the middleware stores it in the
row's ``diff``. Values under secret-looking keys never enter it in clear.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

# Keys whose values never enter a diff in clear (compared with "-" and "_" removed).
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|apikey|privatekey|credentials?)$", re.I)
REDACTED = "[redacted]"


def spec_diff(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """What changed between two JSON objects, as ``{json-pointer: {"from": a, "to": b}}``.

    Objects are compared field by field; lists and scalars as whole values, as JSON
    merge patch (the API's update format) replaces lists whole. A field only in
    ``after`` has no ``from``, one only in ``before`` no ``to``, so a removal is not
    mistaken for a change to null. Paths are RFC 6901 pointers (``~`` and ``/`` in keys
    escaped). Values under secret-looking keys (password, token, ...) are redacted.
    """
    changes: dict[str, dict[str, Any]] = {}
    _compare("", before or {}, after or {}, changes, secret=False)
    return changes


def _compare(
    path: str, before: Any, after: Any, out: dict[str, dict[str, Any]], *, secret: bool
) -> None:
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        for key in sorted(set(before) | set(after), key=str):
            child = f"{path}/{_pointer_token(str(key))}"
            hidden = secret or _is_secret_key(str(key))
            if key not in after:
                out[child] = {"from": _redact(before[key], hidden)}
            elif key not in before:
                out[child] = {"to": _redact(after[key], hidden)}
            else:
                _compare(child, before[key], after[key], out, secret=hidden)
        return
    # True == 1 to Python, not to JSON.
    if isinstance(before, bool) != isinstance(after, bool) or before != after:
        out[path or "/"] = {"from": _redact(before, secret), "to": _redact(after, secret)}


def _pointer_token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key.replace("-", "").replace("_", "")))


def _redact(value: Any, secret: bool) -> Any:
    if secret:
        return REDACTED
    if isinstance(value, Mapping):
        return {k: _redact(v, _is_secret_key(str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, False) for v in value]
    return value
