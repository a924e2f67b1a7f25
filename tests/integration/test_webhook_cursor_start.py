"""Where a new Webhook's cursor starts in the event log, on the test bed's platform
database: before every event that happened after the Webhook was created, even one
logged after an event that happened before it (held through an outage)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from dockyard.core import webhook_deliveries as store

pytestmark = pytest.mark.usefixtures("platform_migrated")

_EVENT = """
INSERT INTO events (id, type, resource, namespace, name, body, occurred_at)
VALUES ($1, 'backup.completed', 'backups', $2, $3, '{}', $4) RETURNING seq
"""


@pytest.fixture
def pool(platform_pool: asyncpg.Pool) -> asyncpg.Pool:
    return platform_pool


async def test_an_event_logged_late_does_not_move_a_new_webhooks_start_past_a_later_one(
    pool: asyncpg.Pool,
) -> None:
    namespace, uid = f"cursor-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    # Later than anything else in the shared log, so no other test's events interleave.
    created = datetime.now(UTC) + timedelta(days=1)
    try:
        after = await pool.fetchval(
            _EVENT, f"evt_{uuid.uuid4().hex}", namespace, "after", created + timedelta(seconds=1)
        )
        # Happened before the Webhook was created, logged after the one above.
        late = await pool.fetchval(
            _EVENT, f"evt_{uuid.uuid4().hex}", namespace, "late", created - timedelta(seconds=1)
        )
        assert late > after

        await store.start(pool, uid, created)

        cursor = await pool.fetchval("SELECT seq FROM webhook_cursors WHERE webhook_uid = $1", uid)
        assert cursor == after - 1  # the event that happened after it is delivered
    finally:
        await pool.execute("DELETE FROM webhook_cursors WHERE webhook_uid = $1", uid)
        await pool.execute("DELETE FROM events WHERE namespace = $1", namespace)
