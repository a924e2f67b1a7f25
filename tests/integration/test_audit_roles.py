"""The audit trail cannot be erased by the API's own database role.

Migrations run as the owner (``DOCKYARD_MIGRATION_DATABASE_URL``); the API runs as a
runtime role (``DOCKYARD_DATABASE_URL``) that may only INSERT and SELECT audit rows.
Retention goes through an owner's SECURITY DEFINER function that deletes only rows older
than the retention ``dockyard migrate`` was configured with (migration 0013).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from pytest_aiohttp import AiohttpClient

from dockyard.api.app import create_app
from dockyard.api.audit.repository import AuditLog
from dockyard.testbed.cluster import State
from tests.conftest import ROOT, api_settings

pytestmark = pytest.mark.integration


@pytest.fixture
async def runtime_dsn(testbed_state: State) -> AsyncIterator[str]:
    """A fresh login role with no rights of its own, as an API's runtime role would be."""
    role, password = f"dy_runtime_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin = await asyncpg.connect(testbed_state.database_url)
    await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    parts = urlsplit(testbed_state.database_url)
    netloc = f"{role}:{password}@{parts.hostname}:{parts.port}"
    yield urlunsplit(parts._replace(netloc=netloc))
    await admin.execute(f"DROP OWNED BY {role}")
    await admin.execute(f"DROP ROLE {role}")
    await admin.close()


# The shortest retentions allowed, which the migrations start the floors at: the shared
# test bed's database keeps them, as other suites purge with these.
SHORTEST = {"DOCKYARD_AUDIT_RETENTION_DAYS": "30", "DOCKYARD_EVENT_RETENTION_DAYS": "7"}


def _migrate(
    owner_dsn: str, runtime_dsn: str, retention: dict[str, str] = SHORTEST
) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ["HOME"],
        "DOCKYARD_MIGRATION_DATABASE_URL": owner_dsn,
        "DOCKYARD_DATABASE_URL": runtime_dsn,
        **retention,
    }
    return subprocess.run(
        [sys.executable, "-m", "dockyard.cli", "migrate"],
        env=env, cwd=ROOT, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip


async def test_the_runtime_role_cannot_delete_or_truncate_audit_rows(
    testbed_state: State, runtime_dsn: str
) -> None:
    migrated = _migrate(testbed_state.database_url, runtime_dsn)
    assert migrated.returncode == 0, migrated.stderr
    conn = await asyncpg.connect(runtime_dsn)
    try:
        assert await conn.fetchval("SELECT current_user") == urlsplit(runtime_dsn).username
        marker = f"actor-{uuid.uuid4().hex[:8]}"
        await conn.execute(
            "INSERT INTO audit_events (actor, action, resource, outcome)"
            " VALUES ($1, 'test', 'environments', 'succeeded')",
            marker,
        )
        assert await conn.fetchval("SELECT count(*) FROM audit_events WHERE actor = $1", marker)
        for statement in (
            "DELETE FROM audit_events",
            "TRUNCATE audit_events",
            "UPDATE audit_events SET actor = 'nobody'",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        # The retention function deletes nothing younger than the shortest retention.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetchval("SELECT audit_purge_before(now(), 1000)")
        assert await conn.fetchval("SELECT count(*) FROM audit_events WHERE actor = $1", marker)
        # The event log likewise: its rows go only through retention's function, which
        # refuses anything younger than a week.
        for statement in ("DELETE FROM events", "TRUNCATE events", "UPDATE events SET name = ''"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="7 days"):
            await conn.fetchval("SELECT events_purge_before(now(), 1000)")
        assert (
            await conn.fetchval("SELECT events_purge_before(now() - interval '3650 days', 1)") == 0
        )
        # A spent audit mark stays spent: marks are inserted and read, never updated or
        # deleted but by retention's function, which takes only day-old ones.
        mark = f"dy2-{uuid.uuid4().hex[:24]}-{'0' * 32}"
        await conn.execute("INSERT INTO audit_marks (mark, event_key) VALUES ($1, 'k')", mark)
        for statement in ("DELETE FROM audit_marks", "TRUNCATE audit_marks",
                          "UPDATE audit_marks SET event_key = 'other'"):  # fmt: skip
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
        await conn.fetchval("SELECT audit_marks_purge(1000)")
        assert await conn.fetchval("SELECT event_key FROM audit_marks WHERE mark = $1", mark) == "k"
        # Idempotency keys stay fully writable: claims, completions, releases.
        assert await conn.fetchval(
            "SELECT has_table_privilege('idempotency_keys', 'INSERT, UPDATE, DELETE')"
        )
    finally:
        await conn.close()


async def test_the_api_writes_audit_rows_and_runs_retention_as_the_runtime_role(
    testbed_state: State, runtime_dsn: str, aiohttp_client: AiohttpClient
) -> None:
    assert _migrate(testbed_state.database_url, runtime_dsn).returncode == 0
    admin = await asyncpg.connect(testbed_state.database_url)
    old = f"old-{uuid.uuid4().hex[:8]}"
    await admin.execute(
        "INSERT INTO audit_events (occurred_at, actor, action, resource, outcome)"
        " VALUES (now() - interval '400 days', $1, 'test', 'environments', 'succeeded')",
        old,
    )
    spent, fresh = (f"dy2-{uuid.uuid4().hex[:24]}-{'0' * 32}" for _ in range(2))
    await admin.execute(
        "INSERT INTO audit_marks (mark, event_key, seen_at) VALUES"
        " ($1, 'k', now() - interval '2 days'), ($2, 'k', now())",
        spent,
        fresh,
    )
    settings = api_settings(testbed_state, database_url=runtime_dsn)
    request_id = f"req-{uuid.uuid4().hex[:10]}"
    try:
        # (aiohttp_client closes the app before runtime_dsn drops its role.)
        client = await aiohttp_client(create_app(settings))
        response = await client.get("/api/v1/audit-events", headers={"X-Request-Id": request_id})
        assert response.status == 401
        row = await admin.fetchrow("SELECT actor FROM audit_events WHERE request_id = $1",
                                   request_id)  # fmt: skip
        assert row is not None
        assert row["actor"] == "system:anonymous"
        runtime = await asyncpg.create_pool(runtime_dsn, min_size=1, max_size=1)
        try:
            assert await AuditLog(runtime).purge_older_than(days=365) is not None
        finally:
            await runtime.close()
        assert await admin.fetchval("SELECT count(*) FROM audit_events WHERE actor = $1", old) == 0
        # Retention purges the marks spent more than a day ago, and only those.
        kept = await admin.fetch(
            "SELECT mark FROM audit_marks WHERE mark = any($1::text[])", [spent, fresh]
        )
        assert [r["mark"] for r in kept] == [fresh]
    finally:
        await admin.close()


def _in_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


@pytest.fixture
async def own_database(testbed_state: State, runtime_dsn: str) -> AsyncIterator[str]:
    """A new database of this test's own, dropped before its runtime role is: floors
    written into it touch no other suite's purges."""
    name = f"dockyard_floors_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(testbed_state.database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_the_runtime_role_cannot_purge_what_the_configured_retention_keeps(
    testbed_state: State, runtime_dsn: str, own_database: str
) -> None:
    """A stolen runtime DSN cannot purge audit rows 31 to 89 days old that the default
    90-day retention keeps, nor events within the 30 days the event log keeps."""
    owner_dsn = _in_database(testbed_state.database_url, own_database)
    runtime = _in_database(runtime_dsn, own_database)
    migrated = _migrate(owner_dsn, runtime, retention={})  # the defaults: 90 and 30 days
    assert migrated.returncode == 0, migrated.stderr
    owner = await asyncpg.connect(owner_dsn)
    conn = await asyncpg.connect(runtime)
    try:
        for actor, days in (("kept-45", 45), ("gone-100", 100)):
            await owner.execute(
                "INSERT INTO audit_events (occurred_at, actor, action, resource, outcome)"
                " VALUES (now() - make_interval(days => $2), $1, 'test', 'environments',"
                " 'succeeded')",
                actor,
                days,
            )
        for number, days in ((1, 20), (2, 40)):
            await owner.execute(
                "INSERT INTO events (id, type, resource, namespace, name, occurred_at, body)"
                " VALUES ($1, 'backup.completed', 'backups', 'shop', 'b',"
                " now() - make_interval(days => $2), '{}'::jsonb)",
                f"evt_{number:032d}",
                days,
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="90 days"):
            await conn.fetchval("SELECT audit_purge_before(now() - interval '31 days', 1000)")
        actors = "SELECT actor FROM audit_events ORDER BY actor"
        assert [r["actor"] for r in await owner.fetch(actors)] == ["gone-100", "kept-45"]
        assert await conn.fetchval("SELECT audit_purge_before(now() - interval '91 days', 1000)")
        assert [r["actor"] for r in await owner.fetch(actors)] == ["kept-45"]

        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="30 days"):
            await conn.fetchval("SELECT events_purge_before(now() - interval '8 days', 1000)")
        assert await owner.fetchval("SELECT count(*) FROM events") == 2
        assert await conn.fetchval("SELECT events_purge_before(now() - interval '31 days', 1000)")
        assert [r["id"] for r in await owner.fetch("SELECT id FROM events")] == [f"evt_{1:032d}"]

        # Nor can it lower the floors: it may only read them.
        assert await conn.fetchval("SELECT audit_days FROM retention_floors") == 90
        for statement in (
            "UPDATE retention_floors SET audit_days = 30, event_days = 7",
            "DELETE FROM retention_floors",
            "INSERT INTO retention_floors (only_row, audit_days, event_days)"
            " VALUES (true, 30, 7) ON CONFLICT (only_row) DO NOTHING",
            "TRUNCATE retention_floors",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)
    finally:
        await conn.close()
        await owner.close()
