"""The mark the API puts on a call made with a caller's token is made for that call as the
apiserver will report it: its verb and its path, without the path of a proxy in front."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from dockyard.core import audit_ids
from dockyard.core.kube import CallerToken, KubeClient, KubeConfig

PROXY = "/k8s/clusters/c-1"
RESTORE = "/apis/dockyard.io/v1alpha1/namespaces/shop/restores/promote"


async def _echo(request: web.Request) -> web.Response:
    return web.json_response({"auditID": request.headers.get("Audit-ID")})


@pytest.fixture
async def server(aiohttp_server: AiohttpServer) -> TestServer:
    """A stand-in for an apiserver behind a proxy that serves it under ``PROXY``."""
    app = web.Application()
    app.router.add_route("*", PROXY + RESTORE, _echo)
    app.router.add_route("*", RESTORE, _echo)
    return await aiohttp_server(app)


@pytest.mark.parametrize("prefix", ["", PROXY])
async def test_a_callers_call_is_marked_for_its_verb_and_its_path_on_the_apiserver(
    server: TestServer, prefix: str
) -> None:
    url = str(server.make_url("")).rstrip("/") + prefix
    client = KubeClient.connect(KubeConfig(url, ssl.create_default_context()))
    caller = CallerToken("theirs", username="alice", audit_secret="sink")
    try:
        marked = (await client.merge_patch(RESTORE, {}, as_caller=caller))["auditID"]
        unmarked = (await client.get(RESTORE))["auditID"]
    finally:
        await client.close()
    now = datetime.now(UTC)
    assert audit_ids.is_own("sink", marked, "alice", "patch", f"{RESTORE}?x=1", now)
    assert not audit_ids.is_own("sink", marked, "alice", "patch", RESTORE + "/status", now)
    assert not audit_ids.is_own("sink", marked, "alice", "update", RESTORE, now)
    assert unmarked is None  # our own calls carry no mark
