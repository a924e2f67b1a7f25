"""Listing 50 audit events from a million rows: ``AuditLog.list`` against its peers.

Into a fresh database on the test bed's PostgreSQL (created here, dropped at the end),
the platform migrations are applied and ``--rows`` realistic events are generated
server-side (``INSERT ... SELECT`` from ``generate_series``: skewed actors, a mix of
resources, methods and outcomes, diffs on updates, 90 days of history), then
``VACUUM ANALYZE`` leaves the table as autovacuum would. Each case then lists 50 events
``--iterations`` times through ``AuditLog.list`` and, in the same run, through a peer:

- ``first_page``: the newest 50, against ``OFFSET 0`` (the same work: a parity check);
- ``deep_page``: 50 rows ``--depth`` rows in, by cursor, against ``OFFSET depth``;
- ``actor_first_page``: one actor's newest 50, against the same query with the
  ``(actor, occurred_at, id)`` index dropped (inside a transaction rolled back after);
- ``actor_deep_page``: halfway through that actor's events, by cursor against OFFSET.

Dockyard and its peer alternate call by call (except for the dropped index, whose lock
would block the other side), and both build the same ``AuditEvent`` models, so the
only difference measured is the query.

Run: ``.venv/bin/python -m bench.audit_events [--rows 1000000] [--iterations 300]``.
Writes ``bench/results/audit_events.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import scratch_database
from dockyard.api.audit.events import AuditEvent, Cursor
from dockyard.api.audit.repository import AuditLog, page_query

RESULTS = Path(__file__).parent / "results" / "audit_events.json"
PAGE = 50
WARMUP = 20
LOAD_CHUNK = 100_000
BOUND_P95_MS = 100.0

_COLUMNS = (
    "id, occurred_at, actor, groups, action, resource, namespace, name, outcome, "
    "status_code, request_id, trace_id, source_ip, diff, source"
)
_OFFSET_PAGE = (
    f"SELECT {_COLUMNS} FROM audit_events ORDER BY occurred_at DESC, id DESC LIMIT $1 OFFSET $2"
)
_OFFSET_ACTOR_PAGE = (
    f"SELECT {_COLUMNS} FROM audit_events WHERE actor = $1 "
    "ORDER BY occurred_at DESC, id DESC LIMIT $2 OFFSET $3"
)
_ROW_AT = (
    "SELECT occurred_at, id FROM audit_events ORDER BY occurred_at DESC, id DESC OFFSET $1 LIMIT 1"
)
_ACTOR_ROW_AT = (
    "SELECT occurred_at, id FROM audit_events WHERE actor = $1 "
    "ORDER BY occurred_at DESC, id DESC OFFSET $2 LIMIT 1"
)

# One row per series value; the random draws sit in a LATERAL that references g, so
# Postgres draws them per row rather than once. Events are spread evenly over 90 days
# in id order, as a live table fills. Actors are skewed (a CI bot makes an eighth of
# the events, most people a few hundred) and 4% are anonymous denials.
_LOAD = """
INSERT INTO audit_events (
    occurred_at, actor, groups, action, resource, namespace, name, outcome,
    status_code, request_id, trace_id, source_ip, diff
)
SELECT
    now() - interval '90 days' + g * (interval '90 days' / $3),
    CASE WHEN r.anon < 0.04 THEN 'system:anonymous'
         ELSE 'user-' || lpad(floor(power(r.who, 3) * 500)::int::text, 3, '0') END,
    CASE WHEN r.anon < 0.04 THEN '{}'::text[]
         ELSE ARRAY['system:authenticated', 'team-' || (g % 20)] END,
    CASE WHEN r.anon < 0.04 THEN 'GET /api/v1/namespaces/{namespace}/' || res.kind
         ELSE r.method || ' /api/v1/namespaces/{namespace}/' || res.kind || '/{name}'
              || ' op=' || lower(r.method) || res.kind || ' verb=' || lower(r.method) END,
    res.kind,
    'team-' || (floor(r.ns * 40)::int),
    res.kind || '-' || (floor(r.obj * 250)::int),
    CASE WHEN r.anon < 0.04 OR r.fate < 0.04 THEN 'denied'
         WHEN r.fate < 0.10 THEN 'failed' ELSE 'succeeded' END,
    CASE WHEN r.anon < 0.04 THEN 401 WHEN r.fate < 0.04 THEN 403
         WHEN r.fate < 0.10 THEN 409 WHEN r.method = 'POST' THEN 201 ELSE 200 END,
    md5(g::text),
    md5('trace' || g::text),
    ('10.' || (g % 200) || '.' || floor(r.ns * 250)::int || '.' || (g % 250 + 1))::inet,
    CASE WHEN r.method = 'PATCH' AND r.fate >= 0.10 THEN jsonb_build_object(
        '/replicas', jsonb_build_object('from', (g % 5) + 1, 'to', (g % 5) + 2))
    END
FROM generate_series($1::bigint, $2::bigint) AS g
CROSS JOIN LATERAL (
    SELECT random() + 0 * g AS anon, random() AS who, random() AS ns, random() AS obj,
           random() AS fate,
           (ARRAY['PATCH', 'PATCH', 'PATCH', 'POST', 'POST', 'DELETE', 'PUT'])
               [1 + floor(random() * 7)::int] AS method,
           random() AS pick
) AS r
CROSS JOIN LATERAL (
    SELECT (ARRAY['environments', 'environments', 'environments', 'backups', 'backups',
                  'restores', 'restoredrills', 'backupschedules', 'scalingpolicies',
                  'ratelimitpolicies'])[1 + floor(r.pick * 10)::int] AS kind
) AS res
"""


def _percentiles(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)

    return {
        "p50_ms": pick(0.50),
        "p95_ms": pick(0.95),
        "p99_ms": pick(0.99),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
        "n": len(ordered),
    }


Call = Callable[[], Awaitable[Sequence[AuditEvent]]]


async def _timed(call: Call) -> float:
    started = time.perf_counter()
    events = await call()
    elapsed = time.perf_counter() - started
    if len(events) != PAGE:
        raise RuntimeError(f"a page held {len(events)} events, not {PAGE}")
    return elapsed


async def _alternate(ours: Call, peer: Call, iterations: int) -> tuple[list[float], list[float]]:
    """Time both, call by call, so drift in the machine's load hits both alike."""
    for _ in range(WARMUP):
        await ours()
        await peer()
    mine: list[float] = []
    theirs: list[float] = []
    for _ in range(iterations):
        mine.append(await _timed(ours))
        theirs.append(await _timed(peer))
    return mine, theirs


async def _series(call: Call, iterations: int) -> list[float]:
    for _ in range(WARMUP):
        await call()
    return [await _timed(call) for _ in range(iterations)]


async def _plan(conn: asyncpg.Connection, sql: str, *args: object) -> str:
    """The plan's node chain, e.g. 'Limit > Index Scan (audit_events_page_idx)'."""
    raw = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {sql}", *args)
    node = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    steps = []
    while True:
        label = node["Node Type"]
        if "Index Name" in node:
            label += f" ({node['Index Name']})"
        steps.append(label)
        children = node.get("Plans") or []
        if not children:
            return " > ".join(steps)
        node = children[0]


def _case(
    ours: list[float], theirs: list[float], peer_is: str, plans: dict[str, str]
) -> dict[str, Any]:
    mine, peer = _percentiles(ours), _percentiles(theirs)
    return {
        "dockyard": mine,
        "peer": peer,
        "peer_is": peer_is,
        "p95_ratio_peer_over_dockyard": round(peer["p95_ms"] / mine["p95_ms"], 2),
        "plans": plans,
    }


async def _load(pool: asyncpg.Pool, rows: int) -> float:
    started = time.perf_counter()
    for first in range(1, rows + 1, LOAD_CHUNK):
        last = min(rows, first + LOAD_CHUNK - 1)
        # Loading is no request: not held to the API's statement deadline.
        await pool.execute(_LOAD, first, last, rows, timeout=600)
        print(f"  loaded {last:,} rows ({time.perf_counter() - started:.1f} s)", flush=True)
    async with pool.acquire() as conn:
        await conn.execute("VACUUM ANALYZE audit_events", timeout=600)
    return time.perf_counter() - started


async def _our_plan(
    conn: asyncpg.Connection, *, actor: str | None = None, cursor: Cursor | None = None
) -> str:
    """The plan of the very statement ``AuditLog.list`` runs (it asks for one extra row)."""
    sql, args = page_query(filters={"actor": actor}, cursor=cursor, limit=PAGE + 1)
    return await _plan(conn, sql, *args)


async def _median_actor(conn: asyncpg.Connection) -> tuple[str, int]:
    # Of the people with enough events for a full page halfway through theirs.
    counts = await conn.fetch(
        "SELECT actor, count(*) AS n FROM audit_events WHERE actor LIKE 'user-%' "
        "GROUP BY actor HAVING count(*) >= $1 ORDER BY n",
        4 * PAGE,
    )
    if not counts:
        raise RuntimeError("too few rows for a per-actor page; raise --rows")
    middle = counts[len(counts) // 2]
    return str(middle["actor"]), int(middle["n"])


async def _cursor_at(conn: asyncpg.Connection, sql: str, *args: object) -> str:
    """The cursor a client holds after reading every row before the given position."""
    row = await conn.fetchrow(sql, *args)
    return Cursor(occurred_at=row["occurred_at"], id=row["id"]).encode()


async def _measure(pool: asyncpg.Pool, iterations: int, depth: int) -> dict[str, Any]:
    log = AuditLog(pool)

    def offset(sql: str, *args: object) -> Call:
        async def call() -> list[AuditEvent]:
            return [AuditEvent.from_row(row) for row in await pool.fetch(sql, *args)]

        return call

    def keyset(**kwargs: Any) -> Call:
        async def call() -> list[AuditEvent]:
            return (await log.list(limit=PAGE, **kwargs)).items

        return call

    cases: dict[str, Any] = {}
    async with pool.acquire() as conn:
        actor, actor_rows = await _median_actor(conn)
        deep_cursor = await _cursor_at(conn, _ROW_AT, depth - 1)
        actor_depth = actor_rows // 2
        actor_cursor = await _cursor_at(conn, _ACTOR_ROW_AT, actor, actor_depth - 1)
        deep = Cursor.decode(deep_cursor)
        plans = {
            "first_page": {
                "dockyard": await _our_plan(conn),
                "peer": await _plan(conn, _OFFSET_PAGE, PAGE, 0),
            },
            "deep_page": {
                "dockyard": await _our_plan(conn, cursor=deep),
                "peer": await _plan(conn, _OFFSET_PAGE, PAGE, depth),
            },
            "actor_first_page": {"dockyard": await _our_plan(conn, actor=actor)},
            "actor_deep_page": {
                "dockyard": await _our_plan(conn, actor=actor, cursor=Cursor.decode(actor_cursor)),
                "peer": await _plan(conn, _OFFSET_ACTOR_PAGE, actor, PAGE, actor_depth),
            },
        }

    print("  first page", flush=True)
    ours, theirs = await _alternate(keyset(), offset(_OFFSET_PAGE, PAGE, 0), iterations)
    cases["first_page"] = _case(ours, theirs, "OFFSET 0", plans["first_page"])

    print(f"  deep page ({depth:,} rows in)", flush=True)
    ours, theirs = await _alternate(
        keyset(cursor=deep_cursor), offset(_OFFSET_PAGE, PAGE, depth), iterations
    )
    cases["deep_page"] = _case(ours, theirs, f"OFFSET {depth}", plans["deep_page"])
    cases["deep_page"]["depth"] = depth

    print(f"  one actor's first page ({actor}, {actor_rows:,} events)", flush=True)
    ours = await _series(keyset(actor=actor), iterations)
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            # Dropped for this transaction only: the peer is the same query, un-indexed.
            await conn.execute("DROP INDEX audit_events_actor_page_idx")
            plans["actor_first_page"]["peer"] = await _plan(
                conn, _OFFSET_ACTOR_PAGE, actor, PAGE, 0
            )

            async def unindexed() -> list[AuditEvent]:
                rows = await conn.fetch(_OFFSET_ACTOR_PAGE, actor, PAGE, 0)
                return [AuditEvent.from_row(row) for row in rows]

            theirs = await _series(unindexed, iterations)
        finally:
            await transaction.rollback()
    cases["actor_first_page"] = _case(
        ours, theirs, "same filter without the actor index", plans["actor_first_page"]
    )
    cases["actor_first_page"]["actor_events"] = actor_rows

    print(f"  one actor, {actor_depth:,} events in", flush=True)
    ours, theirs = await _alternate(
        keyset(actor=actor, cursor=actor_cursor),
        offset(_OFFSET_ACTOR_PAGE, actor, PAGE, actor_depth),
        iterations,
    )
    cases["actor_deep_page"] = _case(
        ours, theirs, f"OFFSET {actor_depth}", plans["actor_deep_page"]
    )
    cases["actor_deep_page"]["depth"] = actor_depth
    return cases


async def _run(rows: int, iterations: int, depth: int) -> dict[str, Any]:
    async with scratch_database("audit") as (pool, name):
        print(f"loading {rows:,} rows into {name}", flush=True)
        load_seconds = await _load(pool, rows)
        size = await pool.fetchval("SELECT pg_total_relation_size('audit_events')")
        version = await pool.fetchval("SHOW server_version")
        print(f"measuring, {iterations} calls per side", flush=True)
        cases = await _measure(pool, iterations, min(depth, rows - PAGE))
    return {
        "benchmark": "list 50 audit events through AuditLog.list vs OFFSET / un-indexed peers",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "postgres": version,
        "rows": rows,
        "iterations": iterations,
        "page_size": PAGE,
        "load_seconds": round(load_seconds, 1),
        "table_and_indexes_mb": round(size / 1024 / 1024, 1),
        "bound_p95_ms": BOUND_P95_MS,
        "within_bound": all(c["dockyard"]["p95_ms"] < BOUND_P95_MS for c in cases.values()),
        "cases": cases,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--depth", type=int, default=500_000, help="rows before the deep page")
    args = parser.parse_args()
    if args.rows < 2 * PAGE or args.iterations < 1:
        parser.error("--rows must be at least 100 and --iterations at least 1")
    result = asyncio.run(_run(args.rows, args.iterations, args.depth))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    partial = RESULTS.with_suffix(".json.tmp")
    partial.write_text(json.dumps(result, indent=2) + "\n")
    partial.replace(RESULTS)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
