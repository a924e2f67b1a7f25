"""The platform database's connection pool: how it is opened, configured and closed.

Both the API and the operator talk to the platform database (audit, catalog, event log,
idempotency) through one ``asyncpg`` pool per process, created at start-up from the
``Settings`` and closed at shutdown. Every connection the pool opens is configured the
same way by :func:`init_connection`, so ``json`` and ``jsonb`` columns read and write
plain Python values everywhere, and is a :class:`TracedConnection`, so every query is a
span of the caller's trace. Nothing here runs at import time.
"""

from __future__ import annotations

import contextvars
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from contextlib import AbstractContextManager, asynccontextmanager, nullcontext
from typing import Any

import asyncpg
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from dockyard.core import telemetry
from dockyard.core.breakers import Breakers, Dependency, is_outage
from dockyard.core.redaction import redact, typed_passwords
from dockyard.core.settings import Settings

# Prepared statements kept per connection; the repositories use a bounded set of
# named queries, so a few hundred is ample.
STATEMENT_CACHE_SIZE = 512
# Idle connections above ``min_size`` are closed after this long, so a burst does not
# hold server connections (each one a backend process) forever.
MAX_INACTIVE_CONNECTION_LIFETIME_SECONDS = 300.0
# asyncpg's default: a connection is replaced after this many queries.
MAX_QUERIES_PER_CONNECTION = 50_000
APPLICATION_NAME = "dockyard"


# PostgreSQL keeps no U+0000 in text or jsonb ("unsupported Unicode escape sequence"):
# a string holding one (an annotation a kubectl user wrote, which the apiserver's report
# of the write carries into an audit row) is stored with this in its place, not lost.
NUL_STAND_IN = "\ufffd"


def storable(value: Any) -> Any:
    """``value`` with U+0000 replaced in every string, keys included."""
    if isinstance(value, str):
        return value.replace("\x00", NUL_STAND_IN)
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def encode_json(value: object) -> str:
    """``value`` as JSON that ``jsonb`` takes: a NUL in a string becomes U+FFFD."""
    text = json.dumps(value)
    # Only a NUL is written as this escape; a text holding a backslash and "u0000"
    # is walked for nothing, and comes out the same.
    return json.dumps(storable(value)) if "\\u0000" in text else text


async def init_connection(conn: asyncpg.Connection) -> None:
    """Decode and encode ``json``/``jsonb`` as Python values on a new connection."""
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=encode_json,
            decoder=json.loads,
            schema="pg_catalog",
            format="text",
        )


# Leading blanks and comments, then the statement's first word. Possessive, so a long
# run of dashes or blanks cannot make the match backtrack through every way to split it.
_FIRST_KEYWORD = re.compile(r"(?:\s|--[^\n]*+|/\*.*?\*/)*+([A-Za-z]+)", re.DOTALL)
# Set while the pool resets a connection, whose queries are then not traced.
_housekeeping = contextvars.ContextVar("dockyard_db_housekeeping", default=False)


def statement_keyword(query: str) -> str:
    """The statement's first keyword (``SELECT``, ``INSERT``, ``WITH``...), upper-cased."""
    match = _FIRST_KEYWORD.match(query)
    return match.group(1).upper() if match else "SQL"


def _traced(name: str) -> Callable[..., Awaitable[Any]]:
    """asyncpg's query method ``name``, run inside a span of the connection's tracer."""
    query_method = getattr(asyncpg.Connection, name)

    async def traced(self: TracedConnection, query: str, *args: Any, **kwargs: Any) -> Any:
        with self._span(query):
            if self.breakers is None or _housekeeping.get():
                return await query_method(self, query, *args, **kwargs)
            async with self.breakers.guard(Dependency.POSTGRES):
                return await query_method(self, query, *args, **kwargs)

    traced.__name__ = traced.__qualname__ = name
    return traced


class TracedConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg has no types
    """A connection whose queries are CLIENT spans, named by the statement's first keyword.

    The span says which kind of statement ran, never its text or parameters: SQL can
    embed values, and parameters are data. ``create_pool`` makes a subclass per pool
    bound to its tracer (asyncpg builds connections itself, so it cannot be passed in).
    The pool's own ``fetch``/``execute``... delegate to these methods.
    """

    tracer: trace.Tracer = trace.NoOpTracer()
    breakers: Breakers | None = None

    def _span(self, query: str) -> AbstractContextManager[Span | None]:
        if _housekeeping.get():
            return nullcontext()
        operation = statement_keyword(query)
        return telemetry.current_span(
            self.tracer,
            operation,
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",  # the older name, still what most backends index
                "db.system.name": "postgresql",
                "db.operation.name": operation,
            },
        )

    execute = _traced("execute")
    executemany = _traced("executemany")
    fetch = _traced("fetch")
    fetchval = _traced("fetchval")
    fetchrow = _traced("fetchrow")
    fetchmany = _traced("fetchmany")

    async def reset(self, *args: Any, **kwargs: Any) -> None:
        # The pool resets each connection it takes back (advisory locks, cursors,
        # RESET ALL): housekeeping, not the caller's work, so not a span of its trace.
        token = _housekeeping.set(True)
        try:
            await super().reset(*args, **kwargs)
        finally:
            _housekeeping.reset(token)


class GuardedPool(asyncpg.pool.Pool):  # type: ignore[misc]  # asyncpg has no types
    """A pool whose acquires wait at most ``acquire_timeout`` seconds and, with
    ``breakers``, count toward PostgreSQL's breaker (and fail at once while it is open).

    ``pool.fetch()`` and the like acquire through :meth:`acquire` too.
    """

    acquire_timeout: float = 1.0
    breakers: Breakers | None = None

    def acquire(self, *, timeout: float | None = None) -> _GuardedAcquire:
        return _GuardedAcquire(self, self.acquire_timeout if timeout is None else timeout)


class _GuardedAcquire:
    """asyncpg's acquire context, inside PostgreSQL's breaker."""

    def __init__(self, pool: GuardedPool, timeout: float) -> None:
        self._inner = asyncpg.pool.Pool.acquire(pool, timeout=timeout)
        self._breakers = pool.breakers

    async def __aenter__(self) -> asyncpg.Connection:
        if self._breakers is None:
            self._connection = await self._inner.__aenter__()
        else:
            async with self._breakers.guard(Dependency.POSTGRES):
                self._connection = await self._inner.__aenter__()
        return self._connection

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if exc is not None and is_outage(exc):
            # The server did not answer in time: the connection's state is unknown, and
            # releasing it would wait (another deadline) for a hung server to confirm the
            # cancel. Close it; the pool opens a fresh one when it is next needed.
            self._connection.terminate()
        await self._inner.__aexit__(exc_type, exc, tb)

    def __await__(self) -> Generator[Any, None, asyncpg.Connection]:
        # ``conn = await pool.acquire()``: the caller releases it with ``pool.release``.
        return self.__aenter__().__await__()


async def create_pool(
    settings: Settings,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    breakers: Breakers | None = None,
) -> asyncpg.Pool:
    """Open the platform database pool described by ``settings``.

    The pool's first ``database_pool_min`` connections are opened before this returns,
    so a wrong DSN or an unreachable server fails at start-up rather than on the first
    request. Queries are spans of ``tracer_provider`` (the global one when unset).
    """
    tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
    traced = type("TracedConnection", (TracedConnection,), {"tracer": tracer, "breakers": breakers})
    guarded = type(
        "GuardedPool",
        (GuardedPool,),
        {"acquire_timeout": settings.database_acquire_timeout, "breakers": breakers},
    )
    dsn = settings.database_dsn()
    try:
        pool: asyncpg.Pool = await guarded(
            dsn,
            min_size=settings.database_pool_min,
            max_size=settings.database_pool_max,
            max_queries=MAX_QUERIES_PER_CONNECTION,
            max_inactive_connection_lifetime=MAX_INACTIVE_CONNECTION_LIFETIME_SECONDS,
            loop=None,
            connection_class=traced,
            record_class=asyncpg.Record,
            init=init_connection,
            # Deadlines (docs/configuration.md): to open a connection, and for one statement.
            timeout=settings.database_connect_timeout,
            command_timeout=settings.database_command_timeout,
            statement_cache_size=STATEMENT_CACHE_SIZE,
            server_settings={"application_name": APPLICATION_NAME},
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnreachable("DOCKYARD_DATABASE_URL", exc, dsn=dsn) from exc
    return pool


class DatabaseUnreachable(Exception):
    """A database did not take a connection: the message names the setting and gives the
    driver's reason (the address it tried, or what the server said), never the DSN: a
    password that is not percent-encoded can land in any part of it."""

    def __init__(self, setting: str, cause: BaseException, *, dsn: str = "") -> None:
        reason = str(cause) or type(cause).__name__
        # A driver may echo a misparsed database name, and with it part of the password.
        reason = redact(reason, *typed_passwords(dsn))
        super().__init__(f"the database of {setting} took no connection: {reason}")


@asynccontextmanager
async def pool_context(
    settings: Settings,
    *,
    tracer_provider: trace.TracerProvider | None = None,
    breakers: Breakers | None = None,
) -> AsyncIterator[asyncpg.Pool]:
    """Yield an open pool and close it on exit, for start-up/cleanup hooks and scripts."""
    pool = await create_pool(settings, tracer_provider=tracer_provider, breakers=breakers)
    try:
        yield pool
    finally:
        await pool.close()
