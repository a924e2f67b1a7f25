"""Each environment's own database and login role on the managed PostgreSQL server.

The Environment reconciler calls :class:`ManagedPostgres` to make sure an environment's
database and role exist with the password held in its Secret (``ensure``), to ask
whether clients are still at work (``active_connections``) and to remove both
(``drop``). This module owns what those objects are called (:func:`database_identity`),
how their passwords are made (:func:`generate_password`) and who may use them: only the
environment's role (and the server's administrators) may connect to its database, and
nobody else may create objects in its ``public`` schema.

Why it looks the way it does:

- Every call opens its own short-lived admin connection. The operator touches this
  server a few times per reconcile, so a pool would only hold backends idle; nothing
  connects at import or construction time.
- Tenants are untrusted (CVE-2018-1058 is the reference). An environment's role owns
  its database, so it can plant functions, views, operators and aggregates there and
  point the database's ``search_path`` at them. The admin therefore only ever connects
  to the maintenance database (the admin DSN's), never into an environment's, with
  ``search_path`` pinned to ``pg_catalog, pg_temp`` in the startup packet (which beats
  any ``ALTER DATABASE/ROLE ... SET``) and every catalog name qualified. What has to
  run inside an environment's database (closing its ``public`` schema) runs logged in
  as the environment's own role (:class:`TenantLogin`).
- The plaintext password never travels in SQL. ``ensure`` computes the SCRAM-SHA-256
  verifier here and sends that, so statement logs, ``pg_stat_statements`` and error
  messages on the server can at most show a salted hash.
- Identifiers come from :func:`database_identity` only, are checked against a strict
  pattern and then quoted, so no caller-supplied text is ever formatted into SQL.
- Failures reach the caller as :class:`ManagedDatabaseError` subclasses whose
  ``reason`` fits a condition and whose ``message`` names no secret.

Requires PostgreSQL 10 or later (SCRAM); ``DROP DATABASE ... WITH (FORCE)`` is used on 13+.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from enum import StrEnum
from urllib.parse import parse_qs, quote, unquote, urlsplit

import asyncpg

from dockyard.operator import crash_points

# PostgreSQL truncates identifiers longer than NAMEDATALEN - 1 bytes, silently: two long
# names could then meet in one object, so names are built to fit instead.
MAX_IDENTIFIER_BYTES = 63
IDENTITY_PREFIX = "env_"
# 12 hex digits = 48 bits of SHA-256: a collision needs millions of environments, and
# the digest covers the exact (namespace, name) pair, not its lossy readable form.
_DIGEST_CHARS = 12
# Room left for the readable "<namespace>_<name>" part, separator included.
_READABLE_BYTES = MAX_IDENTIFIER_BYTES - len(IDENTITY_PREFIX) - 1 - _DIGEST_CHARS
# Environment databases and roles, and the restore (dkr_) and drill (dkd_) databases.
_IDENTITY_PATTERN = re.compile(r"env_[a-z0-9_]{1,59}|dk[rd]_[0-9a-f]{16}(_[0-9]{1,6})?(_old)?")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")

# secrets.token_urlsafe(32) gives 43 characters of [A-Za-z0-9_-]: 256 bits, and safe
# in a URI, an environment variable or a shell without quoting.
_PASSWORD_BYTES = 32
_MAX_PASSWORD_CHARS = 1024
# PostgreSQL's own default for SCRAM verifiers (scram_iterations).
_SCRAM_ITERATIONS = 4096
_SCRAM_SALT_BYTES = 16

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
# PostgreSQL before 13 has no DROP DATABASE ... WITH (FORCE): terminated backends take a
# moment to exit, so the drop is retried briefly.
_DROP_ATTEMPTS = 10
_DROP_RETRY_SECONDS = 0.2


class UnavailableReason(StrEnum):
    """Why the managed server could not be used; each is a condition ``reason``."""

    SERVER_UNREACHABLE = "ServerUnreachable"
    SERVER_NOT_READY = "ServerNotReady"
    TOO_MANY_CONNECTIONS = "TooManyConnections"
    AUTHENTICATION_FAILED = "AuthenticationFailed"
    PERMISSION_DENIED = "PermissionDenied"
    INVALID_CONFIGURATION = "InvalidConfiguration"


# How each failure to use the server reads; the first match wins, so the more specific
# classes come first (TimeoutError is an OSError, every asyncpg error an Exception).
_UNAVAILABLE: tuple[tuple[tuple[type[BaseException], ...], UnavailableReason, str], ...] = (
    (
        (asyncpg.InvalidAuthorizationSpecificationError,),
        UnavailableReason.AUTHENTICATION_FAILED,
        "{where} refused the login",
    ),
    (
        (asyncpg.InsufficientPrivilegeError,),
        UnavailableReason.PERMISSION_DENIED,
        "the admin lacks a privilege on {where}",
    ),
    (
        (asyncpg.TooManyConnectionsError,),
        UnavailableReason.TOO_MANY_CONNECTIONS,
        "{where} has no free connection",
    ),
    (
        (asyncpg.CannotConnectNowError, asyncpg.AdminShutdownError, asyncpg.CrashShutdownError),
        UnavailableReason.SERVER_NOT_READY,
        "{where} is starting or stopping",
    ),
    (
        (asyncpg.ClientConfigurationError,),
        UnavailableReason.INVALID_CONFIGURATION,
        "cannot connect to {where} as configured",
    ),
    ((TimeoutError,), UnavailableReason.SERVER_UNREACHABLE, "{where} did not answer in time"),
    (
        (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError),
        UnavailableReason.SERVER_UNREACHABLE,
        "cannot reach {where}",
    ),
)


class ManagedDatabaseError(Exception):
    """A failure on the managed server; ``reason`` is CamelCase, ``message`` is safe to show."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class DatabaseUnavailable(ManagedDatabaseError):
    """The server is unreachable, not ready, or refuses the admin's credentials or rights."""


class DatabaseOperationFailed(ManagedDatabaseError):
    """The server answered but a statement failed (a concurrent drop, a dependent object)."""


@dataclass(frozen=True)
class DatabaseCredentials:
    """What an environment's workload needs to reach its database: the Secret's content."""

    host: str
    port: int
    database: str
    user: str
    password: str = field(repr=False)

    def uri(self) -> str:
        """``postgresql://user:password@host:port/database``, each part URL-quoted."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user, password = quote(self.user, safe=""), quote(self.password, safe="")
        return f"postgresql://{user}:{password}@{host}:{self.port}/{quote(self.database, safe='')}"

    def secret_data(self) -> dict[str, str]:
        """The Secret's ``stringData``, with the key names most client libraries expect."""
        return {
            "host": self.host,
            "port": str(self.port),
            "database": self.database,
            "username": self.user,
            "password": self.password,
            "uri": self.uri(),
        }


@dataclass(frozen=True)
class TenantLogin:
    """An environment role's login: what the operator connects as inside its databases."""

    user: str
    password: str = field(repr=False)


def database_identity(namespace: str, environment: str) -> tuple[str, str]:
    """The (database, role) names of one environment: ``env_<namespace>_<name>_<digest>``.

    Both are the same identifier (databases and roles live in separate catalogs, and a
    role's default database is the one named after it). The readable part is lowercase
    ``[a-z0-9_]``, shortened fairly between namespace and name to fit 63 bytes; the
    digest is always present because the readable part alone is lossy (``a-b`` and
    ``a_b``, or ``a``+``b-c`` and ``a-b``+``c``, read the same).
    """
    exact = json.dumps([namespace, environment]).encode()
    digest = hashlib.sha256(exact).hexdigest()[:_DIGEST_CHARS]
    ns, env = _fit(_slug(namespace), _slug(environment), _READABLE_BYTES - 1)
    readable = "_".join(part for part in (ns, env) if part)
    name = f"{IDENTITY_PREFIX}{readable}_{digest}" if readable else f"{IDENTITY_PREFIX}{digest}"
    return name, name


def _slug(text: str) -> str:
    return _NOT_SLUG.sub("_", text.lower()).strip("_")


def _fit(first: str, second: str, budget: int) -> tuple[str, str]:
    """Shorten two parts to ``budget`` characters together, the longer one first."""
    if len(first) + len(second) > budget:
        half = budget // 2
        if len(first) <= half:
            second = second[: budget - len(first)]
        elif len(second) <= budget - half:
            first = first[: budget - len(second)]
        else:
            first, second = first[:half], second[: budget - half]
    return first.rstrip("_"), second.rstrip("_")


def generate_password() -> str:
    """A new random password: 43 URL-safe characters from the OS's CSPRNG."""
    return secrets.token_urlsafe(_PASSWORD_BYTES)


def scram_sha256_verifier(password: str, *, salt: bytes | None = None) -> str:
    """The verifier PostgreSQL stores for ``password`` (RFC 5802 / 7677).

    Passwords are limited to printable ASCII, which PostgreSQL's SASLprep leaves
    unchanged, so the verifier computed here is exactly the one the server would compute.
    """
    if not (0 < len(password) <= _MAX_PASSWORD_CHARS and password.isascii()):
        raise ValueError(f"a password must be 1 to {_MAX_PASSWORD_CHARS} ASCII characters")
    if not password.isprintable():
        raise ValueError("a password must not contain control characters")
    salt = secrets.token_bytes(_SCRAM_SALT_BYTES) if salt is None else salt
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, _SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = base64.b64encode
    return (
        f"SCRAM-SHA-256${_SCRAM_ITERATIONS}:{b64(salt).decode()}"
        f"${b64(stored_key).decode()}:{b64(server_key).decode()}"
    )


def _ident(name: str) -> str:
    """``name`` double-quoted, after checking that it is one of this module's identities."""
    if not _IDENTITY_PATTERN.fullmatch(name) or len(name.encode()) > MAX_IDENTIFIER_BYTES:
        raise ValueError("not an environment database identifier")
    return f'"{name}"'


def _literal(text: str) -> str:
    """A standard-conforming SQL string literal (used for SCRAM verifiers only)."""
    if "\\" in text or not text.isascii():
        raise ValueError("refusing to quote backslashes or non-ASCII text")
    return "'" + text.replace("'", "''") + "'"


class ManagedPostgres:
    """The managed PostgreSQL server, seen through its admin DSN."""

    def __init__(
        self, admin_dsn: str, *, public_host: str | None = None, connect_timeout: float = 5.0
    ) -> None:
        host, port, admin_password = _address(admin_dsn)
        self._dsn = admin_dsn
        self._location = f"{host}:{port}"
        self._public_host = public_host or host
        self._port = port
        self._connect_timeout = connect_timeout
        self._admin_secrets = tuple(s for s in (admin_password,) if s)

    def __repr__(self) -> str:  # the DSN carries the admin's password: never show it
        return f"ManagedPostgres({self._location!r}, public_host={self._public_host!r})"

    async def ensure(
        self, *, namespace: str, environment: str, password: str
    ) -> DatabaseCredentials:
        """Create or repair the environment's role and database; its password becomes ``password``.

        Safe to repeat and to race: an existing role gets the new password (so the
        Secret always holds the one that works), an existing database keeps its data.
        """
        verifier = scram_sha256_verifier(password)
        database, role = database_identity(namespace, environment)
        async with self._session(hide=(password,)) as conn:
            await _lock(conn, database)
            await _ensure_role(conn, role, verifier)
            created = await _ensure_database(conn, database, role)
            if created:
                # Still under the lock, so a concurrent drop cannot remove it meanwhile.
                await self.close_public_schema(database, TenantLogin(role, password))
        return DatabaseCredentials(
            host=self._public_host, port=self._port, database=database, user=role, password=password
        )

    async def exists(self, *, namespace: str, environment: str) -> bool:
        """Whether the environment's database exists (its data is what deletion is about)."""
        database, _ = database_identity(namespace, environment)
        async with self._session() as conn:
            found = await conn.fetchval(
                "SELECT true FROM pg_catalog.pg_database WHERE datname = $1", database
            )
        return bool(found)

    async def active_connections(self, *, namespace: str, environment: str) -> int:
        """Client sessions open on the environment's database right now."""
        database, _ = database_identity(namespace, environment)
        async with self._session() as conn:
            count = await conn.fetchval(
                "SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity WHERE datname = $1"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                database,
            )
        return int(count)

    async def drop(self, *, namespace: str, environment: str) -> None:
        """Remove the environment's database and role, ending their sessions; safe to repeat."""
        database, role = database_identity(namespace, environment)
        db, rl = _ident(database), _ident(role)
        async with self._session() as conn:
            await _lock(conn, database)
            force = conn.get_server_version().major >= 13
            for attempt in range(1, _DROP_ATTEMPTS + 1):
                await conn.execute(
                    "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity"
                    " WHERE (datname = $1 OR usename = $2) AND pid <> pg_catalog.pg_backend_pid()",
                    database,
                    role,
                )
                try:
                    await conn.execute(
                        f"DROP DATABASE IF EXISTS {db}{' WITH (FORCE)' if force else ''}"
                    )
                    break
                except asyncpg.ObjectInUseError:
                    if attempt == _DROP_ATTEMPTS:
                        raise
                    await asyncio.sleep(_DROP_RETRY_SECONDS)
            if await conn.fetchval("SELECT true FROM pg_catalog.pg_roles WHERE rolname = $1", role):
                # What the role owns or was granted in the admin database would block
                # DROP ROLE; it belongs to the environment being removed.
                await conn.execute(f"DROP OWNED BY {rl}")
                await conn.execute(f"DROP ROLE IF EXISTS {rl}")

    # -- restore and drill databases -------------------------------------------------------
    #
    # A restore never writes into a live database: it restores into a new one (named by
    # ``staging_database_name``) owned by the environment's role, and switches the names
    # over in one transaction once that succeeded. A drill restores into a scratch
    # database the same way and drops it after its keep window.

    async def database_exists(self, name: str) -> bool:
        """Whether the database ``name`` exists on the server."""
        async with self._session() as conn:
            return bool(
                await conn.fetchval(
                    "SELECT true FROM pg_catalog.pg_database WHERE datname = $1", name
                )
            )

    async def databases_named_like(self, prefix: str) -> list[str]:
        """The databases whose names start with ``prefix`` (a drill's scratch databases)."""
        async with self._session() as conn:
            rows = await conn.fetch(
                "SELECT datname FROM pg_catalog.pg_database"
                " WHERE pg_catalog.starts_with(datname, $1) ORDER BY 1",
                prefix,
            )
        return [str(row["datname"]) for row in rows]

    async def create_database(self, name: str, *, owner: TenantLogin) -> None:
        """A new, empty database ``name`` owned by the role ``owner`` logs in as, closed
        to PUBLIC.

        An existing one is dropped first: a half-restored database left by an
        interrupted run must not be restored into again.
        """
        await self.drop_database(name)
        db, rl = _ident(name), _ident(owner.user)
        async with self._session() as conn:
            await _lock(conn, name)
            await conn.execute(f"CREATE DATABASE {db} OWNER {rl}")
            await conn.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
            await conn.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {rl}")
            await self.close_public_schema(name, owner)

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
                await inside.execute(f"ALTER SCHEMA public OWNER TO {_ident(owner.user)}")

    async def drop_database(self, name: str) -> None:
        """Drop the database ``name``, ending its sessions; nothing when it is absent."""
        db = _ident(name)
        async with self._session() as conn:
            await _lock(conn, name)
            force = conn.get_server_version().major >= 13
            for attempt in range(1, _DROP_ATTEMPTS + 1):
                await _terminate(conn, name)
                try:
                    await conn.execute(
                        f"DROP DATABASE IF EXISTS {db}{' WITH (FORCE)' if force else ''}"
                    )
                    return
                except asyncpg.ObjectInUseError:
                    if attempt == _DROP_ATTEMPTS:
                        raise
                    await asyncio.sleep(_DROP_RETRY_SECONDS)

    async def switch_over(self, *, live: str, staging: str, retired: str) -> None:
        """Make ``staging`` the database called ``live``; the old one becomes ``retired``.

        Both renames run in one transaction, so clients find either the old data or the
        new under ``live``, never neither. Sessions on both databases are ended first
        (a database in use cannot be renamed) and connections to them are refused
        during the switch; applications reconnect to the same name and credentials.
        When ``staging`` is already gone and ``retired`` exists, an earlier call
        completed: nothing is done.
        """
        lv, st, rt = _ident(live), _ident(staging), _ident(retired)
        async with self._session() as conn:
            await _lock(conn, live)
            present = {
                row["datname"]
                for row in await conn.fetch(
                    "SELECT datname FROM pg_catalog.pg_database WHERE datname = ANY($1::text[])",
                    [live, staging, retired],
                )
            }
            if staging not in present:
                if retired in present:
                    return  # switched over before: an interrupted run's second try
                raise DatabaseOperationFailed(
                    "StagingMissing", f"the restored database {staging} does not exist"
                )
            if retired in present:
                raise DatabaseOperationFailed(
                    "RetiredExists", f"database {retired} already exists; drop it first"
                )
            had_live = live in present
            # Refused first and committed, so nobody reconnects between the ending of
            # sessions and the renames; allowed again whatever happens.
            for name in (live, staging) if had_live else (staging,):
                await conn.execute(f"ALTER DATABASE {_ident(name)} ALLOW_CONNECTIONS false")
            crash_points.exit_here(crash_points.SWITCH_OVER_REFUSED)
            try:
                for attempt in range(1, _DROP_ATTEMPTS + 1):
                    await _terminate(conn, live)
                    await _terminate(conn, staging)
                    try:
                        async with conn.transaction():
                            if had_live:
                                await conn.execute(f"ALTER DATABASE {lv} RENAME TO {rt}")
                            await conn.execute(f"ALTER DATABASE {st} RENAME TO {lv}")
                        crash_points.exit_here(crash_points.SWITCH_OVER_RENAMED)
                        return
                    except asyncpg.ObjectInUseError:
                        # A terminated backend had not exited yet: try again shortly.
                        if attempt == _DROP_ATTEMPTS:
                            raise
                        await asyncio.sleep(_DROP_RETRY_SECONDS)
            finally:
                # Under ``live`` now: the restored data, or the old data if the renames
                # failed. The retired database is not for connecting to; it is dropped.
                for name in (live, staging):
                    if await conn.fetchval(
                        "SELECT true FROM pg_catalog.pg_database WHERE datname = $1", name
                    ):
                        await conn.execute(f"ALTER DATABASE {_ident(name)} ALLOW_CONNECTIONS true")

    async def reopen(self, name: str) -> None:
        """Let clients connect to ``name`` again, if it exists.

        A switch-over interrupted after it refused connections (the process died before
        its ``finally``) leaves the live database refusing them; whoever recovers the
        interrupted restore calls this, under the same lock as the switch-over.
        """
        async with self._session() as conn:
            await _lock(conn, name)
            if await _database_exists(conn, name):
                await conn.execute(f"ALTER DATABASE {_ident(name)} ALLOW_CONNECTIONS true")

    async def close(self) -> None:
        """Nothing to release (each call closes its own connection); for cleanup hooks."""

    def _session(
        self, *, hide: Iterable[str] = ()
    ) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """An admin connection to the maintenance database (the DSN's, never a tenant's)."""
        return self._connect(hide=hide)

    def _tenant_session(
        self, database: str, login: TenantLogin
    ) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A connection into ``database`` as the environment role ``login`` names."""
        # Only this module's identities: _ident raises ValueError for anything else.
        _ident(database)
        _ident(login.user)
        return self._connect(
            database=database, user=login.user, password=login.password, hide=(login.password,)
        )

    @asynccontextmanager
    async def _connect(
        self,
        *,
        database: str | None = None,
        user: str | None = None,
        password: str | None = None,
        hide: Iterable[str] = (),
    ) -> AsyncIterator[asyncpg.Connection]:
        """A connection to the server, ``search_path`` pinned, errors made safe to show."""
        try:
            conn: asyncpg.Connection = await asyncpg.connect(
                self._dsn,
                database=database,
                user=user,
                password=password,
                timeout=self._connect_timeout,
                command_timeout=COMMAND_TIMEOUT_SECONDS,
                statement_cache_size=0,  # a handful of one-off statements per connection
                server_settings={
                    "application_name": APPLICATION_NAME,
                    "search_path": SAFE_SEARCH_PATH,
                },
            )
            try:
                yield conn
            except BaseException:
                conn.terminate()  # it may be broken: do not wait on a polite goodbye
                raise
            await conn.close(timeout=self._connect_timeout)
        except ManagedDatabaseError:
            raise
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise self._translate(exc, (*self._admin_secrets, *hide)) from None

    def _translate(self, exc: BaseException, hidden: tuple[str, ...]) -> ManagedDatabaseError:
        where = f"the managed PostgreSQL server at {self._location}"
        # A timeout's text is empty or asyncpg's internals; its class name says enough.
        detail = type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc)
        detail = _redact(detail or type(exc).__name__, hidden)
        for kinds, reason, what in _UNAVAILABLE:
            if isinstance(exc, kinds):
                return DatabaseUnavailable(reason.value, f"{what.format(where=where)}: {detail}")
        sqlstate = getattr(exc, "sqlstate", None) or "?????"
        return DatabaseOperationFailed(
            "OperationFailed", f"a statement failed on {where} (SQLSTATE {sqlstate}): {detail}"
        )


async def _lock(conn: asyncpg.Connection, database: str) -> None:
    """Wait for this environment's advisory lock, so ensure and drop never interleave."""
    # Session-level, so it spans CREATE DATABASE (which refuses to run in a transaction);
    # it is released when the short-lived connection closes.
    await conn.execute(
        "SELECT pg_catalog.pg_advisory_lock($1, pg_catalog.hashtext($2))", _LOCK_CLASS, database
    )


async def _terminate(conn: asyncpg.Connection, database: str) -> None:
    """End every other session on ``database``."""
    await conn.execute(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity"
        " WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()",
        database,
    )


def staging_database_name(kind: str, uid: str, attempt: int = 0) -> str:
    """The database a restore (``kind`` "r") or drill ("d") run restores into.

    Derived from the object's uid, so an interrupted run finds its own database again
    and two objects never share one; short enough for any server.
    """
    if kind not in ("r", "d") or not re.fullmatch(r"[0-9a-f-]{8,36}", uid):
        raise ValueError("staging databases are named from a restore or drill uid")
    suffix = f"_{attempt}" if attempt else ""
    return f"dk{kind}_{uid.replace('-', '')[:16]}{suffix}"


def retired_database_name(uid: str) -> str:
    """What a restore renames the database it replaced to, until it is dropped."""
    return f"{staging_database_name('r', uid)}_old"


async def _ensure_role(conn: asyncpg.Connection, role: str, verifier: str) -> None:
    """The role exists, may log in, and answers to the password behind ``verifier``."""
    rl = _ident(role)
    # Already there, or made this instant by a caller that does not take the lock.
    with suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
        await conn.execute(f"CREATE ROLE {rl} LOGIN")
    await conn.execute(f"ALTER ROLE {rl} WITH LOGIN PASSWORD {_literal(verifier)}")
    if not await conn.fetchval(
        "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER"
    ):
        # A managed service's admin is rarely a superuser: it must be a member of the
        # role to give it a database, hand it schema public and drop it later.
        await conn.execute(f"GRANT {rl} TO CURRENT_USER")


async def _ensure_database(conn: asyncpg.Connection, database: str, role: str) -> bool:
    """The database exists, belongs to ``role``, and nobody else may connect to it;
    whether this call created it."""
    db, rl = _ident(database), _ident(role)
    created = False
    if not await _database_exists(conn, database):
        # A concurrent creator may win; the ALTER below still sets the owner.
        with suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            await conn.execute(f"CREATE DATABASE {db} OWNER {rl}")
            created = True
    await conn.execute(f"ALTER DATABASE {db} OWNER TO {rl}")
    # PUBLIC may connect to (and make temporary tables in) every new database by default.
    await conn.execute(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC")
    await conn.execute(f"GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {rl}")
    # A switch-over that died between refusing connections and allowing them again, for
    # a restore since deleted, would leave the environment locked out for good. Under
    # the lock the switch-over also takes, so never in the middle of one.
    await conn.execute(f"ALTER DATABASE {db} ALLOW_CONNECTIONS true")
    return created


async def _database_exists(conn: asyncpg.Connection, database: str) -> bool:
    found = await conn.fetchval(
        "SELECT true FROM pg_catalog.pg_database WHERE datname = $1",
        database,
    )
    return bool(found)


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


def _redact(text: str, hidden: Iterable[str]) -> str:
    # Belt and braces: neither asyncpg nor PostgreSQL echo passwords, but a message
    # that ever did must not carry one into a status condition or a log.
    for secret in hidden:
        if secret:
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text
