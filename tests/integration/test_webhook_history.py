"""A Webhook's deliveries over REST (``GET .../webhooks/{name}/deliveries``), from the test
bed's platform database: newest first, a page at a time, one state's on request, only
this Webhook's (not those of an earlier one of its name), and to those who may read it.

The Webhook lives in a namespace no operator of the session watches, so its delivery
rows stay as the test writes them (as the dispatcher would).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
import yaml

from dockyard.testbed.cluster import Testbed
from tests.conftest import ApiClient, Kubectl, StartApi

pytestmark = pytest.mark.usefixtures("crds_installed", "platform_migrated", "roles")

# One event and its delivery to the Webhook ``$1``: state, attempts, last status/error.
_DELIVERY = """
WITH made AS (
    INSERT INTO events (id, type, resource, namespace, name, body)
    VALUES ($2, $3, 'backups', $4, 'b', '{}') RETURNING seq, id
)
INSERT INTO webhook_deliveries (webhook_uid, namespace, webhook, event_seq, event_id, state,
    attempts, last_status, last_error, delivered_at, next_at)
SELECT $1, $4, 'hook', seq, id, $5, $6, $7, $8,
       CASE WHEN $5 = 'delivered' THEN now() END, now() + interval '1 minute'
FROM made
"""


async def _webhook(kubectl: Kubectl, namespace: str) -> str:
    manifest = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": "hook", "namespace": namespace},
        "spec": {
            "url": "https://hooks.example/in",
            "events": ["*"],
            "secretRef": {"name": "hook-signing", "key": "secret"},
        },
    }
    await asyncio.to_thread(kubectl, "apply", "-f", "-", input=yaml.safe_dump(manifest))
    got = await asyncio.to_thread(kubectl, "get", "webhook", "hook", "-n", namespace, "-o", "json")
    return str(json.loads(got.stdout)["metadata"]["uid"])


async def _deliver(pool: asyncpg.Pool, uid: str, namespace: str, *rows: tuple[Any, ...]) -> None:
    for state, attempts, status, error in rows:
        event = f"evt_{uuid.uuid4().hex}"
        await pool.execute(_DELIVERY, uid, event, "backup.completed", namespace, state,
                           attempts, status, error)  # fmt: skip


async def _until(check: Callable[[], Awaitable[Any]], within: float = 30) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await check()
        if found is not None or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_a_webhooks_deliveries_are_listed_newest_first_by_page_and_state(
    kubectl: Kubectl,
    testbed: Testbed,
    unwatched_namespace: str,
    start_api: StartApi,
    platform_pool: asyncpg.Pool,
) -> None:
    namespace, pool = unwatched_namespace, platform_pool
    earlier = await _webhook(kubectl, namespace)
    await _deliver(pool, earlier, namespace, ("dead", 9, 500, "the receiver answered 500"))
    # Made again under the name: the earlier one's deliveries are not this one's.
    await asyncio.to_thread(kubectl, "delete", "webhook", "hook", "-n", namespace)
    uid = await _webhook(kubectl, namespace)
    await _deliver(
        pool, uid, namespace,
        ("delivered", 1, 204, None),
        ("dead", 12, 503, "the receiver answered 503"),
        ("pending", 2, None, "connection refused"),
    )  # fmt: skip
    ops, dev = f"ops-{uuid.uuid4().hex[:6]}", f"dev-{uuid.uuid4().hex[:6]}"
    for user, role in ((ops, "dockyard-operator"), (dev, "dockyard-developer")):
        await asyncio.to_thread(
            kubectl, "create", "rolebinding", user, f"--clusterrole={role}", f"--user={user}",
            "-n", namespace,
        )  # fmt: skip
    api: ApiClient = await start_api()
    path = f"/api/v1/namespaces/{namespace}/webhooks/hook/deliveries"

    def as_(user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {testbed.user_token(user, [])}"}

    async def listed(query: str = "") -> dict[str, Any] | None:
        response = await api.get(f"{path}{query}", headers=as_(ops))
        if response.status in (403, 404):  # the binding, or the Webhook, not seen yet
            return None
        assert response.status == 200, await response.text()
        return dict(await response.json())

    first = await _until(lambda: listed("?limit=2"))
    assert first is not None
    assert first["webhook"] == "hook"
    assert [d["state"] for d in first["items"]] == ["pending", "dead"]
    pending, dead = first["items"]
    assert (pending["attempts"], pending["lastError"]) == (2, "connection refused")
    assert "nextAttemptAt" in pending
    assert "deliveredAt" not in pending
    assert (dead["attempts"], dead["lastStatus"], dead["type"]) == (12, 503, "backup.completed")
    assert "nextAttemptAt" not in dead
    second = await listed(f"?limit=2&cursor={first['nextCursor']}")
    assert second is not None
    [delivered] = second["items"]
    assert (delivered["state"], delivered["lastStatus"]) == ("delivered", 204)
    assert "deliveredAt" in delivered
    assert "nextCursor" not in second

    dead_letters = await listed("?state=dead")
    assert dead_letters is not None
    assert [d["eventId"] for d in dead_letters["items"]] == [dead["eventId"]]

    # Bad input: one problem naming the query parameter.
    for query, field in (("?state=lost", "query.state"), ("?cursor=bm90LWl0", "query.cursor"),
                         ("?limit=0", "query.limit")):  # fmt: skip
        response = await api.get(f"{path}{query}", headers=as_(ops))
        assert response.status == 422, query
        problem = await response.json()
        assert [e["field"] for e in problem["errors"]] == [field], problem
    # A developer may not read Webhooks (their URLs may carry tokens), nor their deliveries.
    refused = await api.get(path, headers=as_(dev))
    assert refused.status == 403
