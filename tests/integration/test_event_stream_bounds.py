"""What one event stream may cost, whoever asks: access reviews, open streams, and a
re-check that a long replay of the event log cannot put off.

The attacks: any authenticated user (a pod's ServiceAccount token will do) opens
``GET /api/v1/events`` with ``Last-Event-ID: 0`` to replay the whole log, which asks
one SubjectAccessReview per namespace and kind it holds; opens hundreds of such
streams; or keeps a replay going so long that the once-a-minute re-check of the token
never comes. The reviews are counted where the API sends them.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp import ClientResponse

from dockyard.api import errors, keys
from dockyard.core import event_log, events
from dockyard.core.events import ObjectRef, RunEventData
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import ApiClient, Kubectl, StartApi, api_settings
from tests.integration.test_api_permission_fanout import CountingKube

pytestmark = pytest.mark.usefixtures("crds_installed", "platform_migrated")

REVIEWS = 3
FANOUT = 2
NAMESPACES = 20


def _completed(namespace: str, name: str) -> events.Event:
    ref = ObjectRef(kind="Backup", namespace=namespace, name=name, uid=str(uuid.uuid4()),
                    generation=1)  # fmt: skip
    return events.make(
        events.EventType.BACKUP_COMPLETED, RunEventData(object=ref, phase="Completed")
    )


async def _append(state: State, logged: list[events.Event]) -> int:
    """Append ``logged``; the log position just before them."""
    pool = await asyncpg.create_pool(api_settings(state).database_dsn(), min_size=1, max_size=1)
    try:
        before = await event_log.last_seq(pool)
        await event_log.append_now(pool, logged)
    finally:
        await pool.close()
    return before


def _viewer(kubectl: Kubectl, testbed: Testbed, namespace: str, ttl: int = 3600) -> tuple[str, str]:
    """A user who may watch the namespace's kinds, and a token of theirs."""
    user = f"viewer-{uuid.uuid4().hex[:6]}"
    kubectl("create", "rolebinding", user, "--clusterrole=dockyard-viewer", f"--user={user}",
            "-n", namespace)  # fmt: skip
    return user, testbed.user_token(user, [], ttl_seconds=ttl)


async def _open(client: ApiClient, token: str, **query: str) -> ClientResponse:
    headers = {"Authorization": f"Bearer {token}"}
    stream = await client.get("/api/v1/events", headers=headers, params=query)
    assert stream.status == 200, await stream.text()
    return stream


async def _ids_until(stream: ClientResponse, done: Callable[[list[str]], bool]) -> list[str]:
    """The ``id`` lines read until ``done`` says enough (or an error event comes)."""
    ids: list[str] = []
    while not done(ids):
        line = (await stream.content.readline()).decode()
        if line.startswith("id: "):
            ids.append(line[4:].strip())
        elif line.startswith("event: error") or line == "":
            break
    return ids


@pytest.mark.usefixtures("roles")
async def test_a_replay_asks_a_bounded_number_of_reviews_per_interval_and_loses_nothing(
    start_api: StartApi,
    testbed: Testbed,
    testbed_state: State,
    kubectl: Kubectl,
    namespace: str,
) -> None:
    interval = 3.0
    client = await start_api(
        authz_cache_ttl=0,
        authz_fanout_namespaces=FANOUT,
        stream_reviews=REVIEWS,
        stream_reauth_interval=interval,
    )
    authorizer = client.server.app[keys.AUTHORIZER]
    counter = CountingKube(authorizer.kube)
    authorizer.kube = counter
    _, token = _viewer(kubectl, testbed, namespace)
    # Events in many namespaces the caller may not watch, then one in its own.
    others = [f"zz-{uuid.uuid4().hex[:6]}-{i}" for i in range(NAMESPACES)]
    before = await _append(
        testbed_state, [_completed(ns, "theirs") for ns in others] + [_completed(namespace, "mine")]
    )

    counter.reset()
    opened = time.monotonic()
    stream = await _open(client, token, lastEventId=str(before))
    await asyncio.sleep(interval / 2)
    first_interval = counter.reviews
    ids = await asyncio.wait_for(_ids_until(stream, bool), timeout=60)
    took = time.monotonic() - opened
    stream.close()

    # Start: one cluster-wide review and FANOUT namespaces; the replay: one cluster-wide
    # review of Backups, then at most REVIEWS namespaces before it waits.
    assert first_interval <= 1 + FANOUT + 1 + REVIEWS, first_interval
    # ... and it goes on in the next intervals until the caller's own event, which
    # came after NAMESPACES others: nothing is lost, it only comes later.
    assert len(ids) == 1
    assert took >= interval * (NAMESPACES // (REVIEWS + 1))


@pytest.mark.usefixtures("roles")
async def test_a_user_holds_a_bounded_number_of_open_streams(
    start_api: StartApi, testbed: Testbed, kubectl: Kubectl, namespace: str
) -> None:
    client = await start_api(streams_per_user=2)
    user, token = _viewer(kubectl, testbed, namespace)
    held = [await _open(client, token, namespace=namespace) for _ in range(2)]

    refused = await client.get(
        "/api/v1/events",
        headers={"Authorization": f"Bearer {token}"},
        params={"namespace": namespace},
    )
    assert refused.status == 429
    assert refused.headers["Retry-After"] == "5"
    problem = await refused.json()
    assert problem["type"] == errors.TYPE_BASE + "too-many-requests"
    assert "DOCKYARD_STREAMS_PER_USER" in problem["detail"]
    # Another user is not held back by this one's streams.
    _, other = _viewer(kubectl, testbed, namespace)
    (await _open(client, other, namespace=namespace)).close()

    held[0].close()
    for _ in range(100):  # the server sees the client go at its next write
        if client.server.app[keys.STREAMS].count(user) < 2:
            break
        await asyncio.sleep(0.2)
    (await _open(client, token, namespace=namespace)).close()


@pytest.mark.usefixtures("roles")
async def test_a_long_replay_does_not_put_off_the_token_recheck(
    start_api: StartApi,
    testbed: Testbed,
    testbed_state: State,
    kubectl: Kubectl,
    namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The replay of a big log is made slow (a slow database: each batch of the log takes
    0.3 s), so that it lasts well past the token's life."""
    client = await start_api(auth_cache_ttl=1, authz_cache_ttl=1, stream_reauth_interval=1)
    lifetime = 5
    _, token = _viewer(kubectl, testbed, namespace, ttl=lifetime)
    before = await _append(testbed_state, [_completed(namespace, f"b{i}") for i in range(6000)])
    after: Callable[..., Awaitable[Any]] = event_log.after

    async def slow_after(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)
        return await after(*args, **kwargs)

    monkeypatch.setattr(event_log, "after", slow_after)
    opened = time.monotonic()
    stream = await _open(client, token, namespace=namespace, lastEventId=str(before))

    ids = await asyncio.wait_for(_ids_until(stream, lambda ids: len(ids) >= 6000), timeout=120)
    ended = time.monotonic() - opened

    # 60 batches would take 18 s: the stream ended with the token, long before the last.
    assert len(ids) < 6000
    assert ended < lifetime + 10
