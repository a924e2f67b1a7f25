"""``GET /api/v1/events``: server-sent events of every kind the caller may watch, for as
long as they still may.

Two feeds share the stream:

- **Dockyard events** (``backup.completed``, ``restore.approved``..., the vocabulary of
  ``dockyard.core.events``) from the durable event log. Each carries ``id: <seq>``; a
  client that reconnects with ``Last-Event-ID`` gets every event after it, across API
  restarts and replicas. A new stream starts after the newest event.
- **Live environment changes** (``ADDED``, ``MODIFIED``, ``DELETED`` with the object),
  as in version 1.0 of the API, from the watch cache, without ids: they are not
  replayed. A client that falls more than ``LIVE_BUFFER`` changes behind gets a final
  ``error`` event (``stream-too-slow``) and is disconnected rather than buffered
  without bound; one that stops reading for ``WRITE_DEADLINE`` seconds is dropped.

A comment line is sent every ``KEEPALIVE`` seconds when nothing else was.

Each event is checked (``watch`` on its kind in its namespace); one logged before the
namespace now under its name was created belongs to an earlier namespace of that name,
and only callers who may watch its kind cluster-wide see it. Every
``DOCKYARD_STREAM_REAUTH_INTERVAL`` the stream also re-checks its caller: the token again
(TokenReview, through its cache), and ``watch`` in the namespace asked for, or else in
the namespaces the stream has been showing. When the token is no longer valid, or no
such permission is left, the stream sends a last ``event: error`` with a problem
document and ends. The re-check comes between batches of the event log too, so a long
replay cannot put it off. When the apiserver cannot say whether a live change may be
shown, the stream ends the same way (``dependency-unavailable``): a live change is not
replayed, so the client must learn that it may have missed one.

What one stream may cost is bounded, whatever the caller may watch:

- a decision (kind, namespace) is made once per re-check interval, and at most
  ``DOCKYARD_STREAM_REVIEWS`` new ones per interval are made for the event log's replay:
  past that, the replay waits for the next interval (it loses nothing; live changes go
  on);
- a user holds at most ``DOCKYARD_STREAMS_PER_USER`` open streams on one API replica;
  another is 429.
"""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import asyncpg
from aiohttp import web

from dockyard.api import errors, fanout, keys
from dockyard.api.auth import Permission, Principal, bearer_token
from dockyard.api.cache import Change, WatchCache
from dockyard.api.paths import DNS_LABEL
from dockyard.api.routes.objects import public as _public
from dockyard.core import event_log
from dockyard.core.breakers import DependencyUnavailable
from dockyard.core.kube import KubeError

logger = logging.getLogger(__name__)

RESOURCE = "environments"
WATCH = Permission("watch", RESOURCE)
KEEPALIVE = 15.0
# How often a stream looks at the event tail and its live changes, in seconds.
POLL_SECONDS = 0.5
# Logged events read per query; live changes a stream may fall behind before it ends.
LOG_BATCH = 100
LIVE_BUFFER = 1000
# A write the client does not take within this many seconds drops the stream.
WRITE_DEADLINE = 10.0
# How a review (TokenReview, SubjectAccessReview, a namespace's read) fails while the
# apiserver is away or hung.
REVIEW_FAILURES = (KubeError, DependencyUnavailable, aiohttp.ClientError, TimeoutError)


class _StoppedReading(Exception):
    """The client took nothing for ``WRITE_DEADLINE`` seconds: nothing more can reach it.

    Its own type, so that a review's TimeoutError is never taken for it."""


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
        # Kinds other than environments the caller may watch cluster-wide (or not).
        self.kinds_everywhere: dict[str, bool] = {}
        # This interval's decisions on (kind, namespace), and how many more the replay
        # of the event log may make before it waits for the next interval.
        self.decided: dict[tuple[str, str], bool] = {}
        self.budget = request.app[keys.SETTINGS].stream_reviews

    async def start(self) -> None:
        try:
            await self._start()
        except REVIEW_FAILURES as exc:
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
        readable = await fanout.readable_namespaces(
            self.request, WATCH, cache.namespaces(), principal=self.principal
        )
        self.everywhere = readable.namespaces is None
        self.showing = set(readable.namespaces or ())

    async def allows(self, namespace: str) -> bool:
        """Whether an event in ``namespace`` may be shown (and remember the answer)."""
        if self.only is not None and namespace != self.only:
            return False
        if self.everywhere:
            return True
        allowed = await self._decide(RESOURCE, namespace)
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
            # Asked again, as the bindings may have changed.
            self.kinds_everywhere.clear()
            self.decided.clear()
            self.budget = self.request.app[keys.SETTINGS].stream_reviews
            if self.only is not None:
                if await self._check(self.only):
                    return None
            else:
                if await self._still_showing():
                    return None
        except REVIEW_FAILURES as exc:
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
        readable = await fanout.readable_namespaces(
            self.request, WATCH, self.showing, principal=self.principal
        )
        checked = set(self.showing)
        if readable.checked_through is not None:
            checked = {ns for ns in checked if ns <= readable.checked_through}
        self.showing -= checked - set(readable.namespaces or ())
        # A stream that never had anything to show has nothing to lose.
        return bool(self.showing) or not had

    def may_decide(self, resource: str, namespace: str) -> bool:
        """Whether the replay may ask about ``resource`` in ``namespace`` now: the answer
        is known, or this interval's budget of new decisions is not spent."""
        if self.only is not None and namespace != self.only:
            return True  # shown to nobody: nothing to ask
        if self._everywhere(resource):
            return True
        return (resource, namespace) in self.decided or self.budget > 0

    def _everywhere(self, resource: str) -> bool:
        """Whether the caller is known to may watch ``resource`` cluster-wide."""
        return (
            self.everywhere if resource == RESOURCE else bool(self.kinds_everywhere.get(resource))
        )

    async def of_this_namespace(self, row: event_log.Logged) -> bool:
        """Whether ``row`` happened in the namespace now under its name, not in an earlier
        one that was deleted. A caller who may watch its kind cluster-wide sees both."""
        if await self._watches_everywhere(row.resource):
            return True
        born = await self.request.app[keys.NAMESPACE_BIRTHS].born(row.namespace)
        return born is not None and row.occurred_at >= born

    async def may_watch(self, resource: str, namespace: str) -> bool:
        """Whether a logged event about ``resource`` in ``namespace`` may be shown.

        A caller who may watch the kind cluster-wide is asked once per kind, others once
        per namespace and kind, each until the next re-check.
        """
        if self.only is not None and namespace != self.only:
            return False
        if resource == RESOURCE:
            return await self.allows(namespace)
        if await self._watches_everywhere(resource):
            return True
        return await self._decide(resource, namespace)

    async def _watches_everywhere(self, resource: str) -> bool:
        """Whether the caller may watch ``resource`` cluster-wide, asked once per kind
        until the next re-check (a stream of one namespace asks about environments too)."""
        if resource == RESOURCE and self.only is None:
            return self.everywhere
        everywhere = self.kinds_everywhere.get(resource)
        if everywhere is None:
            authorizer = self.request.app[keys.AUTHORIZER]
            permission = Permission("watch", resource)
            everywhere = (await authorizer.check(self.principal, permission)).allowed
            self.kinds_everywhere[resource] = everywhere
        return everywhere

    async def _decide(self, resource: str, namespace: str) -> bool:
        """``watch`` on ``resource`` in ``namespace``, asked once per interval."""
        known = self.decided.get((resource, namespace))
        if known is not None:
            return known
        self.budget -= 1
        authorizer = self.request.app[keys.AUTHORIZER]
        permission = Permission("watch", resource)
        allowed = (await authorizer.check(self.principal, permission, namespace=namespace)).allowed
        self.decided[(resource, namespace)] = allowed
        return allowed

    async def _check(self, namespace: str) -> bool:
        authorizer = self.request.app[keys.AUTHORIZER]
        return (await authorizer.check(self.principal, WATCH, namespace=namespace)).allowed


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Dockyard events of every kind from the event log, and live environment changes."""
    cache = request.app[keys.ENVIRONMENT_CACHE]
    access = _Access(request, request.query.get("namespace"))
    resume = _resume_point(request)
    with request.app[keys.STREAMS].holding(access.principal.user):
        await access.start()
        return await _stream(request, cache, access, resume)


async def _stream(
    request: web.Request, cache: WatchCache, access: _Access, resume: int | None
) -> web.StreamResponse:
    cursor = resume if resume is not None else await _newest(request)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    stream = _Stream(request, response, access, cursor)
    try:
        await stream.send(b": connected\n\n")
        tail = request.app[keys.EVENT_TAIL]
        async with cache.subscribe(maxsize=LIVE_BUFFER) as queue:
            with tail.listening():
                await stream.run(cache, queue)
    except _StoppedReading:
        logger.warning("event stream dropped: the client stopped reading")
    except ConnectionResetError:
        pass  # the client went away
    return response


class _Stream:
    """One client's stream: its cursor in the event log, its deadlines, its writes."""

    def __init__(
        self,
        request: web.Request,
        response: web.StreamResponse,
        access: _Access,
        cursor: int,
    ) -> None:
        self.request = request
        self.response = response
        self.access = access
        self.cursor = cursor
        self.loop = asyncio.get_running_loop()
        self.last_write = self.loop.time()
        self.next_check = self.loop.time() + request.app[keys.SETTINGS].stream_reauth_interval
        # Set when the replay spent this interval's decisions: it waits for the next one.
        self.replay_waits = False

    async def send(self, data: bytes) -> None:
        try:
            async with asyncio.timeout(WRITE_DEADLINE):
                await self.response.write(data)
        except TimeoutError:
            raise _StoppedReading from None
        self.last_write = self.loop.time()

    async def run(self, cache: WatchCache, queue: asyncio.Queue[Change]) -> None:
        interval = self.request.app[keys.SETTINGS].stream_reauth_interval
        tail = self.request.app[keys.EVENT_TAIL]
        while True:
            if self.loop.time() >= self.next_check:
                problem = await self.access.recheck()
                if problem is not None:
                    await self.end(problem)
                    return
                self.next_check = self.loop.time() + interval
                self.replay_waits = False
            if cache.overflowed(queue):
                await self.end(_too_slow())
                return
            if tail.last > self.cursor and not self.replay_waits:
                await self._logged()
            try:
                async with asyncio.timeout(POLL_SECONDS):
                    change = await queue.get()
            except TimeoutError:
                if self.loop.time() - self.last_write >= KEEPALIVE:
                    await self.send(b": keep-alive\n\n")
                continue
            if not await self._live(change):
                return

    async def _live(self, change: Change) -> bool:
        """Send ``change`` if the caller may watch its namespace; False once the stream
        has ended because the apiserver could not say. A live change is not replayed, so
        the client is told (``dependency-unavailable``) rather than left to miss it."""
        try:
            shown = await self.access.allows(change.namespace)
        except REVIEW_FAILURES as exc:
            logger.warning("live change access unknown", extra={"error": type(exc).__name__})
            await self.end(errors.dependency_unavailable("kubernetes"))
            return False
        if shown:
            data = json.dumps({"type": change.type, "object": _public(change.object)})
            # No id: live changes are not replayed; Last-Event-ID keeps the log's.
            await self.send(f"event: {change.type}\ndata: {data}\n\n".encode())
        return True

    async def _logged(self) -> None:
        """Send the logged events after the cursor that the caller may watch, until the
        log is read, the re-check is due, or this interval's decisions are spent."""
        pool = self.request.app[keys.DB_POOL]
        while True:
            try:
                rows = await event_log.after(
                    pool, self.cursor, limit=LOG_BATCH, namespace=self.access.only
                )
            except (DependencyUnavailable, OSError, asyncpg.PostgresError, TimeoutError) as exc:
                # The stream stays; the tail wakes it again once the database answers.
                logger.warning("event log unreadable", extra={"error": type(exc).__name__})
                return
            for row in rows:
                if not self.access.may_decide(row.resource, row.namespace):
                    self.replay_waits = True
                    return
                try:
                    shown = await self.access.may_watch(
                        row.resource, row.namespace
                    ) and await self.access.of_this_namespace(row)
                except REVIEW_FAILURES as exc:
                    # Not shown, not skipped: the replay goes on from here next interval.
                    logger.warning("event access unknown", extra={"error": type(exc).__name__})
                    self.replay_waits = True
                    return
                if shown:
                    data = json.dumps(row.body, separators=(",", ":"))
                    await self.send(f"event: {row.type}\nid: {row.seq}\ndata: {data}\n\n".encode())
                self.cursor = row.seq
            if len(rows) < LOG_BATCH or self.loop.time() >= self.next_check:
                return

    async def end(self, problem: errors.Problem) -> None:
        await _end(self.request, self.response, problem)


def _resume_point(request: web.Request) -> int | None:
    """The log position to resume after: ``Last-Event-ID``, else ``?lastEventId=``. Each
    one given must be an id from this stream."""
    given = [
        (source, value)
        for source, value in (
            ("header.Last-Event-ID", request.headers.get("Last-Event-ID")),
            ("query.lastEventId", request.query.get("lastEventId")),
        )
        if value is not None
    ]
    problems = [
        errors.FieldError(field=source, message="not an event id from this stream")
        for source, value in given
        if not _event_id(value)
    ]
    if problems:
        raise errors.validation_failed(problems)
    return int(given[0][1]) if given else None


def _event_id(value: str) -> bool:
    """Whether ``value`` can be a log seq (a bigint): ASCII digits only, as
    ``str.isdigit`` also takes "²", which ``int`` refuses, and "١٢", which it reads as 12."""
    return value.isascii() and value.isdigit() and len(value) <= 18


async def _newest(request: web.Request) -> int:
    """Where a new stream starts: after the newest logged event."""
    try:
        return await event_log.last_seq(request.app[keys.DB_POOL])
    except (DependencyUnavailable, OSError, asyncpg.PostgresError, TimeoutError):
        return request.app[keys.EVENT_TAIL].last


def _too_slow() -> errors.Problem:
    return errors.STREAM_TOO_SLOW(
        f"The client fell more than {LIVE_BUFFER} changes behind; reconnect with "
        "Last-Event-ID to resume the event log.",
    )


async def _end(request: web.Request, response: web.StreamResponse, problem: errors.Problem) -> None:
    document = problem.document(instance=request.path, request_id=request.get(keys.REQUEST_ID))
    data = json.dumps(document.model_dump(mode="json", exclude_none=True))
    await response.write(f"event: error\ndata: {data}\n\n".encode())
    await response.write_eof()
