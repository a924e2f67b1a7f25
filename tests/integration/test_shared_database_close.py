"""Operator processes that close the shared databases at one instant (a rolling update,
or the operators of several namespaces on one server) all get through, on the test
bed's managed PostgreSQL.

The first admin session of each closes the maintenance database and ``template1`` to
PUBLIC (``sessions.close_shared_databases``). Two REVOKEs on one catalog row at once
make the server refuse the second ("tuple concurrently updated", XX000): that
process's pass failed. Here a scratch database stands for the maintenance database,
opened to PUBLIC again before each round.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from dockyard.operator.database.sessions import close_shared_databases
from dockyard.testbed.cluster import State

PROCESSES = 8
ROUNDS = 10


async def test_operators_closing_the_shared_databases_at_once_all_get_through(
    testbed_state: State,
) -> None:
    dsn = testbed_state.managed_postgres_url
    name = f"dk_shared_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    sessions: list[asyncpg.Connection] = []
    try:
        sessions = [await asyncpg.connect(dsn, database=name) for _ in range(PROCESSES)]
        for _ in range(ROUNDS):
            await admin.execute(f'GRANT CONNECT, TEMPORARY ON DATABASE "{name}" TO PUBLIC')

            said = await asyncio.gather(
                *(close_shared_databases(conn) for conn in sessions), return_exceptions=True
            )

            assert [r for r in said if isinstance(r, BaseException)] == []
            assert all(name not in r for r in said if isinstance(r, list))
        for privilege in ("CONNECT", "TEMPORARY"):
            query = "SELECT pg_catalog.has_database_privilege('public', $1, $2)"
            assert await admin.fetchval(query, name, privilege) is False
    finally:
        for conn in sessions:
            await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
