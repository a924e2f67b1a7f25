"""Table manifests: exact per-table row counts, read from the very snapshot a dump reads.

A backup's manifest is the drill's yardstick (after a restore, every table must hold
the rows the manifest says), so it has to describe the dump exactly, not the database
a moment earlier or later. :func:`exported_snapshot` opens a ``REPEATABLE READ, READ
ONLY`` transaction and exports its snapshot with ``pg_export_snapshot()``; the runner
hands the id to ``pg_dump --snapshot`` and counts rows on this same transaction while
the dump runs, keeping the transaction open until ``pg_dump`` is done.

Which tables: ordinary tables (``relkind 'r'``, leaf partitions included) outside the
system schemas that no extension owns: exactly those whose rows ``pg_dump`` writes.
Partitioned parents are left out because their rows are their partitions'. Names are
``schema.table`` as PostgreSQL's ``format('%I.%I')`` quotes them (``public.orders``,
``"Sales"."Q1"``), so they are unambiguous and usable in SQL as they are.

:func:`table_counts` gives the same figures for any database (a drill's restored
copy), and :func:`user_relations` says whether a restore target is empty.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg

from dockyard.core.models.backup import MANIFEST_MAX_TABLES
from dockyard.core.redaction import redact
from dockyard.runner.errors import DatabaseError, TooManyTables
from dockyard.runner.libpq import tool_connection

APPLICATION_NAME = "dockyard-backup"
CONNECT_TIMEOUT_SECONDS = 10.0
# Pinned in the startup packet, which beats ALTER DATABASE/ROLE ... SET search_path.
SAFE_SEARCH_PATH = "pg_catalog, pg_temp"
# One table's exact count may take long on a big table, but not forever: a lock or a
# planted slow function must fail the run instead of holding it (and pg_dump) open.
COUNT_TIMEOUT_MS = 15 * 60 * 1000

# User relations of the given kinds: outside the system schemas, owned by no extension.
# Every name is schema-qualified, and connect() pins search_path to pg_catalog first:
# the database's owner may have planted a view, function or aggregate of the same name.
RELATIONS_OF_KINDS = """
SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS name
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind::text = ANY($1::text[])
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (
      SELECT 1 FROM pg_catalog.pg_depend d
      WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
        AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1
"""
TABLE_KINDS = ["r"]
RELATION_KINDS = ["r", "p", "v", "m", "S", "f"]


@dataclass(frozen=True)
class SnapshotSession:
    """An open transaction whose snapshot ``pg_dump --snapshot`` can share."""

    connection: asyncpg.Connection
    snapshot_id: str
    server_version: str


@asynccontextmanager
async def connect(
    dsn: str, *, search_path: str | None = SAFE_SEARCH_PATH
) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for the runner, with errors that name no secret.

    ``search_path`` is pinned for the runner's own queries; ``None`` leaves the
    database's default, for SQL a person wrote against it (a drill's checks).
    """
    where = _where(dsn)
    password = tool_connection(dsn, application_name=APPLICATION_NAME).password
    settings = {
        "application_name": APPLICATION_NAME,
        # The snapshot transaction sits idle while pg_dump works: a server-wide
        # idle timeout must not end it, nor a statement timeout the counts.
        "idle_in_transaction_session_timeout": "0",
        "statement_timeout": "0",
    }
    if search_path is not None:
        settings["search_path"] = search_path
    try:
        conn: asyncpg.Connection = await asyncpg.connect(
            dsn,
            timeout=CONNECT_TIMEOUT_SECONDS,
            statement_cache_size=0,
            server_settings=settings,
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DatabaseError(f"cannot connect to {where}: {_detail(exc, password)}") from None
    try:
        yield conn
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        conn.terminate()
        raise DatabaseError(f"a query failed on {where}: {_detail(exc, password)}") from None
    except BaseException:
        conn.terminate()  # possibly mid-query: do not wait for a polite goodbye
        raise
    await conn.close(timeout=CONNECT_TIMEOUT_SECONDS)


@asynccontextmanager
async def exported_snapshot(dsn: str) -> AsyncIterator[SnapshotSession]:
    """A read-only repeatable-read transaction and its exported snapshot id."""
    async with connect(dsn) as conn:
        transaction = conn.transaction(isolation="repeatable_read", readonly=True)
        await transaction.start()
        snapshot_id = await conn.fetchval("SELECT pg_export_snapshot()")
        version = await conn.fetchval("SHOW server_version")
        yield SnapshotSession(conn, str(snapshot_id), str(version).split()[0])
        # Read only: nothing to keep. On an error, connect() terminates the session
        # instead, which ends the transaction without masking the error.
        await transaction.rollback()


async def check_table_count(conn: asyncpg.Connection) -> None:
    """``TooManyTables`` when the database holds more user tables than a manifest records
    (``MANIFEST_MAX_TABLES``, what a Backup's status holds within the apiserver's object
    size limit)."""
    query = f"SELECT pg_catalog.count(*) FROM ({RELATIONS_OF_KINDS}) AS relations"  # nosec B608
    tables = int(await conn.fetchval(query, TABLE_KINDS))
    if tables > MANIFEST_MAX_TABLES:
        raise TooManyTables(
            f"the database holds {tables} tables; a backup's manifest records at most "
            f"{MANIFEST_MAX_TABLES}"
        )


async def count_rows(conn: asyncpg.Connection) -> dict[str, int]:
    """Exact row count of every user table, in the connection's current snapshot (a
    transaction: the statement timeout set for the counts ends with it)."""
    counts: dict[str, int] = {}
    # LOCAL: back to no timeout when the transaction ends (the snapshot's stays idle).
    await conn.execute(
        "SELECT pg_catalog.set_config('statement_timeout', $1, true)", str(COUNT_TIMEOUT_MS)
    )
    for row in await conn.fetch(RELATIONS_OF_KINDS, TABLE_KINDS):
        name = row["name"]
        # The name comes from the catalog, quoted by format('%I.%I') on the server.
        query = f"SELECT pg_catalog.count(*) FROM {name}"  # nosec B608
        counts[name] = int(await conn.fetchval(query))
    return counts


async def table_counts(dsn: str) -> dict[str, int]:
    """Exact row count of every user table of the database ``dsn`` names, one snapshot."""
    async with connect(dsn) as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        return await count_rows(conn)


async def user_relations(dsn: str) -> list[str]:
    """Tables, views, sequences and foreign tables a user made in the database (not empty)."""
    async with connect(dsn) as conn:
        return [row["name"] for row in await conn.fetch(RELATIONS_OF_KINDS, RELATION_KINDS)]


def _where(dsn: str) -> str:
    """``database "x" at host:port``, for messages (no user, no password)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2] or "localhost"
    database = tool_connection(dsn, application_name=APPLICATION_NAME).database
    return f'database "{database}" at {host}'


def _detail(exc: BaseException, password: str | None) -> str:
    text = type(exc).__name__ if isinstance(exc, TimeoutError) else str(exc)
    return redact(text or type(exc).__name__, password)
