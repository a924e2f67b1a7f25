"""A stopping dispatcher lets its deliveries in flight land, and lets go of what it had to
cut short, on the test bed's platform database and a receiver on loopback.

Before, a stop cancelled every delivery in flight: each waited out its claim's lease
(twice ``DOCKYARD_WEBHOOK_TIMEOUT``, plus 5 s) before any replica could make it, and counted as
an attempt. The namespaces are made up for the test and have no Webhook, so the
session's operator never takes these rows.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import asyncpg
import pytest
from aiohttp import web
from standardwebhooks.webhooks import Webhook as Signer

from dockyard.core import webhook_deliveries as store
from dockyard.core.kube import KubeClient, load_config
from dockyard.core.models.webhook import WebhookSpec
from dockyard.core.settings import Settings
from dockyard.operator.webhooks.dispatcher import Dispatcher
from dockyard.operator.webhooks.targets import Target
from dockyard.testbed.cluster import State

pytestmark = pytest.mark.usefixtures("platform_migrated")

_LOAD = """
WITH made AS (
    INSERT INTO events (id, type, resource, namespace, name, body)
    VALUES ('evt_' || md5($1), 'backup.completed', 'backups', $1, 'b', '{}')
    RETURNING seq, id, namespace
)
INSERT INTO webhook_deliveries (webhook_uid, namespace, webhook, event_seq, event_id)
SELECT 'uid-' || namespace, namespace, 'hook', seq, id FROM made
"""
_ROW = "SELECT state, attempts, next_at <= now() AS due FROM webhook_deliveries WHERE id = $1"


class _Receiver:
    """A receiver on loopback that answers 204 after ``delay`` seconds (or never)."""

    def __init__(self) -> None:
        self.delay: float | None = 0.0
        self.received = 0
        self.started = asyncio.Event()

    async def handle(self, _request: web.Request) -> web.Response:
        self.received += 1
        self.started.set()
        if self.delay is None:
            await asyncio.Event().wait()
        await asyncio.sleep(self.delay or 0.0)
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[_Receiver, str]]:
    target = _Receiver()
    app = web.Application()
    app.router.add_post("/hook", target.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield target, f"http://127.0.0.1:{port}/hook"
    await runner.cleanup()


@pytest.fixture
async def namespace(platform_pool: asyncpg.Pool) -> AsyncIterator[str]:
    name = f"landing-{uuid.uuid4().hex[:8]}"
    await platform_pool.execute(_LOAD, name)
    yield name
    await platform_pool.execute("DELETE FROM webhook_deliveries WHERE namespace = $1", name)
    await platform_pool.execute("DELETE FROM events WHERE namespace = $1", name)


@pytest.fixture
async def dispatcher(
    platform_pool: asyncpg.Pool,
    receiver: tuple[_Receiver, str],
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Dispatcher]:
    """A started dispatcher that makes no passes of its own: the test claims for it."""

    async def no_passes(_self: Any) -> None:
        return None

    monkeypatch.setattr(Dispatcher, "_run", no_passes)
    settings = Settings(
        webhook_allow_http=True, webhook_allowed_networks=["127.0.0.0/8"], webhook_timeout=5.0
    )
    made = Dispatcher(cast(KubeClient, None), platform_pool, settings)
    spec = WebhookSpec.model_validate(
        {"url": receiver[1], "events": ["*"], "secretRef": {"name": "hook", "key": "secret"}}
    )
    signer = Signer("whsec_" + base64.b64encode(b"k" * 32).decode())
    uid = f"uid-{namespace}"
    made.targets[uid] = Target(uid, namespace, "hook", 1, spec, signer, False)
    await made.start()
    yield made
    await made.close()


async def _launch(dispatcher: Dispatcher, namespace: str) -> store.Claimed:
    [claimed] = await store.claim(dispatcher.pool, [namespace], 10, 60.0)
    dispatcher.flights.launch(namespace, dispatcher._attempt(claimed))
    return claimed


async def test_a_stop_lets_a_delivery_in_flight_land(
    dispatcher: Dispatcher, receiver: tuple[_Receiver, str], namespace: str
) -> None:
    target, _ = receiver
    target.delay = 0.5
    claimed = await _launch(dispatcher, namespace)
    await asyncio.wait_for(target.started.wait(), 5)

    await dispatcher.close()

    row = await dispatcher.pool.fetchrow(_ROW, claimed.id)
    assert (row["state"], row["attempts"]) == ("delivered", 1)
    assert target.received == 1


async def test_a_delivery_cut_short_is_due_again_at_once_and_no_attempt(
    dispatcher: Dispatcher, receiver: tuple[_Receiver, str], namespace: str
) -> None:
    target, _ = receiver
    target.delay = None  # the receiver never answers: only a stop ends the attempt
    claimed = await _launch(dispatcher, namespace)
    await asyncio.wait_for(target.started.wait(), 5)
    row = await dispatcher.pool.fetchrow(_ROW, claimed.id)
    assert (row["state"], row["attempts"], row["due"]) == ("pending", 1, False)  # leased

    await dispatcher.flights.cancel()  # what a stop does once the landing time is up

    row = await dispatcher.pool.fetchrow(_ROW, claimed.id)
    assert (row["state"], row["attempts"], row["due"]) == ("pending", 0, True)
    # Any replica claims it now, rather than after the lease's 60 s.
    [again] = await store.claim(dispatcher.pool, [namespace], 10, 60.0)
    assert (again.id, again.attempt) == (claimed.id, 1)


async def test_a_claim_whose_result_was_recorded_is_not_let_go(
    platform_pool: asyncpg.Pool, namespace: str
) -> None:
    [claimed] = await store.claim(platform_pool, [namespace], 10, 60.0)
    await store.retry(platform_pool, claimed.id, 30.0, 503, "the receiver answered 503")

    assert await store.release(platform_pool, claimed) is False

    row = await platform_pool.fetchrow(_ROW, claimed.id)
    assert (row["state"], row["attempts"], row["due"]) == ("pending", 1, False)


async def test_a_stop_during_a_pass_starts_what_the_pass_claimed(
    platform_pool: asyncpg.Pool,
    receiver: tuple[_Receiver, str],
    namespace: str,
    testbed_state: State,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pass claims (the rows are leased as the statement commits), and the stop
    comes before it has started them: it lets the pass end, so they go out now rather
    than after their lease. The window is widened to half a second here."""
    claim, claimed = store.claim, asyncio.Event()

    async def slow_claim(*args: Any, **kwargs: Any) -> list[store.Claimed]:
        taken = await claim(*args, **kwargs)
        if taken:
            claimed.set()
            await asyncio.sleep(0.5)
        return taken

    monkeypatch.setattr(store, "claim", slow_claim)
    kube = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
    settings = Settings(webhook_allow_http=True, webhook_allowed_networks=["127.0.0.0/8"])
    made = Dispatcher(kube, platform_pool, settings)
    spec = WebhookSpec.model_validate(
        {"url": receiver[1], "events": ["*"], "secretRef": {"name": "hook", "key": "secret"}}
    )
    signer = Signer("whsec_" + base64.b64encode(b"k" * 32).decode())
    uid = f"uid-{namespace}"
    made.targets[uid] = Target(uid, namespace, "hook", 1, spec, signer, False)
    try:
        await made.start()
        await asyncio.wait_for(claimed.wait(), 10)

        await made.close()
    finally:
        await kube.close()

    state = await platform_pool.fetchval(
        "SELECT state FROM webhook_deliveries WHERE webhook_uid = $1", uid
    )
    assert state == "delivered"
    assert receiver[0].received == 1
