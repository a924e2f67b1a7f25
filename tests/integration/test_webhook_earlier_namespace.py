"""A namespace's Webhook is delivered no event that happened before it was made, however
late it was logged: such an event may be an earlier namespace's of the same name, another
team's, held in the operator's memory through an outage of the platform database and
logged after the new namespace's Webhook started its cursor. On the test bed's platform
database, in a namespace made up for the test (no Webhook of the session's operator)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta
from typing import cast

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook as Signer

from dockyard.core import webhook_deliveries as store
from dockyard.core.kube import KubeClient
from dockyard.core.models.webhook import WebhookSpec
from dockyard.core.settings import Settings
from dockyard.operator.webhooks.dispatcher import Dispatcher
from dockyard.operator.webhooks.targets import Target

pytestmark = pytest.mark.usefixtures("platform_migrated")

_EVENT = """
INSERT INTO events (id, type, resource, namespace, name, body, occurred_at)
VALUES ($1, 'backup.completed', 'backups', $2, $3, '{}', $4)
"""


async def test_an_event_of_an_earlier_namespace_logged_late_is_not_delivered(
    platform_pool: asyncpg.Pool,
) -> None:
    pool, namespace = platform_pool, f"again-{uuid.uuid4().hex[:8]}"
    uid = f"uid-{namespace}"
    # Later than anything else in the shared log, so no other test's events interleave.
    created = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    spec = WebhookSpec.model_validate(
        {"url": "https://hooks.example/in", "events": ["*"],
         "secretRef": {"name": "hook", "key": "secret"}}
    )  # fmt: skip
    signer = Signer("whsec_" + base64.b64encode(b"k" * 32).decode())
    dispatcher = Dispatcher(cast(KubeClient, None), pool, Settings())
    dispatcher.targets[uid] = Target(
        uid, namespace, "hook", 1, spec, signer, everywhere=False, created=created
    )

    async def nothing(*_: object) -> None:
        return None

    dispatcher._claim = nothing  # type: ignore[method-assign,assignment]  # fan-out only
    dispatcher._show = nothing  # type: ignore[method-assign,assignment]
    after, earlier = f"evt_{uuid.uuid4().hex}", f"evt_{uuid.uuid4().hex}"
    try:
        await store.start(pool, uid, created)
        await pool.execute(_EVENT, after, namespace, "after", created + timedelta(seconds=1))
        # The earlier namespace's: it happened an hour before this Webhook was made, and
        # reached the log only now.
        await pool.execute(_EVENT, earlier, namespace, "gone", created - timedelta(hours=1))

        await dispatcher.run_once()

        rows = await pool.fetch(
            "SELECT event_id FROM webhook_deliveries WHERE webhook_uid = $1", uid
        )
        assert [r["event_id"] for r in rows] == [after]
    finally:
        await pool.execute("DELETE FROM webhook_deliveries WHERE webhook_uid = $1", uid)
        await pool.execute("DELETE FROM webhook_cursors WHERE webhook_uid = $1", uid)
        await pool.execute("DELETE FROM events WHERE namespace = $1", namespace)
