"""Secrets kept out of the text Dockyard shows: error messages, statuses and logs.

One place for it, used by the platform database's start-up errors, the managed server's
errors and the runner's tool output: a secret is replaced by ``***`` as typed and in its
URL-quoted form, the two ways a DSN carries it.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

HIDDEN = "***"
_STRUCTURE = "/@:?#&=+;, \t\n"


def redact(text: str, *secrets: str | None) -> str:
    """``text`` with every secret (plain or URL-quoted) replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, HIDDEN).replace(quote(secret, safe=""), HIDDEN)
    return text


def typed_passwords(dsn: str) -> list[str]:
    """The password as typed in ``dsn`` (everything between the user's ``:`` and the last
    ``@``), as the driver decodes it, and the ``/``-separated pieces a misparse may have
    split it into; longest first, so that a piece never hides only part of the whole."""
    rest = dsn.partition("://")[2]
    userinfo = rest[: rest.rfind("@")] if "@" in rest else ""
    password = userinfo.partition(":")[2]
    decoded = unquote(password)
    # Not a decoded form that is only a URL's structure or blanks (a password typed %2F
    # decodes to "/", which every path holds); and pieces, a guess, from four characters.
    whole = [decoded] if decoded.strip(_STRUCTURE) else []
    pieces = [form for p in password.split("/") for form in (p, unquote(p)) if len(form) >= 4]
    return sorted({password, *whole, *pieces} - {""}, key=len, reverse=True)
