"""``GET /api/v1/events``: server-sent events of the environment changes the caller may
watch, for as long as they still may.

Each event is checked (``watch`` in its namespace, through the SAR cache). Every
``DOCKYARD_STREAM_REAUTH_INTERVAL`` the stream also re-checks its caller: the token again
(TokenReview, through its cache), and ``watch`` in the namespace asked for, or else in
the namespaces the stream has been showing. When the token is no longer valid, or no
such permission is left, the stream sends a last ``event: error`` with a problem
document and ends.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
from aiohttp import web

from dockyard.api import errors, fanout, keys
from dockyard.api.auth import Permission, Principal, bearer_token
from dockyard.api.paths import DNS_LABEL
from dockyard.api.routes.objects import public as _public
from dockyard.core.breakers import DependencyUnavailable
from dockyard.core.kube import KubeError

logger = logging.getLogger(__name__)

RESOURCE = "environments"
WATCH = Permission("watch", RESOURCE)
KEEPALIVE = 15.0


class _Access:
    """What the stream's caller may still watch; ``recheck`` says why it may not."""

    def __init__(self, request: web.Request, only: str | None) -> None:
        self.request = request
        self.only = only
        self.principal: Principal = request[keys.PRINCIPAL]
        self.token = bearer_token(request.headers.get("Authorization")) or ""
        # Namespaces this stream may show; None once it may watch everywhere.
        self.showing: set[str] = set()
        self.everywhere = False

    async def start(self) -> None:
        try:
            await self._start()
        except (KubeError, DependencyUnavailable, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("stream access check failed", extra={"error": type(exc).__name__})
            raise errors.dependency_unavailable("kubernetes") from None

    async def _start(self) -> None:
        if self.only is not None:
            if not DNS_LABEL.matches(self.only):
                raise errors.validation_failed(
                    [errors.FieldError(field="query.namespace", message="not a namespace name")]
                )
            decision = await self._check(self.only)
            if not decision:
                raise errors.forbidden(
                    f"User {self.principal.user!r} may not watch "
                    f"dockyard.io/{RESOURCE} in namespace {self.only}."
                )
            self.showing = {self.only}
            return
        cache = self.request.app[keys.ENVIRONMENT_CACHE]
        readable = await fanout.readable_namespaces(self.request, WATCH, cache.namespaces())
        self.everywhere = readable.namespaces is None
        self.showing = set(readable.namespaces or ())

    async def allows(self, namespace: str) -> bool:
        """Whether an event in ``namespace`` may be shown (and remember the answer)."""
        if self.only is not None and namespace != self.only:
            return False
        allowed = await self._check(namespace)
        if allowed:
            self.showing.add(namespace)
        else:
            self.showing.discard(namespace)
        return allowed

    async def recheck(self) -> errors.Problem | None:
        """The problem that ends the stream, or None while the caller may go on."""
        try:
            principal = await self.request.app[keys.AUTHENTICATOR].authenticate(self.token)
            if principal is None:
                return errors.unauthorized("The bearer token is no longer valid.")
            self.principal = principal
            if self.only is not None:
                if await self._check(self.only):
                    return None
            else:
                if await self._still_showing():
                    return None
        except (KubeError, DependencyUnavailable, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("stream re-check failed", extra={"error": type(exc).__name__})
            return errors.dependency_unavailable("kubernetes")
        where = f"namespace {self.only}" if self.only else "any namespace it was showing"
        return errors.forbidden(
            f"User {self.principal.user!r} may no longer watch dockyard.io/{RESOURCE} in {where}."
        )

    async def _still_showing(self) -> bool:
        had = self.everywhere or bool(self.showing)
        authorizer = self.request.app[keys.AUTHORIZER]
        self.everywhere = (await authorizer.check(self.principal, WATCH)).allowed
        if self.everywhere:
            return True
        readable = await fanout.readable_namespaces(self.request, WATCH, self.showing)
        checked = set(self.showing)
        if readable.checked_through is not None:
            checked = {ns for ns in checked if ns <= readable.checked_through}
        self.showing -= checked - set(readable.namespaces or ())
        # A stream that never had anything to show has nothing to lose.
        return bool(self.showing) or not had

    async def _check(self, namespace: str) -> bool:
        authorizer = self.request.app[keys.AUTHORIZER]
        return (await authorizer.check(self.principal, WATCH, namespace=namespace)).allowed


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events of the environment changes the caller may watch."""
    settings = request.app[keys.SETTINGS]
    cache = request.app[keys.ENVIRONMENT_CACHE]
    access = _Access(request, request.query.get("namespace"))
    await access.start()
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    await response.write(b": connected\n\n")
    loop = asyncio.get_running_loop()
    interval = settings.stream_reauth_interval
    next_check = loop.time() + interval
    last_write = loop.time()
    async with cache.subscribe() as queue:
        while True:
            if loop.time() >= next_check:
                problem = await access.recheck()
                if problem is not None:
                    await _end(request, response, problem)
                    return response
                next_check = loop.time() + interval
            try:
                change = await asyncio.wait_for(
                    queue.get(), timeout=max(0.0, min(KEEPALIVE, next_check - loop.time()))
                )
            except TimeoutError:
                if loop.time() - last_write >= KEEPALIVE:
                    await response.write(b": keep-alive\n\n")
                    last_write = loop.time()
                continue
            if not await access.allows(change.namespace):
                continue
            data = json.dumps({"type": change.type, "object": _public(change.object)})
            rv = change.object.get("metadata", {}).get("resourceVersion", "")
            await response.write(f"event: {change.type}\nid: {rv}\ndata: {data}\n\n".encode())
            last_write = loop.time()


async def _end(request: web.Request, response: web.StreamResponse, problem: errors.Problem) -> None:
    document = problem.document(instance=request.path, request_id=request.get(keys.REQUEST_ID))
    data = json.dumps(document.model_dump(mode="json", exclude_none=True))
    await response.write(f"event: error\ndata: {data}\n\n".encode())
    await response.write_eof()
