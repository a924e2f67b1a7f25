"""Fixtures and helpers shared by the backup tests (imported by them, not a conftest).

Databases are real environment databases on the test bed's PostgreSQL, made by
``ManagedPostgres`` exactly as the operator makes them (a non-superuser role that owns
its database), so backups and restores run with the privileges they have in
production. Each is named with a fresh uuid and dropped when its scope ends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from dockyard.operator.database import DatabaseCredentials, ManagedPostgres, generate_password
from dockyard.testbed.cluster import State

NewDatabase = Callable[[], Awaitable[DatabaseCredentials]]

# Several tables, odd names, a partitioned table, NULLs, quotes, newlines, non-ASCII,
# bytea and jsonb: 30k + 120k + 60k + 20k = 230k rows.
SEED_SQL = """
CREATE SCHEMA "Sales";
CREATE TABLE customers (
    id bigint PRIMARY KEY, email text NOT NULL UNIQUE, name text,
    created_at timestamptz NOT NULL, profile jsonb);
INSERT INTO customers
SELECT g, 'c' || g || '@example.com',
       CASE WHEN g % 10 = 0 THEN NULL ELSE 'Name, "quoted" ' || g || E'\\nline two \u00e9' END,
       timestamptz '2024-01-01 00:00+00' + g * interval '1 minute',
       jsonb_build_object('tier', g % 3, 'tags', jsonb_build_array('a', g % 7))
FROM generate_series(1, 30000) g;
CREATE TABLE orders (
    id bigserial PRIMARY KEY, customer_id bigint NOT NULL REFERENCES customers,
    total numeric(12, 2) NOT NULL, placed_at timestamptz NOT NULL, note text);
INSERT INTO orders (customer_id, total, placed_at, note)
SELECT 1 + g % 30000, (g % 100000) / 100.0,
       timestamptz '2024-06-01 00:00+00' + g * interval '7 seconds', md5(g::text)
FROM generate_series(1, 120000) g;
CREATE INDEX orders_by_customer ON orders (customer_id);
CREATE TABLE "Sales"."Line Items" (
    order_id bigint NOT NULL REFERENCES orders, sku text NOT NULL, qty int NOT NULL,
    digest bytea);
INSERT INTO "Sales"."Line Items"
SELECT 1 + g % 120000, 'SKU-' || (g % 500), 1 + g % 9, decode(md5(g::text), 'hex')
FROM generate_series(1, 60000) g;
CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, kind text) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO events SELECT g, date '2024-01-01' + (g % 700), 'k' || (g % 5)
FROM generate_series(1, 20000) g;
CREATE TABLE nothing_yet (id int);
CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 500;
CREATE SEQUENCE invoice_numbers START 1000;
SELECT setval('invoice_numbers', 4242);
ANALYZE;
"""


@pytest.fixture(scope="module")
def admin_dsn(testbed_state: State) -> str:
    return testbed_state.managed_postgres_url


@pytest.fixture(scope="module")
async def new_database(admin_dsn: str) -> AsyncIterator[NewDatabase]:
    """Makes fresh environment databases (role + database), all dropped at module end."""
    server = ManagedPostgres(admin_dsn)
    made: list[tuple[str, str]] = []

    async def make() -> DatabaseCredentials:
        env = (f"t-bk-{uuid.uuid4().hex[:8]}", f"env-{uuid.uuid4().hex[:8]}")
        made.append(env)
        password = generate_password()
        return await server.ensure(namespace=env[0], environment=env[1], password=password)

    yield make
    for namespace, name in made:
        await server.drop(namespace=namespace, environment=name)


async def execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def fingerprints(dsn: str) -> dict[str, tuple[int, str | None]]:
    """(rows, md5 of every row in a stable order) of each ordinary table."""
    conn = await asyncpg.connect(dsn)
    try:
        names = [
            r["name"]
            for r in await conn.fetch(
                "SELECT format('%I.%I', schemaname, tablename) AS name FROM pg_tables"
                " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
            )
        ]
        out: dict[str, tuple[int, str | None]] = {}
        for name in names:
            row = await conn.fetchrow(
                f"SELECT count(*) AS n, md5(string_agg(t::text, ',' ORDER BY t::text)) AS h"
                f" FROM {name} t"
            )
            out[name] = (int(row["n"]), row["h"])
        return out
    finally:
        await conn.close()


async def relations(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')"
            " AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1"
        )
        return [r["name"] for r in rows]
    finally:
        await conn.close()


def children_named(name: str) -> list[int]:
    """Pids of this process's children running ``name`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == os.getpid() and comm == name:
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1: a stand-in for an object store (see docstrings)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # moto accepts any credentials; botocore only needs some to sign with.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
