"""The ``webhook_deliveries`` table (migration 0005): fan-out, claims, results.

- ``start`` places a new Webhook's cursor after the last event logged before the
  Webhook was created: it receives what happened from then on, even if the operator
  was down when it was created.
- ``fan_out`` reads the log after a Webhook's cursor and adds a pending delivery per
  wanted event, then moves the cursor, in one transaction.
- ``claim`` takes up to ``limit`` due deliveries with ``FOR UPDATE SKIP LOCKED`` and
  moves their ``next_at`` past a lease in the same statement: another replica neither
  waits for them nor takes them, and one that crashed mid-attempt leaves them due again
  once the lease ends. The batch is shared among namespaces (migration 0009), so that
  one namespace's backlog does not hold up the others' deliveries.
- ``delivered``, ``retry`` and ``give_up`` record an attempt's result; ``redeliver``
  revives dead letters. ``release`` lets go of a claim whose attempt a stopping replica
  cut short, before anything was recorded: due again at once, no attempt counted.
- A delivery whose Webhook is suspended or not Ready is parked: its ``last_error`` says
  why (``SUSPENDED``, ``NOT_READY``) until an attempt. ``wake`` makes what was parked
  due again, and due only since then: ``due_since`` starts the dead-letter window, and
  time parked is no time the delivery could have been made.
- ``forget`` drops a deleted Webhook's deliveries and cursor; ``purge`` is retention:
  finished deliveries and events past ``DOCKYARD_EVENT_RETENTION_DAYS``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from dockyard.core import event_log

FAN_OUT_BATCH: Final = 500
CLAIM_ROUNDS: Final = 4
"""Claims per pass at most: the first share, and what namespaces left of it."""

_SQL_CURSOR = "SELECT seq FROM webhook_cursors WHERE webhook_uid = $1"
_SQL_START = """
INSERT INTO webhook_cursors (webhook_uid, seq)
SELECT $1, coalesce(
    (SELECT min(seq) - 1 FROM events WHERE occurred_at >= $2),
    (SELECT max(seq) FROM events),
    0
)
ON CONFLICT (webhook_uid) DO NOTHING
"""
_SQL_MOVE = "UPDATE webhook_cursors SET seq = greatest(seq, $2) WHERE webhook_uid = $1"
_SQL_ADD = """
INSERT INTO webhook_deliveries (webhook_uid, namespace, webhook, event_seq, event_id)
SELECT $1, $2, $3, s, i FROM unnest($4::bigint[], $5::text[]) AS d(s, i)
ON CONFLICT (webhook_uid, event_id) DO NOTHING
"""
_SQL_DUE_NAMESPACES = """
SELECT n.namespace FROM unnest($1::text[]) AS n(namespace)
CROSS JOIN LATERAL (
    SELECT next_at FROM webhook_deliveries
    WHERE namespace = n.namespace AND state = 'pending' AND next_at <= now()
    ORDER BY next_at LIMIT 1
) AS oldest
ORDER BY oldest.next_at, n.namespace
"""
_SQL_CLAIM = """
WITH picked AS (
    SELECT p.id FROM unnest($1::text[]) AS n(namespace)
    CROSS JOIN LATERAL (
        SELECT id FROM webhook_deliveries
        WHERE namespace = n.namespace AND state = 'pending' AND next_at <= now()
        ORDER BY next_at, id LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) AS p
)
UPDATE webhook_deliveries d SET next_at = now() + make_interval(secs => $3), attempts = attempts + 1
FROM events e
WHERE e.seq = d.event_seq AND d.id IN (SELECT id FROM picked)
RETURNING d.id, d.webhook_uid, d.namespace, d.event_id, d.attempts, d.due_since, e.type,
    e.body::text AS body, d.next_at
"""
_SQL_DELIVERED = """
UPDATE webhook_deliveries SET state = 'delivered', delivered_at = now(), last_status = $2,
    last_error = NULL
WHERE id = $1
"""
_SQL_RETRY = """
UPDATE webhook_deliveries SET next_at = now() + make_interval(secs => $2), last_status = $3,
    last_error = $4
WHERE id = $1
"""
# Postponed and parked claims were no attempts: the claim's count is taken back.
_SQL_POSTPONE = """
UPDATE webhook_deliveries SET next_at = now() + make_interval(secs => $2),
    attempts = greatest(attempts - 1, 0)
WHERE id = $1
"""
# A claim let go before its attempt was recorded: due at once, and no attempt. Only while
# nothing was written since the claim (its lease end, next_at, is the claim's own).
_SQL_RELEASE = """
UPDATE webhook_deliveries SET next_at = now(), attempts = greatest(attempts - 1, 0)
WHERE id = $1 AND state = 'pending' AND next_at = $2
"""
_SQL_PARK_ONE = """
UPDATE webhook_deliveries SET next_at = now() + make_interval(secs => $2), last_error = $3,
    attempts = greatest(attempts - 1, 0)
WHERE id = $1 AND due_since = $4
"""
_SQL_PARK = """
UPDATE webhook_deliveries SET last_error = $2,
    next_at = greatest(next_at, now() + make_interval(secs => $3))
WHERE webhook_uid = $1 AND state = 'pending'
"""
_SQL_WAKE = """
UPDATE webhook_deliveries SET next_at = least(next_at, now()), due_since = now()
WHERE webhook_uid = $1 AND state = 'pending' AND last_error = any($2::text[])
"""
_SQL_DEAD = """
UPDATE webhook_deliveries SET state = 'dead', last_status = $2, last_error = $3 WHERE id = $1
"""
_SQL_COUNTS = """
SELECT webhook_uid, state, count(*) AS n FROM webhook_deliveries
WHERE webhook_uid = any($1::text[]) AND state <> 'delivered'
GROUP BY webhook_uid, state
"""
_SQL_REDELIVER = """
UPDATE webhook_deliveries SET state = 'pending', next_at = now(), due_since = now(),
    attempts = 0
WHERE webhook_uid = $1 AND state = 'dead' AND ($2::text IS NULL OR event_id = $2)
RETURNING event_id
"""


_SQL_FORGET_DELIVERIES = "DELETE FROM webhook_deliveries WHERE webhook_uid = $1"
_SQL_WEBHOOK_UIDS = """
SELECT webhook_uid FROM webhook_cursors
UNION SELECT DISTINCT webhook_uid FROM webhook_deliveries
"""
_SQL_FORGET_CURSOR = "DELETE FROM webhook_cursors WHERE webhook_uid = $1"
_SQL_PURGE_FINISHED = """
DELETE FROM webhook_deliveries WHERE id IN (
    SELECT id FROM webhook_deliveries
    WHERE (state = 'delivered' AND delivered_at < $1) OR (state = 'dead' AND due_since < $1)
    LIMIT $2
)
"""
_SQL_PURGE_EVENTS = "SELECT events_purge_before($1, $2)"
PURGE_BATCH: Final = 10_000
# The last error of a delivery parked because its Webhook is suspended, or not Ready.
SUSPENDED: Final = "webhook suspended"
NOT_READY: Final = "webhook not ready"


@dataclass(frozen=True, slots=True)
class Claimed:
    """One delivery attempt this replica now holds."""

    id: int
    webhook_uid: str
    namespace: str
    """The Webhook's namespace (whose share of the dispatcher's slots it takes)."""
    event_id: str
    attempt: int
    due_since: datetime
    type: str
    body: dict[str, Any]
    held_until: datetime | None = None
    """The end of the claim's lease (its ``next_at``), by which ``release`` knows it."""


async def fan_out(
    pool: asyncpg.Pool,
    webhook_uid: str,
    namespace: str,
    name: str,
    wants: Callable[[event_log.Logged], bool],
) -> int:
    """Add the deliveries of the events logged since the cursor; how many were added."""
    async with pool.acquire() as conn, conn.transaction():
        cursor = await conn.fetchval(_SQL_CURSOR, webhook_uid)
        if cursor is None:
            return 0  # not started (``start``)
        rows = await event_log.after(conn, int(cursor), limit=FAN_OUT_BATCH)
        if not rows:
            return 0
        wanted = [row for row in rows if wants(row)]
        if wanted:
            await conn.execute(
                _SQL_ADD,
                webhook_uid,
                namespace,
                name,
                [row.seq for row in wanted],
                [row.id for row in wanted],
            )
        await conn.execute(_SQL_MOVE, webhook_uid, rows[-1].seq)
        return len(wanted)


async def start(pool: asyncpg.Pool, webhook_uid: str, created: datetime) -> None:
    """Start a Webhook's cursor (once) just before the first event logged that occurred
    at or after ``created``. Not after the last one that occurred before it: an event
    logged late (held through an outage, or stamped by a slower clock) can have a
    higher ``seq`` than one that happened after the Webhook was made."""
    await pool.execute(_SQL_START, webhook_uid, created)


async def claim(
    pool: asyncpg.Pool,
    namespaces: Collection[str],
    limit: int,
    lease: float,
    *,
    everywhere: str | None = None,
) -> list[Claimed]:
    """Up to ``limit`` due deliveries of Webhooks in ``namespaces``, shared among them.

    The Webhooks of ``everywhere`` (the platform namespace) receive every namespace's
    events, so their deliveries take up to half the batch first, and what the others
    leave at the end. The rest is shared:
    the namespaces whose oldest due delivery has waited longest come first, at most as
    many as there is room for, and each takes an equal share; a share one leaves unused
    goes, in a few more rounds, first to namespaces not served yet, then to those that
    filled theirs. One namespace's backlog, however old, thus takes no more than its
    share while others have deliveries due.
    """
    due = [r["namespace"] for r in await pool.fetch(_SQL_DUE_NAMESPACES, sorted(namespaces))]
    rows: list[asyncpg.Record] = []
    wide_has_more = False
    if everywhere is not None and everywhere in due:
        half = max(1, limit // 2)
        rows += await pool.fetch(_SQL_CLAIM, [everywhere], half, lease)
        due.remove(everywhere)
        wide_has_more = len(rows) == half
    for _ in range(CLAIM_ROUNDS):
        room = limit - len(rows)
        if not due or room <= 0:
            break
        served, waiting = due[:room], due[room:]
        share = room // len(served)
        taken = await pool.fetch(_SQL_CLAIM, served, share, lease)
        rows += taken
        counted = Counter(r["namespace"] for r in taken)
        due = waiting + [n for n in served if counted[n] == share]
    if wide_has_more and len(rows) < limit:  # what the others left
        rows += await pool.fetch(_SQL_CLAIM, [everywhere], limit - len(rows), lease)
    return [
        Claimed(
            id=r["id"],
            webhook_uid=r["webhook_uid"],
            namespace=r["namespace"],
            event_id=r["event_id"],
            attempt=r["attempts"],
            due_since=r["due_since"],
            type=r["type"],
            body=json.loads(r["body"]),
            held_until=r["next_at"],
        )
        for r in rows
    ]


async def delivered(pool: asyncpg.Pool, delivery: int, status: int) -> None:
    await pool.execute(_SQL_DELIVERED, delivery, status)


async def retry(
    pool: asyncpg.Pool, delivery: int, after: float, status: int | None, error: str
) -> None:
    await pool.execute(_SQL_RETRY, delivery, after, status, error[:512])


async def postpone(pool: asyncpg.Pool, delivery: int, after: float) -> None:
    """Try again after ``after`` seconds; unlike ``retry``, no attempt was made."""
    await pool.execute(_SQL_POSTPONE, delivery, after)


async def release(pool: asyncpg.Pool, claimed: Claimed) -> bool:
    """Let go of a claim whose attempt was cut short before its result was recorded (the
    replica stopping): due again at once, for any replica, rather than after its lease,
    and no attempt counted. Not once anything was recorded since the claim: False."""
    done = await pool.execute(_SQL_RELEASE, claimed.id, claimed.held_until)
    return bool(done.endswith(" 1"))


async def park_one(pool: asyncpg.Pool, claimed: Claimed, after: float, reason: str) -> bool:
    """Park a claimed delivery for ``after`` seconds (its Webhook suspended or not
    Ready, ``reason``): no attempt was made, and ``wake`` makes it due again. Not if a
    ``wake`` came since the claim (it moved ``due_since``): False, and it stays due."""
    done = await pool.execute(_SQL_PARK_ONE, claimed.id, after, reason, claimed.due_since)
    return bool(done.endswith(" 1"))


async def park(pool: asyncpg.Pool, webhook_uid: str, reason: str, after: float) -> None:
    """Park a Webhook's pending deliveries for ``reason``, none claimed for ``after``
    seconds at least, until ``wake``: a backlog takes no other delivery's place."""
    await pool.execute(_SQL_PARK, webhook_uid, reason, after)


async def wake(pool: asyncpg.Pool, webhook_uid: str) -> None:
    """Make the deliveries parked (``SUSPENDED``, ``NOT_READY``) due now, and due only
    from now: the time they were parked does not count toward giving them up."""
    await pool.execute(_SQL_WAKE, webhook_uid, [SUSPENDED, NOT_READY])


async def give_up(pool: asyncpg.Pool, delivery: int, status: int | None, error: str) -> None:
    await pool.execute(_SQL_DEAD, delivery, status, error[:512])


async def counts(pool: asyncpg.Pool, uids: Sequence[str]) -> dict[str, dict[str, int]]:
    """Per Webhook uid: how many deliveries are pending and dead."""
    found: dict[str, dict[str, int]] = {uid: {"pending": 0, "dead": 0} for uid in uids}
    for row in await pool.fetch(_SQL_COUNTS, list(uids)):
        found[row["webhook_uid"]][row["state"]] = int(row["n"])
    return found


async def redeliver(conn: Any, webhook_uid: str, event_id: str | None) -> list[str]:
    """Make the dead letters of one Webhook (or one event's) pending again; their ids."""
    return [r["event_id"] for r in await conn.fetch(_SQL_REDELIVER, webhook_uid, event_id)]


async def forget(pool: asyncpg.Pool, webhook_uid: str) -> None:
    """Drop a deleted Webhook's deliveries (pending ones too) and its cursor."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(_SQL_FORGET_DELIVERIES, webhook_uid)
        await conn.execute(_SQL_FORGET_CURSOR, webhook_uid)


async def webhook_uids(pool: asyncpg.Pool) -> set[str]:
    """The Webhooks that have a cursor or deliveries."""
    return {r["webhook_uid"] for r in await pool.fetch(_SQL_WEBHOOK_UIDS)}


async def purge(pool: asyncpg.Pool, before: datetime) -> tuple[int, int]:
    """Retention: delete finished deliveries, then events, from before ``before``, in
    batches; (deliveries, events) deleted. Events with a pending delivery stay."""
    deliveries = events = 0
    while True:
        status = await pool.execute(_SQL_PURGE_FINISHED, before, PURGE_BATCH)
        done = int(status.split()[-1])
        deliveries += done
        if done < PURGE_BATCH:
            break
    while True:
        done = int(await pool.fetchval(_SQL_PURGE_EVENTS, before, PURGE_BATCH) or 0)
        events += done
        if done < PURGE_BATCH:
            break
    return deliveries, events
