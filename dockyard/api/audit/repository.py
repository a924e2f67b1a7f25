"""``AuditLog``: the ``audit_events`` table's repository, over the platform pool.

One INSERT per event, listing paged by the keyset ``(occurred_at, id)`` that the
table's index is ordered by, and the purge of rows past retention in short batches,
one replica at a time (``dockyard.api.audit.retention`` runs it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg

from dockyard.api.audit.events import AuditEvent, AuditEventList, Cursor, Outcome
from dockyard.core import audit_rows, event_log
from dockyard.core.audit_rows import AuditRow
from dockyard.core.events import Event

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 200

# Rows deleted per statement: short transactions, so a first purge of months of rows
# neither holds locks for long nor builds one huge WAL burst.
PURGE_BATCH_SIZE = 10_000
# Session advisory lock held while purging, so one API replica purges at a time
# ("dy-audit" in ASCII; the migration runner uses "dockyard").
RETENTION_LOCK_KEY = int.from_bytes(b"dy-audit", "big")

# Every statement the repository runs, in one place. Listing filters are fragments
# joined with AND, so each combination is a plain indexable query (the statement cache
# keeps each one prepared) rather than one catch-all with "$n IS NULL OR ...".
_COLUMNS = (
    "id, occurred_at, actor, groups, action, resource, namespace, name, outcome, "
    "status_code, request_id, trace_id, source_ip, diff, source"
)
# Built from constants only: filters come from _SQL_FILTERS with $n placeholders, and
# the limit is a validated int.
_SQL_PAGE = (
    "SELECT "  # nosec B608
    + _COLUMNS
    + " FROM audit_events{where} ORDER BY occurred_at DESC, id DESC LIMIT {limit}"
)
_SQL_FILTERS = {
    "actor": "actor = {}",
    "resource": "resource = {}",
    "namespace": "namespace = {}",
    "name": "name = {}",
    "source": "source = {}",
    "since": "occurred_at >= {}",
    "until": "occurred_at <= {}",
}
_SQL_AFTER_CURSOR = "(occurred_at, id) < ({}, {})"
_SQL_TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
_SQL_UNLOCK = "SELECT pg_advisory_unlock($1)"
_SQL_CUTOFF = "SELECT now() - make_interval(days => $1)"
# The runtime role may not DELETE audit rows: the owner's function does, and only rows
# older than the retention `dockyard migrate` recorded (migration 0013).
_SQL_PURGE_BATCH = "SELECT audit_purge_before($1, $2)"


def page_query(
    *, filters: Mapping[str, object], cursor: Cursor | None, limit: int
) -> tuple[str, list[object]]:
    """The SELECT of one page and its arguments; filters whose value is None are left out."""
    conditions: list[str] = []
    args: list[object] = []
    for field, value in filters.items():
        if value is not None:
            args.append(value)
            conditions.append(_SQL_FILTERS[field].format(f"${len(args)}"))
    if cursor is not None:
        args.extend((cursor.occurred_at, cursor.id))
        conditions.append(_SQL_AFTER_CURSOR.format(f"${len(args) - 1}", f"${len(args)}"))
    args.append(limit)
    where = " WHERE " + " AND ".join(conditions) if conditions else ""
    return _SQL_PAGE.format(where=where, limit=f"${len(args)}"), args


class AuditLog:
    """The ``audit_events`` table, over a pool from ``dockyard.core.db`` (jsonb codec set)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(
        self,
        *,
        actor: str,
        action: str,
        resource: str,
        outcome: Outcome,
        groups: Sequence[str] = (),
        namespace: str | None = None,
        name: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
        source_ip: str | None = None,
        diff: Mapping[str, Any] | None = None,
        occurred_at: datetime | None = None,
        events: Sequence[Event] = (),
    ) -> int:
        """Append one audit row (one INSERT, one round trip); returns its id.

        ``events`` (what the request announces, such as ``restore.approved``) are logged
        in the same transaction: both or neither. ``occurred_at`` defaults to the
        database's clock; it is given only when importing rows or in tests and
        benchmarks.
        """
        row = AuditRow(
            actor=actor,
            action=action,
            resource=resource,
            outcome=outcome.value,
            groups=groups,
            namespace=namespace,
            name=name,
            status_code=status_code,
            request_id=request_id,
            trace_id=trace_id,
            source_ip=source_ip,
            diff=diff,
            occurred_at=occurred_at,
        )
        if not events:
            return await audit_rows.insert(self.pool, row)
        async with self.pool.acquire() as conn, conn.transaction():
            ident = await audit_rows.insert(conn, row)
            await event_log.append(conn, events)
        return ident

    async def list(
        self,
        *,
        actor: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = PAGE_SIZE_DEFAULT,
        cursor: str | None = None,
    ) -> AuditEventList:
        """A page of events, newest first, after ``cursor`` (a previous page's nextCursor).

        ``since`` and ``until`` are inclusive. Raises ``InvalidCursor`` for a cursor this
        API did not hand out and ``ValueError`` for a limit outside 1..200.
        """
        if not 1 <= limit <= PAGE_SIZE_MAX:
            raise ValueError(f"limit must be between 1 and {PAGE_SIZE_MAX}")
        after = Cursor.decode(cursor) if cursor is not None else None
        filters = {
            "actor": actor,
            "resource": resource,
            "namespace": namespace,
            "name": name,
            "source": source,
            "since": since,
            "until": until,
        }
        # One row more than asked says whether a next page exists, without a count.
        sql, args = page_query(filters=filters, cursor=after, limit=limit + 1)
        rows = await self.pool.fetch(sql, *args)
        items = [AuditEvent.from_row(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = Cursor(occurred_at=last.occurred_at, id=last.id).encode()
        return AuditEventList(items=items, next_cursor=next_cursor)

    async def purge_older_than(
        self, *, days: int, batch_size: int = PURGE_BATCH_SIZE
    ) -> int | None:
        """Delete events older than ``days`` days; the number deleted.

        ``None`` means another process (an API replica) holds the purge lock and is
        purging now, so this one did nothing.
        """
        if days < 1 or batch_size < 1:
            raise ValueError("days and batch_size must be at least 1")
        async with self.pool.acquire() as conn:
            if not await conn.fetchval(_SQL_TRY_LOCK, RETENTION_LOCK_KEY):
                return None
            try:
                # One cutoff for every batch, so the purge ends even while rows arrive.
                cutoff = await conn.fetchval(_SQL_CUTOFF, days)
                deleted = 0
                while True:
                    batch = int(await conn.fetchval(_SQL_PURGE_BATCH, cutoff, batch_size))
                    deleted += batch
                    if batch < batch_size:
                        break
                await audit_rows.purge_marks(conn)
                return deleted
            finally:
                # Should this fail, the pool's reset on release unlocks all the same.
                await conn.execute(_SQL_UNLOCK, RETENTION_LOCK_KEY)
