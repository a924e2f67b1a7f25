"""Fixtures and helpers shared by the backup tests (imported by them, not a conftest).

Databases are real environment databases on the test bed's PostgreSQL, made by
``ManagedPostgres`` exactly as the operator makes them (a non-superuser role that owns
its database), so backups and restores run with the privileges they have in
production. Each is named with a fresh uuid and dropped when its scope ends.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dockyard.operator.database import DatabaseCredentials, ManagedPostgres, generate_password
from dockyard.runner.s3 import S3Credentials, S3Store
from dockyard.testbed.cluster import State

NewDatabase = Callable[[], Awaitable[DatabaseCredentials]]

# Several tables, odd names, a partitioned table, NULLs, quotes, newlines, non-ASCII,
# bytea and jsonb: 30k + 120k + 60k + 20k = 230k rows.
# The uid of the namespace these databases are made for (no such namespace is needed).
NAMESPACE_UID = "00000000-0000-4000-8000-00000000b0c0"

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
        return await server.ensure(
            namespace=env[0], namespace_uid=NAMESPACE_UID, environment=env[1], password=password
        )

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


@dataclass(frozen=True)
class TestbedS3:
    """The test bed's S3 (SeaweedFS's gateway, https on loopback): a real object store."""

    __test__ = False

    url: str
    access_key_id: str
    secret_access_key: str
    ca_bundle: str
    region: str = "us-east-1"

    def store(self, bucket: str, **options: Any) -> S3Store:
        """An ``S3Store`` on ``bucket`` with the test bed's key, trusting its CA."""
        return S3Store(
            bucket,
            endpoint_url=self.url,
            region=self.region,
            credentials=S3Credentials(self.access_key_id, self.secret_access_key),
            ca_bundle=self.ca_bundle,
            **options,
        )

    def secrets(self, kubectl: Callable[..., Any], namespace: str) -> dict[str, Any]:
        """Create, in ``namespace``, the Secrets a Backup to this store names: the keys
        (``tenant-s3``) and the CA bundle (``s3-ca``); the ``s3`` storage fields naming them."""
        kubectl(
            "create",
            "secret",
            "generic",
            "tenant-s3",
            "-n",
            namespace,
            f"--from-literal=AWS_ACCESS_KEY_ID={self.access_key_id}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={self.secret_access_key}",
        )
        kubectl(
            "create",
            "secret",
            "generic",
            "s3-ca",
            "-n",
            namespace,
            f"--from-file=ca.crt={self.ca_bundle}",
        )
        return {
            "credentialsSecretRef": {"name": "tenant-s3"},
            "caBundleSecretRef": {"name": "s3-ca", "key": "ca.crt"},
        }


@pytest.fixture(scope="session")
def testbed_s3(testbed_state: State) -> TestbedS3:
    """The test bed's S3 endpoint and its key."""
    return TestbedS3(
        testbed_state.s3_endpoint,
        testbed_state.s3_access_key_id,
        testbed_state.s3_secret_access_key,
        testbed_state.s3_ca_bundle,
    )


@pytest.fixture
def s3_endpoint(testbed_s3: TestbedS3) -> str:
    return testbed_s3.url


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch, testbed_s3: TestbedS3) -> None:
    """botocore's usual chain finds the test bed's key and CA in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", testbed_s3.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", testbed_s3.secret_access_key)
    monkeypatch.setenv("AWS_CA_BUNDLE", testbed_s3.ca_bundle)
    monkeypatch.setenv("AWS_DEFAULT_REGION", testbed_s3.region)
