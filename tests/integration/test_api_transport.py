"""HTTPS, HSTS, trusted proxies and CORS on the real API against the test bed.

TLS is served for real: ``dockyard api`` in production mode with a certificate from the
test bed's PKI, on a free port.
"""

from __future__ import annotations

import secrets
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dockyard.api import errors
from dockyard.core.settings import Mode
from dockyard.testbed.cluster import free_port
from dockyard.testbed.pki import CertificateAuthority
from tests.conftest import StartApi

FRONTEND = "https://app.example"
HSTS = "Strict-Transport-Security"

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def api_client(start_api: StartApi, crds_installed: None) -> StartApi:
    """Start the real app (without Redis) with some settings changed."""

    async def start(**overrides: Any) -> Client:
        return await start_api(redis_url=None, **overrides)

    return start


# -- TLS served for real -------------------------------------------------------------------


@pytest.fixture
def tls_api(
    tmp_path: Path, testbed_env: dict[str, str], crds_installed: None
) -> Iterator[tuple[str, ssl.SSLContext]]:
    """``dockyard api`` in production over TLS: its port and a context trusting its CA."""
    ca = CertificateAuthority(tmp_path)
    pair = ca.issue(tmp_path, "api", common_name="dockyard-api", server=True)
    port = free_port()
    env = {
        **testbed_env,
        "DOCKYARD_MODE": "production",
        "DOCKYARD_TLS_CERT_FILE": str(pair.cert),
        "DOCKYARD_TLS_KEY_FILE": str(pair.key),
        "DOCKYARD_HSTS_MAX_AGE": "600",
        "DOCKYARD_METRICS_PORT": str(free_port()),
        "DOCKYARD_CURSOR_KEY": secrets.token_hex(32),
    }
    env.pop("DOCKYARD_TRUSTED_PROXIES", None)
    log = tmp_path / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dockyard.cli", "api", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        client_context = ssl.create_default_context(cafile=str(ca.pair.cert))
        _wait_until_serving(port, client_context, process, log)
        yield f"127.0.0.1:{port}", client_context
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_serving(
    port: int, context: ssl.SSLContext, process: subprocess.Popen[bytes], log: Path
) -> None:
    import http.client

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dockyard api exited:\n{log.read_text()}")
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=2)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.2)
    raise AssertionError(f"dockyard api did not serve within 60s:\n{log.read_text()}")


async def test_tls_responses_carry_hsts_in_production(
    tls_api: tuple[str, ssl.SSLContext],
) -> None:
    address, context = tls_api
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as session:
        for path, status in (("/healthz", 200), ("/api/v1/openapi.json", 200), ("/api/v1/me", 401)):
            async with session.get(f"https://{address}{path}") as response:
                assert response.status == status, path
                assert response.headers[HSTS] == "max-age=600; includeSubDomains", path


async def test_tls_port_refuses_plaintext(tls_api: tuple[str, ssl.SSLContext]) -> None:
    address, _ = tls_api
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientError):
            async with session.get(
                f"http://{address}/healthz", timeout=aiohttp.ClientTimeout(total=5)
            ) as response:
                await response.read()


# -- plaintext in production ---------------------------------------------------------------


async def test_production_refuses_plaintext_that_no_trusted_proxy_vouches_for(
    api_client: StartApi,
) -> None:
    client = await api_client(mode=Mode.PRODUCTION, trusted_proxies=[ip_network("198.51.100.0/24")])
    response = await client.get("/api/v1/openapi.json", headers={"X-Forwarded-Proto": "https"})
    body = await response.json(content_type=errors.PROBLEM_JSON)
    assert response.status == 403
    assert body["type"] == errors.TYPE_BASE + "https-required"
    assert body["requestId"] == response.headers["X-Request-Id"]
    assert HSTS not in response.headers


@pytest.mark.parametrize("probe", ["/healthz", "/readyz"])
async def test_probes_are_served_over_plaintext_in_production(
    api_client: StartApi, probe: str
) -> None:
    client = await api_client(mode=Mode.PRODUCTION, trusted_proxies=[ip_network("198.51.100.0/24")])
    response = await client.get(probe)
    assert response.status == 200
    assert HSTS not in response.headers


async def test_a_trusted_proxy_that_terminated_tls_is_served_with_hsts(
    api_client: StartApi,
) -> None:
    client = await api_client(
        mode=Mode.PRODUCTION, trusted_proxies=[ip_network("127.0.0.1/32")], hsts_max_age=900
    )
    response = await client.get(
        "/api/v1/openapi.json",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.4"},
    )
    assert response.status == 200
    assert response.headers[HSTS] == "max-age=900; includeSubDomains"
    plain = await client.get("/api/v1/openapi.json", headers={"X-Forwarded-Proto": "http"})
    assert plain.status == 403


# -- CORS ----------------------------------------------------------------------------------


def _cors_headers(response: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.lower().startswith("access-control-")}


async def test_an_allowed_origin_can_read_responses_and_errors(api_client: StartApi) -> None:
    client = await api_client(cors_origins=[FRONTEND])
    for path, status in (("/healthz", 200), ("/api/v1/me", 401)):
        response = await client.get(path, headers={"Origin": FRONTEND})
        assert response.status == status
        assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
        exposed = response.headers["Access-Control-Expose-Headers"]
        assert {h.strip() for h in exposed.split(",")} >= {"X-Request-Id", "ETag", "RateLimit"}
        assert "Origin" in response.headers["Vary"]


async def test_a_disallowed_origin_gets_no_cors_headers(api_client: StartApi) -> None:
    client = await api_client(cors_origins=[FRONTEND])
    response = await client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert response.status == 200
    assert _cors_headers(response) == {}


async def test_a_preflight_is_answered_before_authentication(api_client: StartApi) -> None:
    client = await api_client(cors_origins=[FRONTEND])
    response = await client.options(
        "/api/v1/me",
        headers={
            "Origin": FRONTEND,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, x-request-id",
        },
    )
    assert response.status == 204
    headers = _cors_headers(response)
    assert headers["Access-Control-Allow-Origin"] == FRONTEND
    allowed = {h.strip() for h in headers["Access-Control-Allow-Headers"].split(",")}
    assert allowed >= {"Authorization", "Content-Type", "If-Match", "Idempotency-Key"}
    assert "Access-Control-Max-Age" in headers


async def test_a_preflight_from_a_disallowed_origin_is_403(api_client: StartApi) -> None:
    client = await api_client(cors_origins=[FRONTEND])
    response = await client.options(
        "/api/v1/me",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
    )
    body = await response.json(content_type=errors.PROBLEM_JSON)
    assert response.status == 403
    assert body["type"] == errors.TYPE_BASE + "cors-origin-not-allowed"
    assert _cors_headers(response) == {}
