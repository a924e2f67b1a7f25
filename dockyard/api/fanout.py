"""Bounded permission fan-out: what one request may cost in SubjectAccessReviews.

A list over every namespace asks once whether the caller may act cluster-wide; only if
not does it check namespaces one by one, and then at most
``DOCKYARD_AUTHZ_FANOUT_NAMESPACES`` of them per request (the list's ``nextCursor``
continues after the last one checked), with at most ``DOCKYARD_AUTHZ_FANOUT_CONCURRENCY``
reviews in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from aiohttp import web

from dockyard.api import keys
from dockyard.api.auth import Permission, Principal

T = TypeVar("T")


async def gather_bounded(awaitables: Iterable[Awaitable[T]], concurrency: int) -> list[T]:
    """``asyncio.gather``, with at most ``concurrency`` of them running at once."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one(awaitable: Awaitable[T]) -> T:
        async with semaphore:
            return await awaitable

    return await asyncio.gather(*(one(a) for a in awaitables))


@dataclass(frozen=True)
class Readable:
    """Where the caller may act: ``namespaces`` None means everywhere (cluster-wide).

    ``checked_through`` is the last namespace checked when candidates after it were left
    unchecked for this request; None when every candidate was checked.
    """

    namespaces: frozenset[str] | None
    checked_through: str | None = None


async def readable_namespaces(
    request: web.Request,
    permission: Permission,
    candidates: Iterable[str],
    *,
    principal: Principal | None = None,
) -> Readable:
    """The namespaces among ``candidates`` where ``permission`` holds (or everywhere) for
    ``principal``: the request's caller as authenticated when it arrived, unless given.

    A long-lived request that authenticates its caller again (the event stream's
    re-check) passes the principal it got then, so that the groups it was given since,
    not those it had, decide.
    """
    settings = request.app[keys.SETTINGS]
    if principal is None:
        principal = request[keys.PRINCIPAL]
    authorizer = request.app[keys.AUTHORIZER]
    if (await authorizer.check(principal, permission)).allowed:
        return Readable(None)
    ordered = sorted(candidates)
    window = ordered[: settings.authz_fanout_namespaces]
    decisions = await gather_bounded(
        (authorizer.check(principal, permission, namespace=ns) for ns in window),
        settings.authz_fanout_concurrency,
    )
    allowed = frozenset(ns for ns, d in zip(window, decisions, strict=True) if d.allowed)
    more = window[-1] if len(ordered) > len(window) else None
    return Readable(allowed, more)
