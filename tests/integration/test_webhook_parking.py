"""Time a delivery spends parked, its Webhook suspended or not Ready, does not count
toward ``DOCKYARD_WEBHOOK_DEAD_LETTER_AFTER``: once the Webhook is resumed or fixed, a
failed attempt is retried after a backoff, not given up. On the test bed's platform
database, in a namespace made up for the test: it has no Webhook, so the session's
operator (which claims only for namespaces it has Webhooks in) never takes these rows.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import cast

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook as Signer

from dockyard.core import webhook_deliveries as store
from dockyard.core.kube import KubeClient
from dockyard.core.models.webhook import WebhookSpec
from dockyard.core.settings import Settings
from dockyard.operator.webhooks.dispatcher import Dispatcher
from dockyard.operator.webhooks.failures import DeliveryFailed
from dockyard.operator.webhooks.targets import Target

pytestmark = pytest.mark.usefixtures("platform_migrated")

DAY = 86_400.0

# One event and its delivery: attempted once two days ago, failed, and waiting since.
_WAITING = """
WITH made AS (
    INSERT INTO events (id, type, resource, namespace, name, body)
    VALUES ('evt_' || md5($1), 'backup.completed', 'backups', $1, 'b1', '{}')
    RETURNING seq, id, namespace
)
INSERT INTO webhook_deliveries (webhook_uid, namespace, webhook, event_seq, event_id,
    attempts, due_since, next_at, last_status, last_error)
SELECT 'uid-' || namespace, namespace, 'hook', seq, id, 1, now() - interval '2 days',
    now() - interval '2 days', 503, 'HTTP 503'
FROM made
"""


@pytest.fixture
def pool(platform_pool: asyncpg.Pool) -> asyncpg.Pool:
    return platform_pool


@pytest.fixture
async def namespace(pool: asyncpg.Pool) -> AsyncIterator[str]:
    name = f"parked-{uuid.uuid4().hex[:8]}"
    await pool.execute(_WAITING, name)
    yield name
    await pool.execute("DELETE FROM webhook_deliveries WHERE namespace = $1", name)
    await pool.execute("DELETE FROM events WHERE namespace = $1", name)


def _dispatcher(pool: asyncpg.Pool, namespace: str, *, suspend: bool) -> Dispatcher:
    """A dispatcher with the made-up namespace's Webhook, whose receiver answers 503."""
    dispatcher = Dispatcher(cast(KubeClient, None), pool, Settings(webhook_dead_letter_after=DAY))
    spec = WebhookSpec.model_validate(
        {"url": "https://hooks.example/in", "events": ["*"], "suspend": suspend,
         "secretRef": {"name": "hook", "key": "secret"}}
    )  # fmt: skip
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    target = Target(f"uid-{namespace}", namespace, "hook", 1, spec, Signer(secret),
                    everywhere=False)  # fmt: skip
    dispatcher.targets[target.uid] = target

    async def post(_target: Target, _delivery: store.Claimed) -> int:
        raise DeliveryFailed(503)

    dispatcher._post = post  # type: ignore[method-assign,assignment]
    return dispatcher


async def _pass(dispatcher: Dispatcher, namespace: str) -> None:
    """Claim the namespace's due delivery and deliver it, as a dispatcher's pass does."""
    [delivery] = await store.claim(dispatcher.pool, [namespace], 10, 60.0)
    await dispatcher._deliver(delivery)


async def _state(pool: asyncpg.Pool, namespace: str) -> tuple[str, bool]:
    """The delivery's state, and whether its next attempt is later (a backoff)."""
    row = await pool.fetchrow(
        "SELECT state, next_at > now() AS later FROM webhook_deliveries WHERE namespace = $1",
        namespace,
    )
    assert row is not None
    return row["state"], row["later"]


async def test_a_delivery_parked_while_its_webhook_was_suspended_is_retried_once_resumed(
    pool: asyncpg.Pool, namespace: str
) -> None:
    await _pass(_dispatcher(pool, namespace, suspend=True), namespace)  # parked
    assert await _state(pool, namespace) == ("pending", True)

    await store.wake(pool, f"uid-{namespace}")  # resumed (``Dispatcher.check``)
    await _pass(_dispatcher(pool, namespace, suspend=False), namespace)

    assert await _state(pool, namespace) == ("pending", True)


async def test_a_delivery_parked_while_its_webhook_was_not_ready_is_retried_once_fixed(
    pool: asyncpg.Pool, namespace: str
) -> None:
    uid = f"uid-{namespace}"
    await store.park(pool, uid, store.NOT_READY, 300.0)  # refused (``Dispatcher.check``)
    await store.wake(pool, uid)  # fixed
    await _pass(_dispatcher(pool, namespace, suspend=False), namespace)

    assert await _state(pool, namespace) == ("pending", True)


async def test_a_delivery_failing_all_along_is_still_given_up(
    pool: asyncpg.Pool, namespace: str
) -> None:
    await store.wake(pool, f"uid-{namespace}")  # a check that finds nothing parked
    await _pass(_dispatcher(pool, namespace, suspend=False), namespace)

    state, _ = await _state(pool, namespace)
    assert state == "dead"


async def test_a_not_ready_webhooks_deliveries_wait_parked_and_their_claims_count_no_attempt(
    pool: asyncpg.Pool, namespace: str
) -> None:
    uid = f"uid-{namespace}"
    await store.park(pool, uid, store.NOT_READY, 300.0)  # refused (``Dispatcher.check``)

    # Parked: no pass claims it, so it takes no live Webhook's place in a batch.
    assert await store.claim(pool, [namespace], 10, 60.0) == []
    await pool.execute(
        "UPDATE webhook_deliveries SET next_at = now() WHERE namespace = $1", namespace
    )  # five minutes on, still not Ready
    dispatcher = _dispatcher(pool, namespace, suspend=False)
    dispatcher.targets.clear()
    dispatcher._refused.add(uid)
    await _pass(dispatcher, namespace)

    row = await pool.fetchrow(
        "SELECT attempts, last_error, next_at > now() + interval '4 minutes' AS parked"
        " FROM webhook_deliveries WHERE namespace = $1",
        namespace,
    )
    assert row is not None
    assert (row["attempts"], row["last_error"], row["parked"]) == (1, store.NOT_READY, True)


async def test_a_webhook_fixed_between_a_claim_and_its_parking_is_not_parked_again(
    pool: asyncpg.Pool, namespace: str
) -> None:
    uid = f"uid-{namespace}"
    await store.park(pool, uid, store.NOT_READY, 0.0)  # refused, due for a look now
    [claimed] = await store.claim(pool, [namespace], 10, 60.0)
    await store.wake(pool, uid)  # ``check`` found it fixed meanwhile

    assert await store.park_one(pool, claimed, 300.0, store.NOT_READY) is False
    row = await pool.fetchrow(
        "SELECT next_at < now() + interval '2 minutes' AS soon FROM webhook_deliveries"
        " WHERE namespace = $1",
        namespace,
    )
    assert row is not None
    assert row["soon"]  # due again after the claim's lease, not parked five minutes
