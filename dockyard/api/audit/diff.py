"""``spec_diff``: what an update changed, as the audit trail records it.

Handlers of updates put it in ``request[keys.AUDIT]``; the middleware stores it in the
row's ``diff``. Values under secret-looking keys never enter it in clear, nor do the
credentials a URL may carry: under a key naming a URL (``url``, ``webhookUrl``), the
user info and the fragment are redacted, each query parameter's value, as receivers
take tokens there (``https://host/hook?token=[redacted]``), and each path segment that
reads as a token, where Slack, Discord and Teams put theirs
(``https://hooks.slack.com/services/T0123/B0456/[redacted]``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

# Keys whose values never enter a diff in clear (compared with "-" and "_" removed).
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|apikey|privatekey|credentials?)$", re.I)
_URL_KEY = re.compile(r"url$", re.I)
# A path segment that reads as a credential: 16 or more URL-safe characters, letters and
# digits mixed. A readable name may match too, and is redacted: a diff only needs to show
# that the receiver changed, which its host and other segments still do.
_TOKEN_SEGMENT = re.compile(r"(?=[^/]*\d)(?=[^/]*[A-Za-z])[\w\-.~%]{16,}", re.ASCII)
REDACTED = "[redacted]"


def spec_diff(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """What changed between two JSON objects, as ``{json-pointer: {"from": a, "to": b}}``.

    Objects are compared field by field; lists and scalars as whole values, as JSON
    merge patch (the API's update format) replaces lists whole. A field only in
    ``after`` has no ``from``, one only in ``before`` no ``to``, so a removal is not
    mistaken for a change to null. Paths are RFC 6901 pointers (``~`` and ``/`` in keys
    escaped). Values under secret-looking keys (password, token, ...) are redacted, and
    the credentials of URLs under URL keys (``redact_url``).
    """
    changes: dict[str, dict[str, Any]] = {}
    _compare("", before or {}, after or {}, changes, secret=False)
    return changes


def _compare(
    path: str,
    before: Any,
    after: Any,
    out: dict[str, dict[str, Any]],
    *,
    secret: bool,
    url: bool = False,
) -> None:
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        for key in sorted(set(before) | set(after), key=str):
            child = f"{path}/{_pointer_token(str(key))}"
            hidden = secret or _is_secret_key(str(key))
            named_url = _is_url_key(str(key))
            if key not in after:
                out[child] = {"from": _redact(before[key], hidden, named_url)}
            elif key not in before:
                out[child] = {"to": _redact(after[key], hidden, named_url)}
            else:
                _compare(child, before[key], after[key], out, secret=hidden, url=named_url)
        return
    # True == 1 to Python, not to JSON.
    if isinstance(before, bool) != isinstance(after, bool) or before != after:
        out[path or "/"] = {"from": _redact(before, secret, url), "to": _redact(after, secret, url)}


def _pointer_token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key.replace("-", "").replace("_", "")))


def _is_url_key(key: str) -> bool:
    return bool(_URL_KEY.search(key))


def _redact(value: Any, secret: bool, url: bool = False) -> Any:
    if secret:
        return REDACTED
    if url and isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return {
            k: _redact(v, _is_secret_key(str(k)), _is_url_key(str(k))) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_redact(v, False) for v in value]
    return value


def redact_url(url: str) -> str:
    """``url`` with its user info, its fragment, each query parameter's value and each
    path segment that reads as a token redacted; scheme, host, port, the rest of the path
    and the parameters' names stay, so that a change of receiver still shows. A value
    that does not parse as a URL, or may hide user info where no host was read, is
    redacted whole."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if "@" in parts.path or "@" in parts.query or "@" in parts.fragment:
        # User info may hide there: no scheme ("user:password@host/..." read as a
        # path), or a password holding a / ? or # ("https://u:pa/ss@host/" read as
        # host "u:pa" and path "/ss@host/").
        return REDACTED
    _, at, host = parts.netloc.rpartition("@")
    netloc = f"{REDACTED}@{host}" if at else host
    query = "&".join(
        f"{name}={REDACTED}" if sep else REDACTED
        for name, sep, _ in (p.partition("=") for p in parts.query.split("&"))
    )
    path = "/".join(
        REDACTED if _TOKEN_SEGMENT.fullmatch(segment) else segment
        for segment in parts.path.split("/")
    )
    return urlunsplit(
        (
            parts.scheme,
            netloc,
            path,
            query if parts.query else "",
            REDACTED if parts.fragment else "",
        )
    )
