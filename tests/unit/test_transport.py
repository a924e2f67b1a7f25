"""Transport rules on mocked requests: who the client is behind proxies, when a request
counts as HTTPS, plaintext refused in production, HSTS, and CORS."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from ipaddress import ip_network

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from dockyard.api import errors, keys, transport
from dockyard.core import logs
from dockyard.core.settings import Mode, Settings

PROXIES = [ip_network("10.0.0.0/8"), ip_network("fd00::/8")]
FRONTEND = "https://app.example"


def app_with(**settings: object) -> web.Application:
    app = web.Application()
    app[keys.SETTINGS] = Settings.model_validate(settings)
    return app


def request(
    path: str = "/api/v1/me",
    *,
    remote: str = "203.0.113.9",
    headers: dict[str, str] | None = None,
    method: str = "GET",
    tls: bool = False,
    app: web.Application | None = None,
) -> web.Request:
    context = ssl.create_default_context() if tls else None
    mocked = make_mocked_request(
        method, path, headers=headers or {}, app=app or app_with(), sslcontext=context
    )
    return mocked.clone(remote=remote)


async def ok(_: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


# -- client_ip -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote", "forwarded_for", "expected"),
    [
        pytest.param("203.0.113.9", "198.51.100.1", "203.0.113.9", id="untrusted peer is it"),
        pytest.param("10.0.0.2", "", "10.0.0.2", id="trusted peer without the header"),
        pytest.param("10.0.0.2", "198.51.100.1", "198.51.100.1", id="one trusted proxy"),
        pytest.param(
            "10.0.0.2", "6.6.6.6, 198.51.100.1, 10.1.1.1", "198.51.100.1", id="rightmost untrusted"
        ),
        pytest.param("10.0.0.2", "10.3.3.3, 10.1.1.1", "10.3.3.3", id="every hop trusted"),
        pytest.param("10.0.0.2", "bogus, 10.1.1.1", "10.1.1.1", id="garbage stops the walk"),
        pytest.param("10.0.0.2", "198.51.100.1:5555", "198.51.100.1", id="ipv4 with a port"),
        pytest.param("fd00::1", "[2001:db8::7]:443", "2001:db8::7", id="ipv6 in brackets"),
    ],
)
def test_client_ip_believes_forwarded_for_only_from_trusted_proxies(
    remote: str, forwarded_for: str, expected: str
) -> None:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    assert transport.client_ip(request(remote=remote, headers=headers), PROXIES) == expected


def test_client_ip_reads_every_forwarded_for_header_in_order() -> None:
    mocked = make_mocked_request(
        "GET",
        "/",
        headers=[("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", "198.51.100.1")],
        app=app_with(),
    ).clone(remote="10.0.0.2")
    assert transport.client_ip(mocked, PROXIES) == "198.51.100.1"


# -- is_https ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote", "tls", "proto", "expected"),
    [
        pytest.param("203.0.113.9", True, "", True, id="direct TLS"),
        pytest.param("203.0.113.9", False, "", False, id="direct plaintext"),
        pytest.param("203.0.113.9", False, "https", False, id="untrusted peer claims https"),
        pytest.param("10.0.0.2", False, "https", True, id="trusted proxy says https"),
        pytest.param("10.0.0.2", False, "http", False, id="trusted proxy says http"),
        pytest.param("10.0.0.2", False, "http, https", True, id="nearest value counts"),
        pytest.param("10.0.0.2", False, "", False, id="trusted proxy says nothing"),
    ],
)
def test_is_https(remote: str, tls: bool, proto: str, expected: bool) -> None:
    headers = {"X-Forwarded-Proto": proto} if proto else {}
    assert transport.is_https(request(remote=remote, tls=tls, headers=headers), PROXIES) is expected


# -- transport_security and HSTS -----------------------------------------------------------


def production() -> web.Application:
    return app_with(mode=Mode.PRODUCTION, trusted_proxies=PROXIES, hsts_max_age=600)


async def test_production_refuses_plaintext_with_https_required() -> None:
    with pytest.raises(errors.Problem) as refused:
        await transport.transport_security(request(app=production()), ok)
    assert refused.value.status == 403
    assert refused.value.type == errors.TYPE_BASE + "https-required"


async def test_production_refuses_a_forged_forwarded_proto() -> None:
    spoofed = request(app=production(), headers={"X-Forwarded-Proto": "https"})
    with pytest.raises(errors.Problem):
        await transport.transport_security(spoofed, ok)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_stay_allowed_over_plaintext(path: str) -> None:
    response = await transport.transport_security(request(path, app=production()), ok)
    assert response.status == 200


@pytest.mark.parametrize(
    ("remote", "tls", "headers"),
    [
        pytest.param("203.0.113.9", True, {}, id="direct TLS"),
        pytest.param("10.0.0.2", False, {"X-Forwarded-Proto": "https"}, id="trusted proxy"),
    ],
)
async def test_production_serves_https(remote: str, tls: bool, headers: dict[str, str]) -> None:
    secure = request(app=production(), remote=remote, tls=tls, headers=headers)
    response = await transport.transport_security(secure, ok)
    assert response.status == 200


async def test_development_serves_plaintext() -> None:
    response = await transport.transport_security(request(app=app_with()), ok)
    assert response.status == 200


async def test_hsts_is_sent_on_https_in_production() -> None:
    response = web.Response()
    await transport.add_hsts_header(request(app=production(), tls=True), response)
    assert response.headers["Strict-Transport-Security"] == "max-age=600; includeSubDomains"


@pytest.mark.parametrize(
    ("app", "tls"),
    [
        pytest.param(production, False, id="plaintext probe in production"),
        pytest.param(app_with, True, id="TLS in development"),
    ],
)
async def test_hsts_is_not_sent_elsewhere(app: Callable[[], web.Application], tls: bool) -> None:
    response = web.Response()
    await transport.add_hsts_header(request("/healthz", app=app(), tls=tls), response)
    assert "Strict-Transport-Security" not in response.headers


# -- CORS ----------------------------------------------------------------------------------


def cors_app() -> web.Application:
    return app_with(cors_origins=[FRONTEND])


def preflight(origin: str) -> web.Request:
    return request(
        method="OPTIONS",
        app=cors_app(),
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )


async def test_a_preflight_from_an_allowed_origin_is_answered_without_the_handler() -> None:
    async def never(_: web.Request) -> web.StreamResponse:
        raise AssertionError("a preflight must not reach routing or authentication")

    response = await transport.cors(preflight(FRONTEND), never)
    assert response.status == 204
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    allowed = {h.strip() for h in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"Authorization", "Content-Type", "If-Match", "Idempotency-Key"} <= allowed
    assert "X-Request-Id" in allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert int(response.headers["Access-Control-Max-Age"]) > 0


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "https://app.example/"])
async def test_a_preflight_from_another_origin_is_refused(origin: str) -> None:
    with pytest.raises(errors.Problem) as refused:
        await transport.cors(preflight(origin), ok)
    assert refused.value.status == 403
    assert refused.value.type == errors.TYPE_BASE + "cors-origin-not-allowed"


async def test_plain_options_is_left_to_routing() -> None:
    response = await transport.cors(request(method="OPTIONS", app=cors_app()), ok)
    assert response.status == 200


async def test_an_allowed_origin_may_read_the_response_and_its_headers() -> None:
    response = web.Response(headers={"Vary": "Accept"})
    await transport.add_cors_headers(
        request(app=cors_app(), headers={"Origin": FRONTEND}), response
    )
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    exposed = {h.strip() for h in response.headers["Access-Control-Expose-Headers"].split(",")}
    assert exposed == {"X-Request-Id", "ETag", "RateLimit", "RateLimit-Policy", "Retry-After"}
    assert response.headers["Vary"] == "Accept, Origin"


async def test_another_origin_gets_no_cors_headers() -> None:
    response = web.Response()
    evil = request(app=cors_app(), headers={"Origin": "https://evil.example"})
    await transport.add_cors_headers(evil, response)
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    assert response.headers["Vary"] == "Origin"


async def test_refused_preflights_log_one_short_line_per_client_not_one_per_request(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = "https://" + "a" * 8192 + ".example"
    # A fresh sampler whose window outlasts the test, however loaded the machine (300
    # refusals once took more than the 10 s window in CI and logged a second line).
    monkeypatch.setattr(transport, "_refusals", logs.EventSampler(every=3600))

    def sent_from(remote: str) -> web.Request:
        return preflight(huge).clone(remote=remote)

    with caplog.at_level("WARNING", logger="dockyard.api.transport"):
        for n in range(300):
            with pytest.raises(errors.Problem) as refused:
                # One client rotating through its IPv6 /64, then one other client.
                await transport.cors(sent_from(f"2001:db8:77::{n:x}"), ok)
        with pytest.raises(errors.Problem):
            await transport.cors(sent_from("198.51.100.77"), ok)

    lines = [r for r in caplog.records if r.getMessage() == "cors.origin_refused"]
    assert [r.__dict__["source_ip"] for r in lines] == ["2001:db8:77::0", "198.51.100.77"]
    assert all(len(r.__dict__["origin"]) < 300 for r in lines)
    assert len(refused.value.detail) < 400  # the answer does not echo 8 KB back either


async def test_plaintext_refusals_log_one_line_per_client() -> None:
    production = app_with(mode="production")
    with pytest.raises(errors.Problem):
        await transport.transport_security(request(app=production, remote="192.0.2.55"), ok)
    assert not transport._refusals.due("plaintext:192.0.2.55")  # just logged: quiet now
