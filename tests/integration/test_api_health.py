"""The API against the test bed: probes need no token and report each dependency."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from pytest_aiohttp import AiohttpClient

from dockyard.api.app import create_app
from dockyard.testbed.cluster import State
from tests.conftest import StartApi, api_settings


@pytest.fixture
async def client(start_api: StartApi) -> TestClient[object, object]:
    # redis_url: whatever the shell exports, these tests expect two checks.
    return await start_api(redis_url=None)


async def test_liveness_needs_no_token(client: TestClient[object, object]) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readiness_checks_postgres_and_kubernetes(
    client: TestClient[object, object],
) -> None:
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 200, body
    assert body["status"] == "ready"
    assert {c["name"]: c["ready"] for c in body["checks"]} == {
        "postgres": True,
        "kubernetes": True,
    }


async def test_readiness_names_the_dependency_that_is_down(
    testbed_state: State, aiohttp_client: AiohttpClient
) -> None:
    settings = api_settings(
        testbed_state,
        database_url="postgresql://nobody:wrong@127.0.0.1:1/none",
        database_pool_min=0,
        redis_url=None,
    )
    client = await aiohttp_client(create_app(settings))
    response = await client.get("/readyz")
    body = await response.json()
    assert response.status == 503
    checks = {c["name"]: c for c in body["checks"]}
    assert checks["postgres"]["ready"] is False
    assert checks["postgres"]["reason"]
    assert checks["kubernetes"]["ready"] is True


async def test_the_openapi_document_is_served(client: TestClient[object, object]) -> None:
    response = await client.get("/api/v1/openapi.json")
    document = await response.json()
    assert document["openapi"] == "3.1.0"
    assert "/readyz" in document["paths"]


def test_migrate_twice_is_a_no_op_the_second_time(testbed_env: dict[str, str]) -> None:
    import subprocess
    import sys

    first = subprocess.run(
        [sys.executable, "-m", "dockyard.cli", "migrate"],
        env=testbed_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    second = subprocess.run(
        [sys.executable, "-m", "dockyard.cli", "migrate"],
        env=testbed_env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "database is up to date"


async def test_a_burst_of_readiness_probes_checks_the_dependencies_once(
    testbed_state: State, monkeypatch: pytest.MonkeyPatch, aiohttp_client: AiohttpClient
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    exporter = InMemorySpanExporter()
    settings = api_settings(testbed_state, redis_url=None, database_pool_max=2)
    app = create_app(settings, span_processors=[SimpleSpanProcessor(exporter)])
    client = await aiohttp_client(app)
    # Anyone may call /readyz: 100 at once must not take 100 turns on a 2-connection pool.
    answers = await asyncio.gather(*(client.get("/readyz") for _ in range(100)))
    assert {r.status for r in answers} == {200}
    queries = [
        span
        for span in exporter.get_finished_spans()
        if span.kind is SpanKind.CLIENT and span.attributes.get("db.system") == "postgresql"
    ]
    assert len(queries) <= 2, len(queries)
