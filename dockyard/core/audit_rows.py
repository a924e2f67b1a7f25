"""Writing one audit row: what the API, the apiserver's audit webhook (through the API)
and the operator share. Reading and retention stay with the API (``dockyard.api.audit``).

``source`` says which door a change came through (migration 0006): ``rest`` (the REST
API), ``kubectl`` (any other client, as the kube-apiserver's audit webhook reports it)
or ``operator`` (the operator's own actions, with the reason in ``diff``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg

from dockyard.core.db import storable
from dockyard.core.kube import KubeClient

_SQL_INSERT = """
INSERT INTO audit_events (
    occurred_at, actor, groups, action, resource, namespace, name, outcome,
    status_code, request_id, trace_id, source_ip, diff, source, event_key
) VALUES (
    COALESCE($1::timestamptz, now()), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14,
    $15
)
"""
# The apiserver may send a batch again after a timeout: the event's digest makes the row
# once. Not its auditID, which the client chose (migration 0008).
_ON_CONFLICT = " ON CONFLICT (event_key) WHERE source = 'kubectl' DO NOTHING"


class Source(StrEnum):
    REST = "rest"
    KUBECTL = "kubectl"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class AuditRow:
    actor: str
    action: str
    resource: str
    outcome: str
    source: Source = Source.REST
    groups: Sequence[str] = ()
    namespace: str | None = None
    name: str | None = None
    status_code: int | None = None
    request_id: str | None = None
    trace_id: str | None = None
    source_ip: str | None = None
    diff: Mapping[str, Any] | None = None
    occurred_at: datetime | None = None
    event_key: str | None = None
    """A reported event's digest (source kubectl): the row is made once per event."""
    extra: dict[str, Any] = field(default_factory=dict)

    def arguments(self) -> tuple[Any, ...]:
        """The INSERT's arguments; any U+0000 in them stored as U+FFFD (``db.storable``):
        a row that cannot be written would leave a change with no trail."""
        return tuple(storable((
            self.occurred_at,
            self.actor,
            list(self.groups),
            self.action,
            self.resource,
            self.namespace,
            self.name,
            self.outcome,
            self.status_code,
            self.request_id,
            self.trace_id,
            self.source_ip,
            dict(self.diff) if self.diff is not None else None,
            self.source.value,
            self.event_key,
        )))  # fmt: skip


async def insert(target: asyncpg.Pool | asyncpg.Connection, row: AuditRow) -> int:
    """Append ``row``; its id."""
    return int(await target.fetchval(_SQL_INSERT + " RETURNING id", *row.arguments()))


# Ordered by mark, then by the order reported: the first event of each mark spends it,
# and concurrent batches take the marks' locks in one order (no deadlock).
_SQL_SPEND_MARKS = """
INSERT INTO audit_marks (mark, event_key)
SELECT m.mark, m.event_key FROM unnest($1::text[], $2::text[]) WITH ORDINALITY
    AS m(mark, event_key, n)
ORDER BY m.mark, m.n
ON CONFLICT (mark) DO NOTHING
"""
_SQL_SPENT_BY = "SELECT mark, event_key FROM audit_marks WHERE mark = any($1::text[])"
_SQL_PURGE_MARKS = "SELECT audit_marks_purge($1)"
MARKS_PURGE_BATCH = 10_000


async def spend_marks(conn: asyncpg.Connection, marks: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Spend each mark on its first event: ``marks`` are (mark, event key) pairs in the
    order they were reported; the answer maps each mark to the key of the event that
    spent it, now or before (migration 0010). Run it in the transaction that records
    the rows: a concurrent batch with the same mark waits for it, then sees it spent."""
    if not marks:
        return {}
    await conn.execute(_SQL_SPEND_MARKS, [m for m, _ in marks], [k for _, k in marks])
    spent = await conn.fetch(_SQL_SPENT_BY, [m for m, _ in marks])
    return {str(r["mark"]): str(r["event_key"]) for r in spent}


async def purge_marks(conn: asyncpg.Connection) -> int:
    """Delete the marks spent more than a day ago (audit retention, migration 0010); how
    many. Long past their 60 s, they can vouch for nothing any more."""
    deleted = 0
    while True:
        batch = int(await conn.fetchval(_SQL_PURGE_MARKS, MARKS_PURGE_BATCH))
        deleted += batch
        if batch < MARKS_PURGE_BATCH:
            return deleted


async def insert_reported(conn: asyncpg.Connection, rows: Sequence[AuditRow]) -> int:
    """Append rows the apiserver reported (once per event); how many were new."""
    new = 0
    for row in rows:
        new += int(
            await conn.fetchval(_SQL_INSERT + _ON_CONFLICT + " RETURNING 1", *row.arguments()) or 0
        )
    return new


class OwnWriters:
    """Who Dockyard itself is, to the apiserver: the configured user names of its
    components (``Settings.audit_own_users``) and the identity of the client at hand,
    learnt from the apiserver once (a SelfSubjectReview) and asked again until it answers.

    The audit sink leaves a write to the component that made it only when its
    authenticated user is one of these. A user agent alone says nothing: any client can
    send ``dockyard-api`` as its own.
    """

    def __init__(self, configured: Sequence[str], kube: KubeClient) -> None:
        self._known = frozenset(configured)
        self._kube = kube
        self._learnt = False

    async def usernames(self) -> frozenset[str]:
        if not self._learnt:
            own = await self._kube.own_username()
            if own is not None:
                self._known |= {own}
                self._learnt = True
        return self._known
