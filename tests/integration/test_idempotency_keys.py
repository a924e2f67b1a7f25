"""Idempotency keys in the real platform database: expired ones are purged, and a create
that failed leaves its key free, so a retry with the same key runs again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from dockyard.api import keys
from dockyard.api.errors import Problem
from dockyard.api.idempotency import IN_FLIGHT, TTL, Claim, IdempotencyStore, Replay
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import Kubectl

Client = TestClient[Any, Any]
pytestmark = pytest.mark.usefixtures("crds_installed")


@pytest.fixture
async def db(testbed_state: State) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(testbed_state.database_url)
    yield conn
    await conn.close()


@pytest.fixture
def developer(testbed: Testbed, kubectl: Kubectl, namespace: str, roles: None) -> dict[str, str]:
    user = f"dev-{uuid.uuid4().hex[:6]}"
    kubectl(
        "create", "rolebinding", "dev", "--clusterrole=dockyard-developer",
        f"--user={user}", "-n", namespace,
    )  # fmt: skip
    return {"Authorization": f"Bearer {testbed.user_token(user, [])}"}


def _environment(name: str, tier: str = "development", **spec: object) -> dict[str, object]:
    return {"metadata": {"name": name}, "spec": {"tier": tier, "image": "shop:1.0", **spec}}


def _policy(name: str, **spec: object) -> dict[str, object]:
    return {
        "metadata": {"name": name},
        "spec": {"targetRef": {"name": "shop"}, "minReplicas": 2, "maxReplicas": 6, **spec},
    }


async def test_expired_keys_are_purged(
    client: Client, db: asyncpg.Connection, developer: dict[str, str], namespace: str
) -> None:
    stale = f"gone-{uuid.uuid4().hex[:8]}"
    await db.executemany(
        "INSERT INTO idempotency_keys (actor, key, method, path, request_hash, response_status,"
        " created_at, expires_at) VALUES ($1, $2, 'POST', '/x', 'h', 201,"
        " now() - interval '2 days', now() - interval '1 day')",
        [(stale, f"k{i}") for i in range(20)],
    )
    headers = {**developer, "Idempotency-Key": f"key-{uuid.uuid4()}"}
    created = await client.post(
        f"/api/v1/namespaces/{namespace}/environments", json=_environment("shop"), headers=headers
    )
    assert created.status == 201, await created.text()
    # Another caller's expired keys went with this write: nothing waits for their reuse.
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys WHERE actor = $1", stale) == 0


async def test_a_create_refused_as_invalid_can_be_retried_with_the_same_key(
    client: Client, developer: dict[str, str], namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/scalingpolicies"
    headers = {**developer, "Idempotency-Key": f"key-{uuid.uuid4()}"}
    invalid = await client.post(base, json=_policy("shop", maxReplicas="many"), headers=headers)
    assert invalid.status == 422, await invalid.text()
    fixed = await client.post(base, json=_policy("shop"), headers=headers)
    assert fixed.status == 201, await fixed.text()
    assert "Idempotency-Replayed" not in fixed.headers


async def test_a_create_refused_by_the_apiserver_can_be_retried_with_the_same_key(
    client: Client, developer: dict[str, str], namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/environments"
    headers = {**developer, "Idempotency-Key": f"key-{uuid.uuid4()}"}
    # Production needs two replicas: a CEL rule only the apiserver checks.
    refused = await client.post(base, json=_environment("prod", "production", replicas=1),
                                headers=headers)  # fmt: skip
    assert refused.status == 422, await refused.text()
    fixed = await client.post(base, json=_environment("prod", "production", replicas=2),
                              headers=headers)  # fmt: skip
    assert fixed.status == 201, await fixed.text()


async def test_a_create_that_never_reached_the_apiserver_does_not_hold_its_key(
    client: Client, developer: dict[str, str], namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = f"/api/v1/namespaces/{namespace}/environments"
    headers = {**developer, "Idempotency-Key": f"key-{uuid.uuid4()}"}
    kube = client.app[keys.KUBE]
    real_create = kube.create

    async def unreachable(*args: Any, **kwargs: Any) -> dict[str, Any]:
        if "as_caller" in kwargs:  # the create; not the API's own reviews
            raise aiohttp.ClientConnectionError("connection reset")
        return await real_create(*args, **kwargs)

    monkeypatch.setattr(kube, "create", unreachable)
    failed = await client.post(base, json=_environment("shop"), headers=headers)
    assert failed.status >= 500, await failed.text()
    monkeypatch.setattr(kube, "create", real_create)
    retried = await client.post(base, json=_environment("shop"), headers=headers)
    assert retried.status == 201, await retried.text()  # not 409 "still in progress"


@pytest.mark.usefixtures("roles")
async def test_an_account_made_again_under_its_name_is_not_answered_with_the_earlier_ones_create(
    client: Client, kubectl: Kubectl
) -> None:
    """A ServiceAccount's user name is its namespace and name: when a namespace is made
    again under its name (for another team, say), an account of the same name there is
    another caller, whose create with the same key and body is made, not answered with
    the earlier account's stored 201."""
    reused = f"t-idem-{uuid.uuid4().hex[:8]}"

    def deployer_token() -> str:
        kubectl("create", "serviceaccount", "deployer", "-n", reused)
        kubectl("create", "rolebinding", "deployer", "--clusterrole=dockyard-developer",
                f"--serviceaccount={reused}:deployer", "-n", reused)  # fmt: skip
        return kubectl("create", "token", "deployer", "-n", reused).stdout.strip()

    key = f"key-{uuid.uuid4()}"
    path = f"/api/v1/namespaces/{reused}/environments"
    kubectl("create", "namespace", reused)
    try:
        headers = {"Authorization": f"Bearer {deployer_token()}", "Idempotency-Key": key}
        earlier = await client.post(path, json=_environment("shop"), headers=headers)
        assert earlier.status == 201, await earlier.text()
        kubectl("delete", "namespace", reused, "--timeout=120s")
        kubectl("create", "namespace", reused)
        headers = {"Authorization": f"Bearer {deployer_token()}", "Idempotency-Key": key}

        later = await client.post(path, json=_environment("shop"), headers=headers)

        assert later.status == 201, await later.text()
        assert "Idempotency-Replayed" not in later.headers
        made = (await later.json())["metadata"]["uid"]
        assert made != (await earlier.json())["metadata"]["uid"]
        stored = kubectl("get", "environment", "shop", "-n", reused,
                         "-o", "jsonpath={.metadata.uid}").stdout  # fmt: skip
        assert stored == made
    finally:
        kubectl("delete", "namespace", reused, "--wait=false", check=False)


async def _left(db: asyncpg.Connection, actor: str, key: str) -> timedelta:
    left = await db.fetchval(
        "SELECT expires_at - now() FROM idempotency_keys WHERE actor = $1 AND key = $2",
        actor,
        key,
    )
    assert isinstance(left, timedelta)
    return left


async def test_a_key_whose_replica_died_mid_request_is_free_again_after_minutes(
    db: asyncpg.Connection, testbed_state: State
) -> None:
    pool = await asyncpg.create_pool(testbed_state.database_url, min_size=1, max_size=2)
    store = IdempotencyStore(pool)
    request = {"actor": f"dev-{uuid.uuid4().hex[:6]}", "key": "k", "method": "POST",
               "path": "/api/v1/namespaces/shop/environments", "digest": "d"}  # fmt: skip
    actor, key = request["actor"], request["key"]
    try:
        first = await store.claim(**request)  # a replica claims it, then dies (or stalls)
        assert isinstance(first, Claim)
        with pytest.raises(Problem, match="still in progress"):
            await store.claim(**request)
        # Not a day: the claim lasts as long as a request may.
        assert timedelta(minutes=4) < await _left(db, actor, key) <= IN_FLIGHT
        await db.execute(  # those minutes passed
            "UPDATE idempotency_keys SET created_at = created_at - interval '6 minutes',"
            " expires_at = expires_at - interval '6 minutes' WHERE actor = $1 AND key = $2",
            actor,
            key,
        )

        retry = await store.claim(**request)  # the retry runs
        assert isinstance(retry, Claim)
        # The first request, stalled rather than dead, ends late: it touches only its own
        # claim, neither freeing the retry's nor storing its own answer in its place.
        await store.release(first)
        await store.complete(first, status=500, body='{"late": true}')
        with pytest.raises(Problem, match="still in progress"):
            await store.claim(**request)
        await store.complete(retry, status=201, body='{"ok": true}')
        assert await _left(db, actor, key) > TTL - timedelta(minutes=1)  # kept a day
        replay = await store.claim(**request)
        assert isinstance(replay, Replay)
        assert replay.status == 201
    finally:
        await db.execute("DELETE FROM idempotency_keys WHERE actor = $1", actor)
        await pool.close()
