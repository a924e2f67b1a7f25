"""Readiness checks Redis when it is configured: a PING within the probe's timeout.

Redis only degrades the API (the limiter runs without it): a dead Redis is reported,
never a reason to take the replica out of its Service (docs/operations.md).
"""

from __future__ import annotations

from dockyard.testbed.cluster import State, free_port
from tests.conftest import StartApi


async def test_readiness_lists_redis_when_it_is_configured(
    testbed_state: State, start_api: StartApi
) -> None:
    client = await start_api(redis_url=testbed_state.redis_url)
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 200, body
    assert {c["name"]: c["ready"] for c in body["checks"]} == {
        "postgres": True,
        "kubernetes": True,
        "redis": True,
    }


async def test_a_dead_redis_degrades_the_api_but_keeps_it_ready_and_says_why(
    start_api: StartApi,
) -> None:
    client = await start_api(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "ready"
    assert body["degraded"] == ["redis"]
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["redis"]["ready"] is False
    assert checks["redis"]["required"] is False
    assert checks["redis"]["reason"]
    assert checks["postgres"]["ready"] is True
    assert checks["kubernetes"]["ready"] is True
