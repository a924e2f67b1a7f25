"""The event log (table ``events``, migration 0004): append events, read them in order.

``append`` runs inside the caller's transaction, so an event commits with the change it
announces (the API's audit row) or not at all. It first takes a transaction-level
advisory lock, held until commit: appends are serialized, and each row's ``seq`` is
visible before any larger one. A reader that has seen ``seq`` n (a server-sent events
client's ``Last-Event-ID``) therefore never misses a row below n that commits later.
An event whose id is already logged is skipped: ids are stable, so a repeated
reconcile, a second replica or two doors announcing one approval log it once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from dockyard.core.events import Event

# "dy-event" in ASCII: the lock that orders appends (audit retention uses "dy-audit").
APPEND_LOCK_KEY: Final = int.from_bytes(b"dy-event", "big")

_SQL_LOCK = "SELECT pg_advisory_xact_lock($1)"
_SQL_APPEND = """
INSERT INTO events (id, type, resource, namespace, name, occurred_at, body)
SELECT e.id, e.type, e.resource, e.namespace, e.name, e.occurred_at, e.body::jsonb
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
            $7::text[]) AS e(id, type, resource, namespace, name, occurred_at, body)
ON CONFLICT (id) DO NOTHING
RETURNING seq, id
"""
_SQL_AFTER = """
SELECT seq, id, type, resource, namespace, occurred_at, body::text AS body FROM events
WHERE seq > $1 ORDER BY seq LIMIT $2
"""
_SQL_AFTER_IN = """
SELECT seq, id, type, resource, namespace, occurred_at, body::text AS body FROM events
WHERE namespace = $3 AND seq > $1 ORDER BY seq LIMIT $2
"""
_SQL_LAST = "SELECT coalesce(max(seq), 0) FROM events"
_SQL_KNOWN = "SELECT id FROM events WHERE id = any($1::text[])"


@dataclass(frozen=True, slots=True)
class Logged:
    """One row of the log."""

    seq: int
    id: str
    type: str
    resource: str
    namespace: str
    occurred_at: datetime
    body: dict[str, Any]


async def append(conn: asyncpg.Connection, events: Sequence[Event]) -> dict[str, int]:
    """Log ``events`` in the caller's transaction; the seq of each one newly logged."""
    if not events:
        return {}
    if not conn.is_in_transaction():
        raise RuntimeError("append events inside the transaction of the change they announce")
    await conn.execute(_SQL_LOCK, APPEND_LOCK_KEY)
    rows = await conn.fetch(
        _SQL_APPEND,
        [e.id for e in events],
        [e.type.value for e in events],
        [e.type.resource for e in events],
        [e.namespace for e in events],
        [e.data.object.name for e in events],
        [e.timestamp for e in events],
        [e.encoded() for e in events],  # text: whatever jsonb codec the connection has
    )
    return {row["id"]: row["seq"] for row in rows}


async def append_now(pool: asyncpg.Pool, events: Sequence[Event]) -> dict[str, int]:
    """Log ``events`` in a transaction of their own (the operator's events)."""
    async with pool.acquire() as conn, conn.transaction():
        return await append(conn, events)


async def known(pool: asyncpg.Pool, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` are logged already."""
    rows = await pool.fetch(_SQL_KNOWN, list(ids))
    return {row["id"] for row in rows}


async def after(
    pool: asyncpg.Pool | asyncpg.Connection,
    seq: int,
    *,
    limit: int = 100,
    namespace: str | None = None,
) -> list[Logged]:
    """Up to ``limit`` events logged after ``seq``, in order (of one namespace, if given)."""
    if namespace is None:
        rows = await pool.fetch(_SQL_AFTER, seq, limit)
    else:
        rows = await pool.fetch(_SQL_AFTER_IN, seq, limit, namespace)
    return [
        Logged(
            r["seq"],
            r["id"],
            r["type"],
            r["resource"],
            r["namespace"],
            r["occurred_at"],
            json.loads(r["body"]),
        )
        for r in rows
    ]


async def last_seq(pool: asyncpg.Pool | asyncpg.Connection) -> int:
    """The seq of the newest event (0 when none)."""
    return int(await pool.fetchval(_SQL_LAST))
