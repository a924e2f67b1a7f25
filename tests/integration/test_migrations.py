"""The migration runner and the platform schema against a real PostgreSQL.

Each test gets a database of its own, created through ``platform_dsn`` (provided by the
test bed) and dropped afterwards, so no test sees another's tables.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from pydantic import SecretStr

from dockyard.core import db, migrations
from dockyard.core.migrations import (
    MigrationChecksumMismatch,
    MigrationFileMissing,
    MigrationOutOfOrder,
    MigrationState,
    migrate,
    status,
)
from dockyard.core.settings import Settings

pytestmark = pytest.mark.integration

PLATFORM_TABLES = {"audit_events", "idempotency_keys", "events"}


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


async def _admin_execute(platform_dsn: str, statement: str) -> None:
    conn = await asyncpg.connect(platform_dsn)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
async def database_dsn(platform_dsn: str) -> AsyncIterator[str]:
    """The DSN of a new, empty database, dropped when the test ends."""
    name = f"dockyard_migrations_{uuid.uuid4().hex[:12]}"
    await _admin_execute(platform_dsn, f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(platform_dsn, name)
    finally:
        await _admin_execute(platform_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def conn(database_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_dsn)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    """A copy of the shipped migrations that a test may add to or edit."""
    copy = tmp_path / "migrations"
    shutil.copytree(migrations.DEFAULT_DIRECTORY, copy)
    return copy


def _shipped_versions() -> list[int]:
    return [migration.version for migration in migrations.discover()]


async def _recorded(conn: asyncpg.Connection) -> list[tuple[int, str, str]]:
    rows = await conn.fetch(
        f"SELECT version, name, checksum FROM {migrations.TABLE} ORDER BY version"
    )
    return [(row["version"], row["name"], row["checksum"]) for row in rows]


async def _tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
    )
    return {row["table_name"] for row in rows}


async def _schema_snapshot(conn: asyncpg.Connection) -> list[tuple[str, ...]]:
    columns = await conn.fetch(
        """
        SELECT table_name, column_name, data_type, is_nullable, column_default
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY table_name, ordinal_position
        """
    )
    indexes = await conn.fetch(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1"
    )
    return [tuple(str(value) for value in row.values()) for row in [*columns, *indexes]]


async def test_first_run_applies_every_migration_and_creates_the_platform_tables(
    conn: asyncpg.Connection,
) -> None:
    applied = await migrate(conn)

    assert [migration.version for migration in applied] == _shipped_versions()
    assert await _tables(conn) >= PLATFORM_TABLES | {migrations.TABLE}
    assert await _recorded(conn) == [
        (migration.version, migration.name, migration.checksum)
        for migration in migrations.discover()
    ]


async def test_second_run_applies_nothing_and_changes_nothing(
    conn: asyncpg.Connection,
) -> None:
    await migrate(conn)
    schema_before = await _schema_snapshot(conn)
    rows_before = await conn.fetch(f"SELECT * FROM {migrations.TABLE} ORDER BY version")

    applied = await migrate(conn)

    assert applied == []
    assert await _schema_snapshot(conn) == schema_before
    assert await conn.fetch(f"SELECT * FROM {migrations.TABLE} ORDER BY version") == rows_before


async def test_an_edited_applied_migration_raises_and_applies_nothing_further(
    conn: asyncpg.Connection, directory: Path
) -> None:
    await migrate(conn, directory=directory)
    recorded_before = await _recorded(conn)
    edited = directory / "0001_platform_schema.sql"
    original_checksum = migrations.checksum(edited.read_bytes())
    edited.write_text(edited.read_text() + "\nCREATE TABLE sneaky (id int);\n")
    (directory / f"{len(recorded_before) + 1:04d}_later.sql").write_text(
        "CREATE TABLE later (id int);\n"
    )

    with pytest.raises(MigrationChecksumMismatch) as raised:
        await migrate(conn, directory=directory)

    message = str(raised.value)
    assert "0001_platform_schema.sql" in message
    assert original_checksum in message
    assert migrations.checksum(edited.read_bytes()) in message
    assert await _recorded(conn) == recorded_before
    assert {"sneaky", "later"}.isdisjoint(await _tables(conn))


async def test_concurrent_runs_apply_each_migration_exactly_once(
    database_dsn: str, directory: Path
) -> None:
    # A slow migration keeps the first runner busy while the others queue on the lock.
    next_version = len(_shipped_versions()) + 1
    (directory / f"{next_version:04d}_slow_probe.sql").write_text(
        "SELECT pg_sleep(0.5);\nCREATE TABLE slow_probe (id int);\n"
    )
    settings = Settings(database_url=SecretStr(database_dsn), database_pool_max=4)

    async with db.pool_context(settings) as pool:
        results = await asyncio.gather(*(migrate(pool, directory=directory) for _ in range(4)))
        async with pool.acquire() as conn:
            recorded = await _recorded(conn)

    applied_versions = sorted(m.version for result in results for m in result)
    assert applied_versions == [*_shipped_versions(), next_version]
    assert sorted(len(result) for result in results) == [0, 0, 0, next_version]
    assert [version for version, _, _ in recorded] == applied_versions


async def test_a_failing_migration_leaves_neither_its_changes_nor_its_record(
    conn: asyncpg.Connection, directory: Path
) -> None:
    next_version = len(_shipped_versions()) + 1
    (directory / f"{next_version:04d}_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nSELECT 1 / 0;\n"
    )

    with pytest.raises(asyncpg.DivisionByZeroError):
        await migrate(conn, directory=directory)

    assert [version for version, _, _ in await _recorded(conn)] == _shipped_versions()
    assert "half_done" not in await _tables(conn)


async def test_an_applied_migration_without_its_file_raises(
    conn: asyncpg.Connection, directory: Path
) -> None:
    next_version = len(_shipped_versions()) + 1
    extra = directory / f"{next_version:04d}_removed_later.sql"
    extra.write_text("CREATE TABLE removed_later (id int);\n")
    await migrate(conn, directory=directory)
    extra.unlink()

    with pytest.raises(MigrationFileMissing, match=re.escape(extra.name)):
        await migrate(conn, directory=directory)


async def test_a_pending_migration_older_than_the_newest_applied_raises(
    conn: asyncpg.Connection, directory: Path
) -> None:
    gap = len(_shipped_versions()) + 1
    (directory / f"{gap + 1:04d}_newer.sql").write_text("CREATE TABLE newer (id int);\n")
    await migrate(conn, directory=directory)
    (directory / f"{gap:04d}_older.sql").write_text("CREATE TABLE older (id int);\n")

    with pytest.raises(MigrationOutOfOrder, match=re.escape(f"{gap:04d}_older.sql")):
        await migrate(conn, directory=directory)

    assert "older" not in await _tables(conn)


async def test_status_lists_applied_and_pending_migrations(
    conn: asyncpg.Connection, directory: Path
) -> None:
    before = await status(conn, directory=directory)
    await migrate(conn, directory=directory)
    next_version = len(_shipped_versions()) + 1
    (directory / f"{next_version:04d}_not_yet.sql").write_text("SELECT 1;\n")

    after = await status(conn, directory=directory)

    assert [line.state for line in before] == [MigrationState.PENDING] * len(before)
    assert [(line.version, line.state) for line in after] == [
        *((version, MigrationState.APPLIED) for version in _shipped_versions()),
        (next_version, MigrationState.PENDING),
    ]
    assert after[-1].applied_at is None
    assert all(line.applied_at is not None for line in after[:-1])


async def test_status_on_a_fresh_database_creates_nothing(conn: asyncpg.Connection) -> None:
    await status(conn)

    assert migrations.TABLE not in await _tables(conn)


async def test_pool_reads_and_writes_jsonb_as_python_values(database_dsn: str) -> None:
    payload = {"kind": "Environment", "name": "shop", "replicas": 2, "labels": ["a", "b"]}
    settings = Settings(database_url=SecretStr(database_dsn))

    async with db.pool_context(settings) as pool:
        await migrate(pool)
        stored = await pool.fetchval(
            "INSERT INTO events (id, type, resource, namespace, name, body)"
            " VALUES ($1, 'backup.completed', 'backups', 'shop', 'b1', $2) RETURNING body",
            "evt_" + "0" * 32,
            payload,
        )

    assert stored == payload


async def test_audit_events_cannot_be_updated(conn: asyncpg.Connection) -> None:
    await migrate(conn)
    event_id = await conn.fetchval(
        """
        INSERT INTO audit_events (actor, action, resource, namespace, name, outcome)
        VALUES ('alice', 'create', 'environments', 'shop', 'staging', 'success')
        RETURNING id
        """
    )

    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await conn.execute("UPDATE audit_events SET actor = 'mallory' WHERE id = $1", event_id)
