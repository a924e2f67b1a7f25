"""``/api/docs`` on the real API: a public Swagger UI whose every asset this app serves,
under a content security policy that allows this origin only."""

from __future__ import annotations

import re

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dockyard.api import errors
from dockyard.api.routes import docs
from tests.conftest import StartApi

Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(start_api: StartApi, crds_installed: None) -> Client:
    return await start_api(redis_url=None)


async def test_the_docs_page_needs_no_token_and_points_at_the_document(client: Client) -> None:
    response = await client.get("/api/docs")
    html = await response.text()
    assert response.status == 200
    assert response.content_type == "text/html"
    assert 'data-spec-url="/api/v1/openapi.json"' in html


async def test_the_docs_page_loads_nothing_from_elsewhere(client: Client) -> None:
    response = await client.get("/api/docs")
    html = await response.text()
    assert "//" not in html.replace("<!DOCTYPE html>", "")  # no http://, https:// or //cdn
    policy = response.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_every_asset_the_page_references_is_served_by_the_app(client: Client) -> None:
    html = await (await client.get("/api/docs")).text()
    referenced = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(referenced) == 5
    for url in referenced:
        assert url.startswith("/api/docs/assets/")
        response = await client.get(url)
        assert response.status == 200, url
        assert response.headers["Content-Security-Policy"] == docs.CONTENT_SECURITY_POLICY


async def test_the_bundle_comes_from_the_installed_package(client: Client) -> None:
    response = await client.get("/api/docs/assets/swagger-ui-bundle.js")
    assert response.content_type == "text/javascript"
    installed = docs.bundle_directory() / "swagger-ui-bundle.js"
    assert await response.read() == installed.read_bytes()
    css = await client.get("/api/docs/assets/swagger-ui.css")
    assert css.content_type == "text/css"


async def test_the_initializer_disables_the_public_validator(client: Client) -> None:
    response = await client.get(f"/api/docs/assets/{docs.INITIALIZER}")
    script = await response.text()
    assert response.content_type == "text/javascript"
    assert "validatorUrl: null" in script
    assert "//" not in script


@pytest.mark.parametrize(
    "name", ["index.html", "swagger-initializer.js", "swagger-ui.css.map", "nothing.js"]
)
async def test_only_the_page_s_assets_are_served(client: Client, name: str) -> None:
    response = await client.get(f"/api/docs/assets/{name}")
    assert response.status == 404
    assert response.content_type == errors.PROBLEM_JSON


async def test_the_docs_are_not_part_of_the_api_contract(client: Client) -> None:
    document = await (await client.get("/api/v1/openapi.json")).json()
    assert not [path for path in document["paths"] if path.startswith("/api/docs")]
