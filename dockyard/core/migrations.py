"""Versioned schema migrations of the platform database, and the runner that applies them.

The schema lives in ``dockyard/core/migrations/NNNN_description.sql``, shipped with the
package. :func:`migrate` applies the files not yet recorded in
``dockyard_schema_migrations``, in version order, each in its own transaction together
with its bookkeeping row, so a failing migration leaves neither half-applied DDL nor a
row claiming it ran.

Why the rules are strict:

- A session-level advisory lock serialises runners, so several replicas starting at
  once (or an init container racing a developer) apply every migration exactly once.
- Every applied file's SHA-256 is recorded and checked on each run: editing a migration
  that already ran somewhere would make databases silently diverge, so the runner
  refuses to apply anything until the edit is reverted (write a new migration instead).
- A pending version below the newest applied one, or an applied version whose file is
  gone, means the history in the repository no longer matches the database; both stop
  the run before any change.

A migration runs inside a transaction, so statements that refuse one (``CREATE INDEX
CONCURRENTLY``, ``VACUUM``) do not belong in these files.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TypeAlias

import asyncpg

logger = logging.getLogger(__name__)

DEFAULT_DIRECTORY = Path(__file__).with_name("migrations")
TABLE = "dockyard_schema_migrations"
# Fixed key of the advisory lock that serialises runners: "dockyard" in ASCII.
LOCK_KEY = int.from_bytes(b"dockyard", "big")

_FILENAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9]+(?:_[a-z0-9]+)*)\.sql$")

_CREATE_TABLE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
_SELECT_APPLIED = (
    "SELECT version, name, checksum, applied_at FROM dockyard_schema_migrations ORDER BY version"
)
_INSERT_APPLIED = """
INSERT INTO dockyard_schema_migrations (version, name, checksum) VALUES ($1, $2, $3)
RETURNING applied_at
"""

Target: TypeAlias = asyncpg.Connection | asyncpg.Pool
"""What the runner accepts: a connection, or a pool it borrows one connection from."""


class MigrationError(Exception):
    """The migrations in the repository and the database cannot be reconciled."""


class MalformedMigrationName(MigrationError):
    """A ``.sql`` file in the migrations directory is not named ``NNNN_description.sql``."""


class DuplicateMigrationVersion(MigrationError):
    """Two files in the migrations directory carry the same version number."""


class MigrationChecksumMismatch(MigrationError):
    """A migration already applied to the database has been edited since."""


class MigrationFileMissing(MigrationError):
    """The database records a migration whose file is no longer in the directory."""


class MigrationOutOfOrder(MigrationError):
    """A pending migration's version is lower than one the database already applied."""


@dataclass(frozen=True, slots=True)
class MigrationFile:
    """One migration file, read from disk: its version, name, SQL and checksum."""

    version: int
    name: str
    path: Path
    sql: str
    checksum: str


@dataclass(frozen=True, slots=True)
class AppliedMigration:
    """A row of ``dockyard_schema_migrations``: a migration the database has applied."""

    version: int
    name: str
    checksum: str
    applied_at: datetime


class MigrationState(StrEnum):
    """Where a migration stands between the repository and the database."""

    APPLIED = "applied"
    PENDING = "pending"
    CHANGED = "changed"
    """Applied, but its file has been edited since (checksum differs)."""
    MISSING = "missing"
    """Applied, but its file is no longer in the directory."""


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """One line of :func:`status`: a version, its name and where it stands."""

    version: int
    name: str
    state: MigrationState
    applied_at: datetime | None


def parse_filename(filename: str) -> tuple[int, str]:
    """The ``(version, name)`` of a file named ``NNNN_description.sql``.

    Raises :class:`MalformedMigrationName` for anything else, including version 0.
    """
    match = _FILENAME.fullmatch(filename)
    if match is None or int(match["version"]) == 0:
        raise MalformedMigrationName(
            f"migration file {filename!r} is not named NNNN_description.sql "
            "(four digits from 0001, an underscore, lowercase words joined by underscores)"
        )
    return int(match["version"]), match["name"]


def checksum(content: bytes) -> str:
    """The SHA-256 of a migration file's bytes, hex-encoded, as recorded when applied."""
    return hashlib.sha256(content).hexdigest()


def discover(directory: Path | None = None) -> list[MigrationFile]:
    """Every migration in ``directory`` (the shipped ones by default), by version.

    Files not ending in ``.sql`` are ignored; a ``.sql`` file with a malformed name or a
    version used twice raises.
    """
    root = DEFAULT_DIRECTORY if directory is None else directory
    found: dict[int, MigrationFile] = {}
    for path in sorted(root.iterdir()):
        if not path.is_file() or path.suffix != ".sql":
            continue
        version, name = parse_filename(path.name)
        if version in found:
            raise DuplicateMigrationVersion(
                f"migration version {version:04d} is used by both "
                f"{found[version].path.name} and {path.name}"
            )
        content = path.read_bytes()
        found[version] = MigrationFile(
            version=version,
            name=name,
            path=path,
            sql=content.decode("utf-8"),
            checksum=checksum(content),
        )
    return [found[version] for version in sorted(found)]


async def migrate(target: Target, *, directory: Path | None = None) -> list[AppliedMigration]:
    """Apply the pending migrations, in order; return those this call applied.

    Safe to run from several processes at once and to run again (a no-op returning
    ``[]``). Everything is checked before anything is applied: a changed or missing
    applied migration, or a pending one older than the newest applied, raises a
    :class:`MigrationError` and leaves the database as it was.

    Waiting for another runner's lock and each migration are subject to the
    connection's ``command_timeout``: run long migrations on a connection opened for
    the purpose rather than through the request-serving pool.
    """
    files = await asyncio.to_thread(discover, directory)
    async with _connection(target) as conn, _advisory_lock(conn):
        await conn.execute(_CREATE_TABLE)
        applied = await _applied(conn)
        pending = _plan(files, applied)
        done: list[AppliedMigration] = []
        for migration in pending:
            done.append(await _apply(conn, migration))
        return done


# What the API's runtime role may do: everything it needs on every table, except that
# the audit trail (its marks too) and the event log are insert-and-read only and the
# migration history and the retention floors read only. Revoked
# first, so a run also takes back what an earlier grant or a hand gave.
_RUNTIME_GRANTS = (
    "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}",
    "GRANT USAGE ON SCHEMA public TO {role}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    "REVOKE UPDATE, DELETE ON audit_events, audit_marks, events, retention_floors,"
    f" {TABLE} FROM {{role}}",
    f"REVOKE INSERT ON retention_floors, {TABLE} FROM {{role}}",
    "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
    "GRANT EXECUTE ON FUNCTION audit_purge_before(timestamptz, integer) TO {role}",
    "GRANT EXECUTE ON FUNCTION events_purge_before(timestamptz, integer) TO {role}",
    "GRANT EXECUTE ON FUNCTION audit_marks_purge(integer) TO {role}",
)


async def grant_runtime(target: Target, role: str) -> None:
    """Give the API's runtime ``role`` its rights on the migrated tables, and no more.

    Run as the owner of the tables (the migration role), after :func:`migrate`. The
    runtime role may connect (PUBLIC may not: migration 0011) and INSERT and SELECT
    ``audit_events`` but not UPDATE, DELETE or TRUNCATE it; retention deletes through
    ``audit_purge_before`` (migration 0003), and likewise from the event log through
    ``events_purge_before`` (migration 0007) and from the spent audit marks through
    ``audit_marks_purge`` (migration 0010). It may read ``retention_floors`` (migration
    0013, :func:`set_retention_floors`), not write it.
    """
    quoted = _quoted(role)
    async with _connection(target) as conn, conn.transaction():
        database = _quoted(await conn.fetchval("SELECT current_database()"))
        await conn.execute(f"GRANT CONNECT ON DATABASE {database} TO {quoted}")
        for statement in _RUNTIME_GRANTS:
            await conn.execute(statement.format(role=quoted))


_SET_RETENTION_FLOORS = """
INSERT INTO retention_floors (only_row, audit_days, event_days) VALUES (true, $1, $2)
ON CONFLICT (only_row) DO UPDATE
SET audit_days = excluded.audit_days, event_days = excluded.event_days, updated_at = now()
"""


async def set_retention_floors(target: Target, *, audit_days: int, event_days: int) -> None:
    """Make the retention functions refuse to purge audit events younger than
    ``audit_days`` and events younger than ``event_days`` (migration 0013).

    Run as the owner, after :func:`migrate`, with the retentions the API and the
    operator purge with (``DOCKYARD_AUDIT_RETENTION_DAYS``,
    ``DOCKYARD_EVENT_RETENTION_DAYS``): the runtime role may only read the floors, so a
    stolen runtime DSN purges nothing that retention keeps. A floor above the retention
    a process purges with makes its purges fail until the two agree.
    """
    async with _connection(target) as conn:
        await conn.execute(_SET_RETENTION_FLOORS, audit_days, event_days)


async def status(target: Target, *, directory: Path | None = None) -> list[MigrationStatus]:
    """Every migration known to the repository or the database, by version, with its state.

    Read-only: it neither creates the bookkeeping table nor takes the lock, so it can
    be run against a database that has never been migrated.
    """
    files = await asyncio.to_thread(discover, directory)
    async with _connection(target) as conn:
        exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", TABLE)
        applied = await _applied(conn) if exists else {}
    lines = [_status_line(file, applied.pop(file.version, None)) for file in files]
    # What is left was applied from files that are no longer in the directory.
    lines += [
        MigrationStatus(row.version, row.name, MigrationState.MISSING, row.applied_at)
        for row in applied.values()
    ]
    return sorted(lines, key=lambda line: line.version)


def _status_line(file: MigrationFile, row: AppliedMigration | None) -> MigrationStatus:
    if row is None:
        return MigrationStatus(file.version, file.name, MigrationState.PENDING, None)
    state = MigrationState.APPLIED if file.checksum == row.checksum else MigrationState.CHANGED
    return MigrationStatus(file.version, file.name, state, row.applied_at)


def _plan(
    files: Sequence[MigrationFile], applied: dict[int, AppliedMigration]
) -> list[MigrationFile]:
    """The migrations to apply, after checking the applied ones against their files."""
    by_version = {migration.version: migration for migration in files}
    for version, row in applied.items():
        file = by_version.get(version)
        if file is None:
            raise MigrationFileMissing(
                f"migration {version:04d}_{row.name}.sql is recorded as applied on "
                f"{row.applied_at.isoformat()} but no file with version {version:04d} exists"
            )
        if file.checksum != row.checksum:
            raise MigrationChecksumMismatch(
                f"migration {file.path.name} was changed after it was applied: "
                f"recorded checksum {row.checksum}, file checksum {file.checksum}; "
                "restore the original file and put the change in a new migration"
            )
    pending = [migration for migration in files if migration.version not in applied]
    newest = max(applied, default=0)
    if pending and pending[0].version < newest:
        raise MigrationOutOfOrder(
            f"migration {pending[0].path.name} is pending but version {newest:04d} is "
            "already applied; renumber it after the newest applied migration"
        )
    return pending


async def _apply(conn: asyncpg.Connection, migration: MigrationFile) -> AppliedMigration:
    """Run one migration and record it, in a single transaction."""
    async with conn.transaction():
        await conn.execute(migration.sql)
        applied_at: datetime = await conn.fetchval(
            _INSERT_APPLIED, migration.version, migration.name, migration.checksum
        )
    logger.info(
        "applied migration %s",
        migration.path.name,
        extra={"migration_version": migration.version, "migration_checksum": migration.checksum},
    )
    return AppliedMigration(migration.version, migration.name, migration.checksum, applied_at)


async def _applied(conn: asyncpg.Connection) -> dict[int, AppliedMigration]:
    rows = await conn.fetch(_SELECT_APPLIED)
    return {
        row["version"]: AppliedMigration(
            row["version"], row["name"], row["checksum"], row["applied_at"]
        )
        for row in rows
    }


@asynccontextmanager
async def _connection(target: Target) -> AsyncIterator[asyncpg.Connection]:
    if isinstance(target, asyncpg.Pool):
        async with target.acquire() as conn:
            yield conn
    else:
        yield target


@asynccontextmanager
async def _advisory_lock(conn: asyncpg.Connection) -> AsyncIterator[None]:
    # Session-level rather than per transaction: the checks and every migration's own
    # transaction must all happen under one lock. A pooled connection released while
    # holding it is still safe: asyncpg's reset query unlocks all advisory locks.
    await conn.execute("SELECT pg_advisory_lock($1)", LOCK_KEY)
    try:
        yield
    finally:
        # A closed connection has already released its locks; unlocking it would only
        # hide the error that closed it.
        if not conn.is_closed():
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'
