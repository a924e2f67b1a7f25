"""Prometheus metrics: served on their own port, never on the API's, labelled by route."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from dockyard.api.app import create_app
from dockyard.testbed.cluster import State, free_port
from tests.conftest import api_settings

Client = TestClient[object, object]
DURATION_COUNT = "dockyard_api_request_duration_seconds_count"
IN_FLIGHT = "dockyard_api_requests_in_flight"
ERRORS = "dockyard_api_errors_total"


@dataclass
class Served:
    client: Client
    metrics_port: int
    release: asyncio.Event

    async def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            text = await response.text()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


@pytest.fixture
async def served(testbed_state: State, aiohttp_client: AiohttpClient) -> Served:
    port = free_port()
    app = create_app(api_settings(testbed_state, redis_url=None, metrics_port=port))
    release = asyncio.Event()

    # Test-only routes: one with a path parameter, one that waits to be released.
    async def item(_: web.Request) -> web.Response:
        return web.json_response({})

    async def slow(_: web.Request) -> web.Response:
        await release.wait()
        return web.json_response({})

    app.router.add_get("/test/items/{item}", item)
    app.router.add_get("/test/slow", slow)
    return Served(await aiohttp_client(app), port, release)


async def test_latency_is_counted_per_route_template(served: Served) -> None:
    for _ in range(3):
        assert (await served.client.get("/healthz")).status == 200
    for name in ("a", "b"):
        assert (await served.client.get(f"/test/items/{name}")).status == 200
    samples = await served.scrape()
    assert samples[_key(DURATION_COUNT, route="/healthz", method="GET", status="2xx")] == 3
    assert (
        samples[_key(DURATION_COUNT, route="/test/items/{item}", method="GET", status="2xx")] == 2
    )
    assert not any("/test/items/a" in str(labels) for _, labels in samples)


async def test_unmatched_paths_share_one_series_and_count_as_not_found(served: Served) -> None:
    for path in ("/nope", "/wp-admin/setup.php"):
        response = await served.client.get(path)
        assert response.status == 404
    samples = await served.scrape()
    assert samples[_key(DURATION_COUNT, route="unmatched", method="GET", status="4xx")] == 2
    assert samples[_key(ERRORS, type="not-found")] == 2


async def test_the_in_flight_gauge_follows_requests(served: Served) -> None:
    pending = asyncio.ensure_future(served.client.get("/test/slow"))
    for _ in range(100):
        if (await served.scrape())[_key(IN_FLIGHT)] == 1:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the in-flight gauge never reached 1")
    served.release.set()
    assert (await pending).status == 200
    assert (await served.scrape())[_key(IN_FLIGHT)] == 0


async def test_metrics_are_not_served_on_the_api_port(served: Served) -> None:
    response = await served.client.get("/metrics")
    body = await response.json(content_type=None)
    assert response.status == 404
    assert response.content_type == "application/problem+json"
    assert body["type"] == "https://dockyard.io/problems/not-found"


async def test_the_metrics_port_also_exposes_process_metrics(served: Served) -> None:
    samples = await served.scrape()
    assert any(name == "process_cpu_seconds_total" for name, _ in samples)
