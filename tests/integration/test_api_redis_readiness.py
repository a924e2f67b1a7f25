"""Readiness checks Redis when it is configured: a PING within the probe's timeout."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from dockyard.api.app import create_app
from dockyard.core.settings import Settings
from dockyard.testbed.cluster import State, free_port


def _settings(state: State, redis_url: str) -> Settings:
    return Settings(
        database_url=state.database_url,  # type: ignore[arg-type]
        kubeconfig=Path(state.kubeconfig),
        redis_url=redis_url,  # type: ignore[arg-type]
        metrics_port=None,
    )


async def test_readiness_lists_redis_when_it_is_configured(testbed_state: State) -> None:
    app = create_app(_settings(testbed_state, testbed_state.redis_url))
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/readyz")
        body = await response.json()
    assert response.status == 200, body
    assert {c["name"]: c["ready"] for c in body["checks"]} == {
        "postgres": True,
        "kubernetes": True,
        "redis": True,
    }


async def test_a_dead_redis_makes_the_api_not_ready_and_says_why(testbed_state: State) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    async with TestClient(TestServer(create_app(_settings(testbed_state, dead)))) as client:
        response = await client.get("/readyz")
        body = await response.json()
    assert response.status == 503
    assert body["status"] == "not-ready"
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["redis"]["ready"] is False
    assert checks["redis"]["reason"]
    assert checks["postgres"]["ready"] is True
    assert checks["kubernetes"]["ready"] is True
