"""The API's own description: the OpenAPI document."""

from __future__ import annotations

from aiohttp import web

from dockyard.api import keys
from dockyard.api.openapi import Operation, OperationRegistry


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(request.app[keys.OPENAPI_DOCUMENT])


def register(registry: OperationRegistry) -> None:
    registry.add(
        Operation(
            "GET",
            "/api/v1/openapi.json",
            "getOpenAPI",
            "This API's OpenAPI document",
            "meta",
            openapi_json,
            authenticated=False,
        )
    )
