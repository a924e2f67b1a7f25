"""Reading request bodies: JSON only, bounded in size, depth and read time; the handler
then validates the result with its operation's request model.

Depth is checked on the raw bytes before parsing: the parser, and everything that walks
the result afterwards (merge patch, hashing, validation), recurses once per level, so
a body of ``[[[[...`` must be refused before any of them sees it (a ``RecursionError``
would otherwise surface as a 500).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re

from aiohttp import web

from dockyard.api import errors, keys

JSON_TYPES = frozenset({"application/json", "application/merge-patch+json"})

# Far deeper than any object of the API (a few levels past spec) needs.
MAX_DEPTH = 32
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(rb"[\[\]{}]")


def exceeds_depth(raw: bytes, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` deep in ``raw`` (brackets inside
    strings do not count); stops at the first level past the limit."""
    steps = (1 if m[0] in b"[{" else -1 for m in _BRACKET.finditer(_STRING.sub(b"", raw)))
    return any(depth > limit for depth in itertools.accumulate(steps))


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
    request: web.Request, *, allowed: frozenset[str] = JSON_TYPES, max_bytes: int | None = None
) -> object:
    """The body as JSON; 415 for another content type, 413 past the size limit, 422 if bad.

    The limit is the API's (``DOCKYARD_MAX_BODY_BYTES``) unless the route has its own
    (``max_bytes``, for a caller already authenticated: the audit sink)."""
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
    if exceeds_depth(raw, MAX_DEPTH):
        raise too_deep(MAX_DEPTH)
    try:
        return json.loads(raw)
    except RecursionError:
        raise too_deep(MAX_DEPTH) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.validation_failed(
            [errors.FieldError(field="(body)", message=f"not valid JSON: {exc}")]
        ) from None


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
