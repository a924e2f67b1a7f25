"""Listing a Webhook's deliveries a page at a time (``GET .../webhooks/{name}/deliveries``):
the query with migration 0012's indexes against the same query on the indexes before it,
in the same run.

Into a fresh database on the test bed's PostgreSQL (created here, dropped at the end),
the platform migrations are applied and ``--deliveries`` deliveries loaded for one
Webhook (a dead letter every 500th, the rest delivered) and as many for 4 others,
interleaved.
The peer is a copy of the table with only the index migration 0012 replaced
(``(webhook_uid, state)``): the same rows, the same statement. Each round reads, call
by call, the first page (20), a page from the middle of the history (the cursor of a
client that went that far), and the first page of the dead letters (``?state=dead``),
``--iterations`` times each, through ``DeliveryHistory.page`` and through the peer.

The figure: the p95 of a page (held to the constitution's 100 ms for a database query),
over every kind of page.

Run: ``.venv/bin/python -m bench.webhook_history [--deliveries 100000] [--iterations 50]``.
Writes ``bench/results/webhook_history.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.common import Figure, Spread, percentile, scratch_database, write_result
from dockyard.api.delivery_history import (
    _SQL_ANY,
    _SQL_STATE,
    FIRST,
    DeliveryHistory,
    DeliveryState,
)

WEBHOOKS = 5
TARGET = "uid-0"
LIMIT = 20
BOUND_MS = 100.0
ROUNDS = 3

_LOAD_EVENTS = """
INSERT INTO events (id, type, resource, namespace, name, body)
SELECT 'evt_' || md5(g::text), 'backup.completed', 'backups', 'team', 'b' || g, '{}'
FROM generate_series(1, $1::int) AS g
"""
# Round-robin over the Webhooks, so that the target's rows are spread over the table.
_LOAD_DELIVERIES = """
INSERT INTO webhook_deliveries (webhook_uid, namespace, webhook, event_seq, event_id, state,
    attempts, last_status, delivered_at)
SELECT 'uid-' || (e.seq % $1), 'team', 'hook', e.seq, e.id,
       CASE WHEN e.seq % 500 = 0 THEN 'dead' ELSE 'delivered' END, 1, 204, now()
FROM events e
"""
_PEER_TABLE = """
CREATE TABLE peer_deliveries (LIKE webhook_deliveries INCLUDING DEFAULTS);
INSERT INTO peer_deliveries SELECT * FROM webhook_deliveries;
ALTER TABLE peer_deliveries ADD PRIMARY KEY (id);
CREATE INDEX peer_deliveries_webhook_idx ON peer_deliveries (webhook_uid, state);
"""
# The very statements the API runs, on the copy.
_PEER_ANY = _SQL_ANY.replace("FROM webhook_deliveries d", "FROM peer_deliveries d")
_PEER_STATE = _SQL_STATE.replace("FROM webhook_deliveries d", "FROM peer_deliveries d")

Page = Callable[[int, DeliveryState | None], Awaitable[int]]


async def _round(ours: Page, peer: Page, middle: int, iterations: int) -> dict[str, Any]:
    times: dict[str, list[float]] = {"dockyard": [], "peer": []}
    cases = ((FIRST, None), (middle, None), (FIRST, DeliveryState.DEAD))
    for _ in range(iterations):
        for below, state in cases:
            for side, page in (("dockyard", ours), ("peer", peer)):
                started = time.perf_counter()
                shown = await page(below, state)
                times[side].append(time.perf_counter() - started)
                if shown != LIMIT:
                    raise RuntimeError(f"{side} listed {shown} deliveries, not {LIMIT}")
    return {f"{side}_p95_ms": percentile(t, 0.95) * 1000 for side, t in times.items()}


async def _run(deliveries: int, iterations: int) -> dict[str, Any]:
    async with scratch_database("history") as (pool, _):
        started = time.perf_counter()
        await pool.execute(_LOAD_EVENTS, deliveries * WEBHOOKS, timeout=900)
        await pool.execute(_LOAD_DELIVERIES, WEBHOOKS, timeout=900)
        await pool.execute(_PEER_TABLE, timeout=900)
        await pool.execute("VACUUM ANALYZE events, webhook_deliveries, peer_deliveries")
        print(f"loaded in {time.perf_counter() - started:.1f} s", flush=True)
        history = DeliveryHistory(pool)
        middle = int(
            await pool.fetchval(
                "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY id) FROM webhook_deliveries"
                " WHERE webhook_uid = $1",
                TARGET,
            )
        )

        async def ours(below: int, state: DeliveryState | None) -> int:
            return len((await history.page(TARGET, below=below, limit=LIMIT, state=state)).items)

        async def peer(below: int, state: DeliveryState | None) -> int:
            if state is None:
                rows = await pool.fetch(_PEER_ANY, TARGET, below, LIMIT + 1)
            else:
                rows = await pool.fetch(_PEER_STATE, TARGET, below, LIMIT + 1, state)
            return len(rows[:LIMIT])

        for _ in range(3):  # warm both plans up
            await _round(ours, peer, middle, 1)
        rounds = []
        for n in range(ROUNDS):
            rounds.append(await _round(ours, peer, middle, iterations))
            print(f"  round {n + 1}: {rounds[-1]}", flush=True)
    mine = Spread(tuple(r["dockyard_p95_ms"] for r in rounds))
    theirs = Spread(tuple(r["peer_p95_ms"] for r in rounds))
    figures = [
        Figure(
            f"a page of a webhook's deliveries (of {deliveries:,}), p95",
            round(mine.median, 3),
            round(theirs.median, 3),
            round(mine.median / theirs.median, 3),
            f"< {BOUND_MS:g} ms",
            mine.median < BOUND_MS,
            "ms",
            mine.as_dict()["spread"],
        )
    ]
    result = {
        "benchmark": "webhook delivery history pages vs the indexes before migration 0012",
        "deliveries_per_webhook": deliveries,
        "webhooks": WEBHOOKS,
        "page": LIMIT,
        "iterations": iterations,
        "rounds": rounds,
    }
    write_result("webhook_history", result, figures)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(_run(args.deliveries, args.iterations))


if __name__ == "__main__":
    main()
