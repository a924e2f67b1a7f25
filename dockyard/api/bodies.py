"""Reading request bodies: JSON only, bounded in size, depth and read time; the handler
then validates the result with its operation's request model.

Depth is checked right after parsing, by a walk that keeps its own stack: everything
that walks the result afterwards (merge patch, hashing, validation) recurses once per
level, so a body of ``[[[[...`` must be refused before any of them sees it (a
``RecursionError`` would otherwise surface as a 500). The parser itself stops a body
deeper than Python's recursion limit with ``RecursionError``, refused the same way.
Both are linear in the body's size: an earlier check stripped strings with a regular
expression first, which took quadratic time on a body of escaped quotes (one 1 MiB
body held the event loop for minutes).

The body is decoded as UTF-8 first (RFC 8259 8.1): ``json.loads`` given bytes would also
take UTF-16 and UTF-32.

No string may hold U+0000 (written ``\\u0000``): PostgreSQL stores no NUL in text or
``jsonb``, so the write's audit row (and an ``Idempotency-Key``'s stored answer) could
not be written while the apiserver took the write. It is refused with the field's path.
The audit sink alone takes it (the apiserver's report of a write already made): what
it stores goes through ``db.encode_json``, which replaces it.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from dockyard.api import errors, keys

JSON_TYPES = frozenset({"application/json", "application/merge-patch+json"})

# Far deeper than any object of the API (a few levels past spec) needs.
MAX_DEPTH = 32


def exceeds_depth(value: object, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep in the parsed ``value``;
    a walk with its own stack, which stops at the first level past the limit."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        elif not isinstance(item, list):
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in item)
    return False


def not_json(reason: str) -> errors.Problem:
    return errors.validation_failed(
        [errors.FieldError(field="(body)", message=f"not valid JSON: {reason}")]
    )


def decode(raw: bytes) -> str:
    """``raw`` as UTF-8 text; 422 for any other encoding, a byte order mark included.

    A JSON text never holds a NUL (control characters in strings are escaped), so one
    marks UTF-16 or UTF-32 where their bytes also happen to be valid UTF-8."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_json(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if text.startswith("\ufeff"):
        raise not_json("starts with a byte order mark; send UTF-8 without one")
    if "\x00" in text:
        raise not_json("holds a NUL byte; send UTF-8, not UTF-16 or UTF-32")
    return text


def nul_at(value: object) -> str | None:
    """The path of the first string (a value or a key) in ``value`` that holds U+0000."""
    stack: list[tuple[object, tuple[object, ...]]] = [(value, ())]
    while stack:
        item, loc = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return errors.field_path(loc)
        elif isinstance(item, dict):
            for key, child in item.items():
                shown = key.replace("\x00", "\\u0000")
                if shown != key:
                    return errors.field_path((*loc, shown))
                stack.append((child, (*loc, key)))
        elif isinstance(item, list):
            stack.extend((child, (*loc, i)) for i, child in enumerate(item))
    return None


def parse(raw: bytes, *, nul_allowed: bool = False) -> object:
    """``raw`` as JSON: UTF-8 text no deeper than ``MAX_DEPTH``, no string holding U+0000
    unless ``nul_allowed``; 400 or 422 otherwise."""
    text = decode(raw)
    try:
        value = json.loads(text)
    except RecursionError:
        raise too_deep(MAX_DEPTH) from None
    except ValueError as exc:
        raise not_json(str(exc)) from None
    if exceeds_depth(value, MAX_DEPTH):
        raise too_deep(MAX_DEPTH)
    # A raw NUL is refused above, so only the escape can make one: the walk is skipped
    # for every body without it.
    if not nul_allowed and "\\u0000" in text and (where := nul_at(value)) is not None:
        message = "holds a NUL character (\\u0000), which no string here may hold"
        raise errors.validation_failed([errors.FieldError(field=where, message=message)])
    return value


def too_deep(limit: int) -> errors.Problem:
    return errors.BODY_TOO_DEEP(
        f"The request body nests arrays and objects more than {limit} levels deep.",
    )


def body_timeout(seconds: float) -> errors.Problem:
    return errors.REQUEST_TIMEOUT(
        f"The request body did not arrive within {seconds:g} seconds.",
        headers={"Connection": "close"},
    )


async def read_json(
    request: web.Request,
    *,
    allowed: frozenset[str] = JSON_TYPES,
    max_bytes: int | None = None,
    nul_allowed: bool = False,
) -> object:
    """The body as JSON; 415 for another content type, 413 past the size limit, 422 if bad.

    The limit is the API's (``DOCKYARD_MAX_BODY_BYTES``) unless the route has its own
    (``max_bytes``, for a caller already authenticated: the audit sink, which also
    takes strings holding U+0000, ``nul_allowed``)."""
    if request.content_type not in allowed:
        raise errors.unsupported_media_type(request.content_type)
    timeout = request.app[keys.SETTINGS].body_read_timeout
    try:
        async with asyncio.timeout(timeout):
            if max_bytes is None:
                raw = await request.read()  # aiohttp enforces client_max_size here (413)
            else:
                raw = await _read_at_most(request, max_bytes)
    except TimeoutError:
        raise body_timeout(timeout) from None
    return parse(raw, nul_allowed=nul_allowed)


async def _read_at_most(request: web.Request, limit: int) -> bytes:
    """The body, or 413 as soon as it is known to pass ``limit`` bytes (read from the
    stream: aiohttp's ``client_max_size`` applies to ``request.read()`` only)."""
    if request.content_length is not None and request.content_length > limit:
        raise errors.payload_too_large(limit)
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > limit:
            raise errors.payload_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)
