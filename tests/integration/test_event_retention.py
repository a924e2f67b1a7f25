"""Retention of the event log and of webhook deliveries: what is past
DOCKYARD_EVENT_RETENTION_DAYS and finished goes; what a delivery still waits for stays;
a deleted Webhook's deliveries go at once, or with the next retention pass when the
database was out or the Webhook was deleted while no operator watched; an event
retention purged is not logged again when the operator lists its object. (That the
runtime role deletes from the log only through events_purge_before, migrations 0007 and
0013, is test_audit_roles.py's.)"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from dockyard.core import event_log
from dockyard.core import webhook_deliveries as store
from dockyard.core.kube import KubeClient, KubeConfig
from dockyard.core.transitions import announced
from dockyard.operator.events.emitter import Emitter
from dockyard.operator.webhooks.dispatcher import Dispatcher
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl, api_settings

pytestmark = pytest.mark.usefixtures("platform_migrated")

NOW = datetime.now(UTC)


@pytest.fixture
def pool(platform_pool: asyncpg.Pool) -> asyncpg.Pool:
    return platform_pool


async def _event(conn: asyncpg.Connection, namespace: str, age: timedelta) -> int:
    seq: int = await conn.fetchval(
        "INSERT INTO events (id, type, resource, namespace, name, occurred_at, body) "
        "VALUES ($1, 'backup.completed', 'backups', $2, 'b', $3, $4::jsonb) RETURNING seq",
        f"evt_{uuid.uuid4().hex}",
        namespace,
        NOW - age,
        json.dumps({"type": "backup.completed"}),
    )
    return seq


async def _delivery(
    conn: asyncpg.Connection, webhook: str, namespace: str, seq: int, state: str, age: timedelta
) -> None:
    await conn.execute(
        "INSERT INTO webhook_deliveries (webhook_uid, namespace, webhook, event_seq, event_id, "
        "state, due_since, delivered_at) SELECT $1, $2, 'hook', $3, id, $4::text, "
        "$5::timestamptz, CASE WHEN $4::text = 'delivered' THEN $5::timestamptz END "
        "FROM events WHERE seq = $3",
        webhook, namespace, seq, state, NOW - age,
    )  # fmt: skip


async def test_old_finished_rows_go_and_what_a_delivery_waits_for_stays(
    pool: asyncpg.Pool,
) -> None:
    namespace, webhook = f"retention-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    old, recent = timedelta(days=40), timedelta(days=1)
    async with pool.acquire() as conn:
        delivered = await _event(conn, namespace, old)
        dead = await _event(conn, namespace, old)
        waiting = await _event(conn, namespace, old)
        await _event(conn, namespace, old)  # no Webhook wanted it
        fresh = await _event(conn, namespace, recent)
        await _delivery(conn, webhook, namespace, delivered, "delivered", old)
        await _delivery(conn, webhook, namespace, dead, "dead", old)
        await _delivery(conn, webhook, namespace, waiting, "pending", old)
        await _delivery(conn, webhook, namespace, fresh, "delivered", recent)

    await store.purge(pool, NOW - timedelta(days=30))

    async with pool.acquire() as conn:
        events = await conn.fetch("SELECT seq FROM events WHERE namespace = $1", namespace)
        deliveries = await conn.fetch(
            "SELECT event_seq, state FROM webhook_deliveries WHERE webhook_uid = $1", webhook
        )
    assert sorted(r["seq"] for r in events) == [waiting, fresh]  # the others were old and done
    assert sorted((r["event_seq"], r["state"]) for r in deliveries) == [
        (waiting, "pending"),
        (fresh, "delivered"),
    ]


async def test_events_younger_than_a_week_cannot_be_purged(pool: asyncpg.Pool) -> None:
    # Nor younger than the retention `dockyard migrate` wrote (migration 0013): 7 days
    # or more, whichever migrate ran on the test bed last.
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="cannot be purged"):
        await store.purge(pool, NOW - timedelta(days=3))


def _backup(namespace: str, completed: datetime) -> dict[str, Any]:
    return {
        "kind": "Backup",
        "metadata": {"namespace": namespace, "name": "nightly", "uid": str(uuid.uuid4()),
                     "generation": 1},
        "spec": {"environmentRef": {"name": "web"}},
        "status": {"phase": "Completed", "size": 1,
                   "completedAt": completed.strftime("%Y-%m-%dT%H:%M:%SZ")},
    }  # fmt: skip


async def test_a_purged_event_is_not_logged_again_when_a_restarted_operator_lists_it(
    pool: asyncpg.Pool,
) -> None:
    """Retention purged the event of a backup that completed 40 days ago; the operator's
    listing at start-up shows the Backup again: no new row, no delivery again. A backup
    that completed while no operator ran is logged."""
    namespace = f"relog-{uuid.uuid4().hex[:8]}"
    old, recent = _backup(namespace, NOW - timedelta(days=40)), _backup(namespace, NOW)
    (purged,) = announced("MODIFIED", old)
    await event_log.append_now(pool, [purged])  # logged when it happened
    async with pool.acquire() as conn:  # as retention's function would, 10 days later
        await conn.execute("DELETE FROM events WHERE id = $1", purged.id)
    emitter = Emitter(pool)  # a restart: it remembers nothing
    try:
        await emitter.observe(None, old)
        await emitter.observe(None, recent)
    finally:
        await emitter.close()
    async with pool.acquire() as conn:
        logged = await conn.fetch("SELECT id FROM events WHERE namespace = $1", namespace)
    assert [r["id"] for r in logged] == [announced(None, recent)[0].id]


async def test_a_deleted_webhooks_deliveries_and_cursor_are_forgotten(pool: asyncpg.Pool) -> None:
    namespace, webhook, other = (
        f"forget-{uuid.uuid4().hex[:8]}",
        str(uuid.uuid4()),
        str(uuid.uuid4()),
    )
    async with pool.acquire() as conn:
        seq = await _event(conn, namespace, timedelta(0))
        for uid in (webhook, other):
            await _delivery(conn, uid, namespace, seq, "pending", timedelta(0))
        await store.start(pool, webhook, NOW)
    await store.forget(pool, webhook)
    async with pool.acquire() as conn:
        left = await conn.fetch(
            "SELECT webhook_uid FROM webhook_deliveries WHERE event_seq = $1", seq
        )
        cursor = await conn.fetchval(
            "SELECT count(*) FROM webhook_cursors WHERE webhook_uid = $1", webhook
        )
    assert [r["webhook_uid"] for r in left] == [other]
    assert cursor == 0


async def test_a_deleted_webhook_the_database_missed_is_forgotten_by_the_next_pass(
    pool: asyncpg.Pool, testbed_state: State
) -> None:
    namespace, webhook = f"forget-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    async with pool.acquire() as conn:
        seq = await _event(conn, namespace, timedelta(0))
        await _delivery(conn, webhook, namespace, seq, "pending", timedelta(0))
    settings = api_settings(testbed_state)
    kube = KubeClient.connect(KubeConfig.from_kubeconfig(Path(testbed_state.kubeconfig)))
    # The database is out when the Webhook is deleted: a closed pool refuses every call.
    out = await asyncpg.create_pool(settings.database_dsn(), min_size=0, max_size=1)
    await out.close()
    try:
        dispatcher = Dispatcher(kube, out, settings)
        await dispatcher.remove(webhook)
        async with pool.acquire() as conn:
            kept = await conn.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE webhook_uid = $1", webhook
            )
        assert kept == 1

        dispatcher.retention.pool = pool  # the database is back: the next pass forgets it
        await dispatcher.retention.forget_deleted()
    finally:
        await kube.close()
    async with pool.acquire() as conn:
        left = await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_uid = $1", webhook
        )
    assert left == 0


@pytest.mark.usefixtures("crds_installed")
async def test_a_webhook_deleted_while_no_operator_watched_is_forgotten_by_a_pass(
    pool: asyncpg.Pool, testbed_state: State, kubectl: Kubectl, namespace: str
) -> None:
    """Its DELETED event never came; the pass finds it gone from the apiserver and
    forgets its deliveries and cursor, which would otherwise be claimed and put back
    for ever, taking the places of the namespace's live Webhooks' deliveries."""
    manifest = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": "live", "namespace": namespace},
        "spec": {"url": "https://hooks.example/in", "events": ["*"],
                 "secretRef": {"name": "live-signing", "key": "secret"}},
    }  # fmt: skip
    kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest))
    live = kubectl("get", "webhook", "live", "-n", namespace, "-o", "jsonpath={.metadata.uid}")
    live_uid, gone_uid = live.stdout.strip(), str(uuid.uuid4())
    async with pool.acquire() as conn:
        seq = await _event(conn, namespace, timedelta(0))
        for uid in (live_uid, gone_uid):
            await _delivery(conn, uid, namespace, seq, "pending", timedelta(0))
            await store.start(pool, uid, NOW)
    settings = api_settings(testbed_state)
    kube = KubeClient.connect(KubeConfig.from_kubeconfig(Path(testbed_state.kubeconfig)))
    try:
        retention = Dispatcher(kube, pool, settings).retention
        await retention.find_orphans()  # a suspect, then (an hour later) forgotten
        assert gone_uid in retention.suspects
        await retention.find_orphans()
        assert gone_uid in retention.unforgotten
        assert live_uid not in retention.unforgotten
        # Only this test's: other suites' rows of made-up uids are theirs to keep.
        retention.unforgotten &= {gone_uid, live_uid}
        await retention.forget_deleted()
    finally:
        await kube.close()
    async with pool.acquire() as conn:
        deliveries = await conn.fetch(
            "SELECT webhook_uid FROM webhook_deliveries WHERE event_seq = $1", seq
        )
        cursors = await conn.fetch(
            "SELECT webhook_uid FROM webhook_cursors WHERE webhook_uid = any($1::text[])",
            [live_uid, gone_uid],
        )
    assert [r["webhook_uid"] for r in deliveries] == [live_uid]
    assert [r["webhook_uid"] for r in cursors] == [live_uid]
