"""The platform database's connection pool: how it is opened, configured and closed.

Both the API and the operator talk to the platform database (audit, catalog, outbox,
idempotency) through one ``asyncpg`` pool per process, created at start-up from the
``Settings`` and closed at shutdown. Every connection the pool opens is configured the
same way by :func:`init_connection`, so ``json`` and ``jsonb`` columns read and write
plain Python values everywhere. Nothing here runs at import time.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from dockyard.core.settings import Settings

# A query that takes longer than this is a bug or an outage, not a slow page: the
# platform's queries are keyset-paginated and indexed to stay far below it.
COMMAND_TIMEOUT_SECONDS = 30.0
# Prepared statements kept per connection; the repositories use a bounded set of
# named queries, so a few hundred is ample.
STATEMENT_CACHE_SIZE = 512
# Idle connections above ``min_size`` are closed after this long, so a burst does not
# hold server connections (each one a backend process) forever.
MAX_INACTIVE_CONNECTION_LIFETIME_SECONDS = 300.0
APPLICATION_NAME = "dockyard"


async def init_connection(conn: asyncpg.Connection) -> None:
    """Decode and encode ``json``/``jsonb`` as Python values on a new connection."""
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=json.dumps,
            decoder=json.loads,
            schema="pg_catalog",
            format="text",
        )


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """Open the platform database pool described by ``settings``.

    The pool's first ``database_pool_min`` connections are opened before this returns,
    so a wrong DSN or an unreachable server fails at start-up rather than on the first
    request.
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        dsn=settings.database_dsn(),
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        command_timeout=COMMAND_TIMEOUT_SECONDS,
        statement_cache_size=STATEMENT_CACHE_SIZE,
        max_inactive_connection_lifetime=MAX_INACTIVE_CONNECTION_LIFETIME_SECONDS,
        server_settings={"application_name": APPLICATION_NAME},
        init=init_connection,
    )
    return pool


@asynccontextmanager
async def pool_context(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    """Yield an open pool and close it on exit, for start-up/cleanup hooks and scripts."""
    pool = await create_pool(settings)
    try:
        yield pool
    finally:
        await pool.close()
