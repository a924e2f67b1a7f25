"""A token file (a projected service-account token) is read again as the kubelet rotates
it, so a long-running API or operator keeps authenticating."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from dockyard.core.kube import CallerToken, KubeClient, KubeConfig


async def _echo(request: web.Request) -> web.Response:
    return web.json_response({"authorization": request.headers.get("Authorization")})


def _app() -> web.Application:
    app = web.Application()
    app.router.add_get("/whoami", _echo)
    return app


@pytest.fixture
async def server(aiohttp_server: AiohttpServer) -> TestServer:
    """A stand-in apiserver that echoes the Authorization header it got."""
    return await aiohttp_server(_app())


async def test_a_rotated_token_file_is_used_after_the_reload_interval(
    tmp_path: Path, server: TestServer
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    config = KubeConfig(
        server=str(server.make_url("")).rstrip("/"),
        ssl_context=ssl.create_default_context(),
        token="first",
        token_file=token_file,
    )
    client = KubeClient.connect(config)
    fresh = KubeClient(config, client.session, token_reload_seconds=0)
    stale = KubeClient(config, client.session, token_reload_seconds=3600)
    try:
        token_file.write_text("second\n")
        assert (await fresh.get("/whoami"))["authorization"] == "Bearer second"
        assert (await stale.get("/whoami"))["authorization"] == "Bearer first"
        token_file.unlink()  # gone for a moment: the last token is kept
        assert (await fresh.get("/whoami"))["authorization"] == "Bearer second"
    finally:
        await client.close()


async def test_a_fixed_token_and_no_token(server: TestServer) -> None:
    url = str(server.make_url("")).rstrip("/")
    context = ssl.create_default_context()
    with_token = KubeClient.connect(KubeConfig(url, context, token="static"))
    without = KubeClient.connect(KubeConfig(url, context))
    try:
        assert (await with_token.get("/whoami"))["authorization"] == "Bearer static"
        assert (await without.get("/whoami"))["authorization"] is None
    finally:
        await with_token.close()
        await without.close()


async def test_a_call_for_a_caller_carries_their_token_and_never_ours(
    server: TestServer,
) -> None:
    url = str(server.make_url("")).rstrip("/")
    client = KubeClient.connect(KubeConfig(url, ssl.create_default_context(), token="ours"))
    try:
        answer = await client.get("/whoami", as_caller=CallerToken("theirs"))
        assert answer["authorization"] == "Bearer theirs"
        assert "theirs" not in repr(CallerToken("theirs"))
    finally:
        await client.close()


def test_a_client_certificate_is_never_presented_on_callers_calls() -> None:
    # A certificate is authenticated before a bearer token: calls made with a caller's
    # token need connections without it.
    context = ssl.create_default_context()
    config = KubeConfig("https://127.0.0.1:6443", context, caller_ssl_context=context)
    with pytest.raises(ValueError, match="client certificate"):
        KubeClient(config, object())  # type: ignore[arg-type]


def test_a_kubeconfig_token_file_is_remembered_for_reloading(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    (tmp_path / "config").write_text(
        """
apiVersion: v1
kind: Config
current-context: c
contexts: [{name: c, context: {cluster: k, user: u}}]
clusters: [{name: k, cluster: {server: "https://127.0.0.1:6443/", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {tokenFile: token}}]
"""
    )
    config = KubeConfig.from_kubeconfig(tmp_path / "config")
    assert config.token == "from-file"
    assert config.token_file == tmp_path / "token"
    assert config.server == "https://127.0.0.1:6443"
