"""Every error class leaves the API as problem+json with a stable type and the request id."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from dockyard.api import errors
from dockyard.api.app import create_app
from dockyard.api.middlewares import from_kube_error
from dockyard.core.kube import KubeError
from dockyard.testbed.cluster import State
from tests.conftest import StartApi, api_settings

Client = TestClient[object, object]
BASE = "https://dockyard.io/problems/"


@pytest.fixture
async def client(testbed_state: State, aiohttp_client: AiohttpClient) -> Client:
    app = create_app(api_settings(testbed_state))

    # Test-only routes that raise what real handlers raise in later features.
    async def conflict(_: web.Request) -> web.Response:
        body = {"reason": "Conflict", "message": "the object has been modified"}
        raise from_kube_error(KubeError(409, body))

    async def stale(_: web.Request) -> web.Response:
        raise errors.precondition_failed('If-Match "41" does not match the current "42".')

    async def throttled(_: web.Request) -> web.Response:
        raise errors.too_many_requests(7)

    async def boom(_: web.Request) -> web.Response:
        raise RuntimeError("SELECT secret FROM vault WHERE password='hunter2'")

    app.router.add_get("/test/conflict", conflict)
    app.router.add_get("/test/stale", stale)
    app.router.add_get("/test/throttled", throttled)
    app.router.add_get("/test/boom", boom)
    return await aiohttp_client(app)


async def _problem(response: object, status: int, slug: str) -> dict[str, object]:
    from aiohttp import ClientResponse

    assert isinstance(response, ClientResponse)
    assert response.status == status
    assert response.content_type == "application/problem+json"
    body = dict(await response.json())
    assert body["type"] == BASE + slug
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert body["requestId"] == response.headers["X-Request-Id"]
    return body


async def test_unknown_route_is_404(client: Client) -> None:
    body = await _problem(await client.get("/api/v1/nothing-here"), 404, "not-found")
    assert "/api/v1/nothing-here" in str(body["detail"])


async def test_wrong_method_is_405_with_allow(client: Client) -> None:
    response = await client.post("/healthz")
    await _problem(response, 405, "method-not-allowed")
    assert "GET" in response.headers["Allow"]


async def test_missing_token_is_401(client: Client) -> None:
    await _problem(await client.get("/api/v1/me"), 401, "unauthorized")


async def test_resource_version_conflict_is_409(client: Client) -> None:
    await _problem(await client.get("/test/conflict"), 409, "conflict")


async def test_stale_if_match_is_412(client: Client) -> None:
    await _problem(await client.get("/test/stale"), 412, "precondition-failed")


async def test_rate_limited_is_429_with_retry_after(client: Client) -> None:
    response = await client.get("/test/throttled")
    await _problem(response, 429, "too-many-requests")
    assert response.headers["Retry-After"] == "7"


async def test_an_unhandled_error_leaks_nothing(client: Client) -> None:
    response = await client.get("/test/boom")
    body = await _problem(response, 500, "internal-error")
    text = str(body)
    assert "hunter2" not in text
    assert "SELECT" not in text
    assert "Traceback" not in text


async def test_a_request_id_is_echoed_or_minted(client: Client) -> None:
    echoed = await client.get("/healthz", headers={"X-Request-Id": "frontend-req-0001"})
    assert echoed.headers["X-Request-Id"] == "frontend-req-0001"
    minted = await client.get("/healthz", headers={"X-Request-Id": "bad id; drop table"})
    assert minted.headers["X-Request-Id"] != "bad id; drop table"
    assert len(minted.headers["X-Request-Id"]) == 32


@pytest.fixture
def dead_kubeconfig(testbed_state: State, tmp_path: Path) -> Path:
    """The test bed's kubeconfig, pointing at a port where no apiserver listens."""
    source = Path(testbed_state.kubeconfig)
    config = yaml.safe_load(source.read_text())
    cluster = config["clusters"][0]["cluster"]
    cluster["server"] = "https://127.0.0.1:9"
    cluster["certificate-authority"] = str(source.parent / cluster["certificate-authority"])
    for user in config["users"]:  # keep the relative paths valid from the new location
        for key in ("client-certificate", "client-key"):
            user["user"][key] = str(source.parent / user["user"][key])
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(yaml.safe_dump(config))
    return dead


async def test_apiserver_down_is_503_naming_kubernetes(
    start_api: StartApi, dead_kubeconfig: Path
) -> None:
    client = await start_api(kubeconfig=dead_kubeconfig)
    response = await client.get("/api/v1/me", headers={"Authorization": "Bearer anything"})
    body = await _problem(response, 503, "dependency-unavailable")
    assert body["dependency"] == "kubernetes"
