"""Connections to the managed server: the admin's, pooled, and an environment role's
inside its own databases, short-lived.

The admin's sessions come from a small pool (``pool_size`` connections at most, none
until first use), so a reconcile pass that finds nothing to change opens no new
backend: a steady state costs the server nothing but a query. A pooled connection is
asked ``SELECT 1`` before it is handed out, and one that died with the server (a
restart, a failover) is replaced by a fresh one at once, so an outage that is over
never shows as a failed pass. Tenants are untrusted (CVE-2018-1058 is the reference):
the admin only ever connects to the maintenance database (the admin DSN's), never into
an environment's, with ``search_path`` pinned to ``pg_catalog, pg_temp`` in the
startup packet (which beats any ``ALTER DATABASE/ROLE ... SET``, and survives the
pool's ``RESET ALL``) and every catalog name qualified. What has to run inside an
environment's database runs logged in as the environment's own role
(:class:`TenantLogin`), on a connection of its own, at most ``pool_size`` at once.

The maintenance database and ``template1`` are closed to PUBLIC by the first admin
session (:func:`close_shared_databases`): an environment's role can connect to its own
database only. Otherwise it could connect to the maintenance database and hold another
environment's advisory lock there, or (before PostgreSQL 15) plant objects in
``template1.public`` that every new database copies.

This module also holds the statements the admin's sessions share: the advisory lock
that keeps the passes over one database from interleaving (waited for at most
``LOCK_WAIT_SECONDS``; released when the session goes back to the pool: asyncpg's reset
unlocks every advisory lock), ending its sessions, and dropping it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any, Final
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

from dockyard.operator.database.credentials import TenantLogin
from dockyard.operator.database.errors import (
    DatabaseOperationFailed,
    ManagedDatabaseError,
    translate,
)
from dockyard.operator.database.names import quoted

logger = logging.getLogger(__name__)

APPLICATION_NAME = "dockyard-operator"
# Pinned at connect time, for the admin and for the operator's tenant sessions alike:
# nothing a tenant creates can shadow a catalog function, operator or relation.
SAFE_SEARCH_PATH = "pg_catalog, pg_temp"
DEFAULT_PORT = 5432
# DDL on the admin database is quick, but DROP DATABASE waits for its lock and for the
# backends it terminates; a minute means the server is in trouble, not busy.
COMMAND_TIMEOUT_SECONDS = 60.0
# Advisory-lock class id ("dkyd") so ensure and drop of one environment never
# interleave, whichever operator replica runs them.
_LOCK_CLASS = 0x646B7964
# How long a pass waits for another's lock on a database (a DROP DATABASE may hold it a
# while) before it fails and is retried: never as long as a command may run.
LOCK_WAIT_SECONDS = 30.0
DATABASE_BUSY: Final = "DatabaseBusy"
# Tries of closing the shared databases that another process's REVOKE collides with.
SHARED_REVOKE_ATTEMPTS: Final = 5
# PostgreSQL before 13 has no DROP DATABASE ... WITH (FORCE), and a terminated backend
# takes a moment to exit: statements that need a database unused are retried briefly.
RETRY_ATTEMPTS = 10
RETRY_SECONDS = 0.2
# Admin connections kept at most (and tenant connections open at once): enough for the
# passes of a few environments at a time, far below any server's max_connections.
DEFAULT_POOL_SIZE = 4
# An idle pooled connection is closed after this long: longer than the drift interval,
# so a steady state keeps its connections, short enough to give them back eventually.
IDLE_SECONDS = 600.0
# Errors that mean a pooled connection died with its server, not that the server is out.
_STALE = (asyncpg.ConnectionDoesNotExistError, asyncpg.InterfaceError, ConnectionError)


class AdminSessions:
    """The managed PostgreSQL server, seen through its admin DSN."""

    def __init__(
        self,
        admin_dsn: str,
        *,
        public_host: str | None = None,
        connect_timeout: float = 5.0,
        pool_size: int = DEFAULT_POOL_SIZE,
    ) -> None:
        host, port, admin_password = _address(admin_dsn)
        self._dsn = admin_dsn
        self._location = f"{host}:{port}"
        self._public_host = public_host or host
        self._port = port
        self._sslmode = tenant_sslmode(admin_dsn)
        self._connect_timeout = connect_timeout
        self._admin_secrets = tuple(s for s in (admin_password,) if s)
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._pool_made = asyncio.Lock()
        self._tenant_slots = asyncio.Semaphore(pool_size)
        self._shared_closed = False
        self._closing_shared = asyncio.Lock()

    def __repr__(self) -> str:  # the DSN carries the admin's password: never show it
        return f"{type(self).__name__}({self._location!r}, public_host={self._public_host!r})"

    async def close(self) -> None:
        """Close the admin pool (for cleanup hooks); safe to repeat."""
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def ping(self) -> None:
        """Return once the server answers the admin; ``DatabaseUnavailable`` otherwise.

        Cheap enough to ask before work that needs the server (a pooled connection,
        within the connect timeout), so the work waits for the server instead of failing.
        """
        async with self._session():
            pass  # handing out the session already asked the server SELECT 1

    async def close_public_schema(self, database: str, owner: TenantLogin) -> None:
        """Inside ``database``, logged in as its ``owner``: ``public`` is the owner's and
        closed to everyone else.

        PostgreSQL 15 already makes the database owner own ``public`` and withholds
        CREATE from PUBLIC in new databases; on older servers the schema belongs to the
        bootstrap superuser and the owner cannot change it, which is harmless here:
        nobody but the owner (and administrators) may connect to the database at all.
        """
        async with self._tenant_session(database, owner) as inside:
            owns = await inside.fetchval(
                "SELECT pg_catalog.pg_has_role(n.nspowner, 'USAGE')"
                " FROM pg_catalog.pg_namespace n WHERE n.nspname = 'public'"
            )
            if owns:
                await inside.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
                await inside.execute(f"ALTER SCHEMA public OWNER TO {quoted(owner.user)}")

    @asynccontextmanager
    async def _session(self, *, hide: Iterable[str] = ()) -> AsyncIterator[asyncpg.Connection]:
        """A pooled admin connection to the maintenance database (the DSN's, never a
        tenant's), checked alive before it is handed out."""
        with self._translated(hide):
            pool = await self._admin_pool()
            conn = await self._live(pool)
        try:
            with self._translated(hide):
                await self._close_shared(conn)
                yield conn
        except BaseException:
            conn.terminate()  # it may be broken or mid-statement: never reuse it
            raise
        finally:
            await pool.release(conn)

    async def _close_shared(self, conn: asyncpg.Connection) -> None:
        """Before this server's first admin statement (the operator makes one server
        object): the maintenance database and ``template1`` are closed to PUBLIC
        (:func:`close_shared_databases`)."""
        if self._shared_closed:
            return
        async with self._closing_shared:  # concurrent REVOKEs on one row would collide
            if self._shared_closed:
                return
            still_open = await close_shared_databases(conn)
            if still_open:
                # The admin is neither their owner nor a superuser: say so once, go on.
                logger.warning(
                    "PUBLIC may still connect to database(s) %s on %s, so environment "
                    "roles can too: their owner should REVOKE CONNECT, TEMPORARY ON "
                    "DATABASE ... FROM PUBLIC",
                    ", ".join(still_open),
                    self._location,
                )
            self._shared_closed = True

    async def _admin_pool(self) -> asyncpg.Pool:
        async with self._pool_made:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=self._pool_size,
                    max_inactive_connection_lifetime=IDLE_SECONDS,
                    **self._connect_options(),
                )
            return self._pool

    async def _live(self, pool: asyncpg.Pool) -> asyncpg.Connection:
        """A pooled connection that answers; one that died with its server is replaced."""
        for attempt in (1, 2):
            conn: asyncpg.Connection = await pool.acquire(timeout=self._connect_timeout)
            try:
                await conn.fetchval("SELECT 1", timeout=self._connect_timeout)
            except BaseException as exc:
                conn.terminate()
                await pool.release(conn)
                if attempt == 2 or not isinstance(exc, _STALE):
                    raise
                # The others died with it: connect afresh rather than find out one by one.
                pool.expire_connections()
                continue
            return conn
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect_options(self) -> dict[str, Any]:
        return {
            "timeout": self._connect_timeout,
            "command_timeout": COMMAND_TIMEOUT_SECONDS,
            "statement_cache_size": 0,  # a handful of one-off statements per connection
            "server_settings": {
                "application_name": APPLICATION_NAME,
                "search_path": SAFE_SEARCH_PATH,
            },
        }

    @contextmanager
    def _translated(self, hide: Iterable[str]) -> Iterator[None]:
        """Failures as :class:`ManagedDatabaseError`, naming no secret."""
        try:
            yield
        except ManagedDatabaseError:
            raise
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            where = f"the managed PostgreSQL server at {self._location}"
            raise translate(exc, where, (*self._admin_secrets, *hide)) from None

    def _tenant_session(
        self, database: str, login: TenantLogin
    ) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A connection into ``database`` as the environment role ``login`` names."""
        # Only this package's identities: quoted raises ValueError for anything else.
        quoted(database)
        quoted(login.user)
        return self._connect(
            database=database, user=login.user, password=login.password, hide=(login.password,)
        )

    @asynccontextmanager
    async def _connect(
        self,
        *,
        database: str,
        user: str,
        password: str,
        hide: Iterable[str] = (),
    ) -> AsyncIterator[asyncpg.Connection]:
        """A connection of its own to ``database``, ``search_path`` pinned."""
        async with self._tenant_slots:
            with self._translated(hide):
                conn: asyncpg.Connection = await asyncpg.connect(
                    self._dsn,
                    database=database,
                    user=user,
                    password=password,
                    **self._connect_options(),
                )
            try:
                with self._translated(hide):
                    yield conn
            except BaseException:
                conn.terminate()  # it may be broken: do not wait on a polite goodbye
                raise
            with self._translated(hide):
                await conn.close(timeout=self._connect_timeout)


async def lock(conn: asyncpg.Connection, database: str) -> None:
    """Wait for this database's advisory lock, so ensure, drop and switch-over never
    interleave; ``DatabaseBusy`` after ``LOCK_WAIT_SECONDS``."""
    # Session-level, so it spans CREATE DATABASE (which refuses to run in a transaction);
    # it is released when the session goes back to the pool. lock_timeout bounds the
    # wait for advisory locks too; only this statement's, so DDL waits as before.
    await conn.execute(
        "SELECT pg_catalog.set_config('lock_timeout', $1, false)",
        f"{int(LOCK_WAIT_SECONDS * 1000)}ms",
    )
    try:
        await conn.execute(
            "SELECT pg_catalog.pg_advisory_lock($1, pg_catalog.hashtext($2))",
            _LOCK_CLASS,
            database,
        )
    except asyncpg.LockNotAvailableError:
        raise DatabaseOperationFailed(
            DATABASE_BUSY,
            f"another operation on database {database} held it for over "
            f"{LOCK_WAIT_SECONDS:g}s; it is tried again later",
        ) from None
    await conn.execute("RESET lock_timeout")


async def terminate(conn: asyncpg.Connection, database: str) -> None:
    """End every other session on ``database``."""
    await conn.execute(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity"
        " WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()",
        database,
    )


async def database_exists(conn: asyncpg.Connection, database: str) -> bool:
    found = await conn.fetchval(
        "SELECT true FROM pg_catalog.pg_database WHERE datname = $1",
        database,
    )
    return bool(found)


async def drop_database(
    conn: asyncpg.Connection, database: str, *, role: str | None = None
) -> None:
    """Drop ``database`` if it exists, ending its sessions (and ``role``'s, when given)."""
    force = " WITH (FORCE)" if conn.get_server_version().major >= 13 else ""
    for attempt in range(1, RETRY_ATTEMPTS + 1):
        if await conn.fetchval(
            "SELECT datistemplate FROM pg_catalog.pg_database WHERE datname = $1", database
        ):
            # Its owner (a tenant) may mark it a template, which DROP DATABASE refuses.
            await conn.execute(f"ALTER DATABASE {quoted(database)} IS_TEMPLATE false")
        if role is None:
            await terminate(conn, database)
        else:
            await conn.execute(
                "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity"
                " WHERE (datname = $1 OR usename = $2) AND pid <> pg_catalog.pg_backend_pid()",
                database,
                role,
            )
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {quoted(database)}{force}")
            return
        except asyncpg.ObjectInUseError:
            # A terminated backend had not exited yet: try again shortly.
            if attempt == RETRY_ATTEMPTS:
                raise
            await asyncio.sleep(RETRY_SECONDS)


def tenant_sslmode(dsn: str) -> str | None:
    """The ``sslmode`` the environments' credentials carry: the ``postgresql://`` DSN's
    (see :class:`DatabaseCredentials` for why nothing else is), None if unset, with
    ``verify-ca`` and ``verify-full`` as ``require``. A pod has none of the operator's CA
    files, and would fail to connect at all; ``require`` still refuses plaintext, and
    libpq verifies the server with it as ``verify-ca`` does once the pod mounts a CA at
    ``~/.postgresql/root.crt``."""
    values = parse_qs(urlsplit(dsn).query).get("sslmode")
    if not values:
        return None
    mode = values[-1]  # the last one counts, as in libpq
    return "require" if mode in ("verify-ca", "verify-full") else mode


def _address(dsn: str) -> tuple[str, int, str | None]:
    """(host, port, password) of a ``postgresql://`` DSN's first host, without connecting."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("the managed PostgreSQL DSN must be a postgresql:// URL")
    query = parse_qs(parts.query)
    userinfo, _, hosts = parts.netloc.rpartition("@")
    first = urlsplit("//" + hosts.split(",")[0])
    try:
        port = first.port or int(query.get("port", [DEFAULT_PORT])[0])
    except ValueError:
        raise ValueError("the managed PostgreSQL DSN has an invalid port") from None
    host = first.hostname or query.get("host", ["localhost"])[0]
    _, colon, password = userinfo.partition(":")
    return host, port, unquote(password) if colon else query.get("password", [None])[0]


async def allow_connections(conn: asyncpg.Connection, database: str, allowed: bool) -> None:
    """Let clients connect to ``database``, or refuse them (those connected stay)."""
    value = "true" if allowed else "false"
    await conn.execute(f"ALTER DATABASE {quoted(database)} ALLOW_CONNECTIONS {value}")


async def close_to_public(conn: asyncpg.Connection, database: str, owner: str) -> None:
    """Only ``owner`` (and administrators) may connect to ``database``, or make
    temporary tables in it: PUBLIC may, in every new database, by default."""
    db, rl = quoted(database), quoted(owner)
    await conn.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
    await conn.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {rl}")


async def close_shared_databases(conn: asyncpg.Connection) -> list[str]:
    """PUBLIC may neither connect to nor make temporary tables in the maintenance
    database (this session's) and ``template1``; those still open afterwards.

    PUBLIC may, by default, in every database. Idempotent, and nothing is written when
    both are closed already. The admin keeps its access as a superuser or their owner;
    one that is neither revokes nothing (the server warns) and the names come back.
    """
    query = (
        "SELECT d.datname, pg_catalog.format("
        "'REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', d.datname) AS revoke"
        " FROM pg_catalog.pg_database d"
        " WHERE d.datname IN (pg_catalog.current_database(), 'template1')"
        " AND (pg_catalog.has_database_privilege('public', d.oid, 'CONNECT')"
        " OR pg_catalog.has_database_privilege('public', d.oid, 'TEMPORARY'))"
    )
    # The names are the server's own (the admin DSN's database), not this package's
    # identities: format()'s %I quotes them.
    for attempt in range(1, SHARED_REVOKE_ATTEMPTS + 1):
        try:
            for row in await conn.fetch(query):
                await conn.execute(row["revoke"])
            break
        except asyncpg.InternalServerError:
            # Another operator process revoked on the same row at that instant: the
            # server refuses the second update of a catalog row ("tuple concurrently
            # updated", XX000). Look again: the other may have closed it already.
            if attempt == SHARED_REVOKE_ATTEMPTS:
                raise
            await asyncio.sleep(0.05 * attempt)
    return [str(row["datname"]) for row in await conn.fetch(query)]
