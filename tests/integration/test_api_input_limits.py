"""Input limits on a request body, through ``bodies.read_json``, a request model and the
real problems middleware: too large is 413, not JSON is 415, unknown or over-long fields
are 422 with the field's path. The route exists only in this test, so the limits are
checked apart from any kind's own rules."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from pydantic import BaseModel, ConfigDict, Field
from pytest_aiohttp import AiohttpClient

from dockyard.api import bodies, errors, keys, middlewares
from dockyard.core.settings import Settings

LIMIT = 1024

Client = TestClient[web.Request, web.Application]


class WidgetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: Literal["small", "large"]


class Widget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=63)
    spec: WidgetSpec


async def create_widget(request: web.Request) -> web.Response:
    widget = Widget.model_validate(await bodies.read_json(request))
    return web.json_response(widget.model_dump(), status=201)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient) -> Client:
    return await aiohttp_client(_app(max_body_bytes=LIMIT))


@pytest.fixture
async def roomy_client(aiohttp_client: AiohttpClient) -> Client:
    """The default body limit (1 MiB): room for 100,000 levels of brackets."""
    return await aiohttp_client(_app())


def _app(**settings_values: Any) -> web.Application:
    settings = Settings.model_validate({"body_read_timeout": 0.5, **settings_values})
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[middlewares.request_context, middlewares.problems],
    )
    app[keys.SETTINGS] = settings
    app.router.add_post("/widgets", create_widget)
    return app


async def problem(response: ClientResponse) -> dict[str, Any]:
    assert response.content_type == errors.PROBLEM_JSON
    body: dict[str, Any] = await response.json()
    return body


async def test_a_valid_body_is_accepted(
    client: Client,
) -> None:
    response = await client.post("/widgets", json={"name": "w", "spec": {"size": "small"}})
    assert response.status == 201
    assert await response.json() == {"name": "w", "spec": {"size": "small"}}


async def test_a_body_over_the_limit_is_413(
    client: Client,
) -> None:
    response = await client.post(
        "/widgets", json={"name": "w", "spec": {"size": "small"}, "pad": "x" * LIMIT}
    )
    assert response.status == 413
    body = await problem(response)
    assert body["type"] == errors.TYPE_BASE + "payload-too-large"
    assert f"{LIMIT} bytes" in str(body["detail"])


async def test_a_body_that_is_not_json_is_415(
    client: Client,
) -> None:
    response = await client.post(
        "/widgets", data="name=w", headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert response.status == 415
    body = await problem(response)
    assert body["type"] == errors.TYPE_BASE + "unsupported-media-type"


async def test_an_unknown_field_is_422_with_its_path(
    client: Client,
) -> None:
    response = await client.post(
        "/widgets", json={"name": "w", "spec": {"size": "small", "colour": "red"}}
    )
    assert response.status == 422
    body = await problem(response)
    assert body["type"] == errors.TYPE_BASE + "validation-failed"
    assert [e["field"] for e in body["errors"]] == ["spec.colour"]


async def test_an_over_long_string_is_422_with_its_path(
    client: Client,
) -> None:
    response = await client.post("/widgets", json={"name": "w" * 64, "spec": {"size": "small"}})
    assert response.status == 422
    body = await problem(response)
    [error] = body["errors"]
    assert error["field"] == "name"
    assert "63" in error["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "w\x00", "spec": {"size": "small"}}, "name"),
        ({"name": "w", "spec": {"size": "small", "tags": ["a", "\x00"]}}, "spec.tags[1]"),
        ({"name": "w", "spec": {"size": "small", "k\x00": 1}}, "spec.k\\u0000"),
    ],
)
async def test_a_string_holding_a_nul_is_422_with_its_path(
    client: Client, body: dict[str, Any], field: str
) -> None:
    """PostgreSQL stores no NUL: a write carrying one would have left no audit row."""
    response = await client.post("/widgets", json=body)  # json.dumps writes it \u0000
    assert response.status == 422
    [error] = (await problem(response))["errors"]
    assert error["field"] == field
    assert "NUL" in error["message"]


async def test_a_backslash_before_u0000_is_text_not_a_nul(client: Client) -> None:
    response = await client.post("/widgets", json={"name": "w\\u0000", "spec": {"size": "small"}})
    assert response.status == 201
    assert (await response.json())["name"] == "w\\u0000"


async def test_malformed_json_is_422_on_the_body(
    client: Client,
) -> None:
    response = await client.post("/widgets", data="{", headers={"Content-Type": "application/json"})
    assert response.status == 422
    body = await problem(response)
    [error] = body["errors"]
    assert error["field"] == "(body)"
    assert error["message"].startswith("not valid JSON")


@pytest.mark.parametrize("levels", [100, 100_000])
async def test_deeply_nested_json_is_400_not_a_500(roomy_client: Client, levels: int) -> None:
    deep = "[" * levels + "]" * levels  # inside the size limit, far past any model's depth
    response = await roomy_client.post(
        "/widgets", data=deep, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    body = await problem(response)
    assert body["type"] == errors.TYPE_BASE + "body-too-deep"


async def test_brackets_inside_strings_do_not_count_as_depth(
    client: Client,
) -> None:
    response = await client.post("/widgets", json={"name": "[[[[" * 10, "spec": {"size": "x"}})
    assert response.status == 422  # parsed and validated: only the size is wrong


async def test_a_body_that_never_arrives_is_408(
    client: Client,
) -> None:
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(
        b"POST /widgets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    head = await asyncio.wait_for(reader.read(4096), timeout=10)
    writer.close()
    assert head.startswith(b"HTTP/1.1 408"), head
    assert b"application/problem+json" in head
