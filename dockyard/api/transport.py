"""Transport rules: HTTPS and HSTS in production, the client's address behind trusted
proxies, and CORS for the frontend's origins.

Both middlewares sit right inside ``middlewares.problems``, so what they refuse is
rendered as problem+json, and outside authentication, so a plaintext request is refused
before a token is looked at and a CORS preflight is answered without one. The headers
every response needs (HSTS, CORS) are added in ``on_response_prepare`` hooks, so error
responses rendered further out carry them too: a browser cannot read a 401 that lacks
``Access-Control-Allow-Origin``.

Forwarded headers are believed only from ``settings.trusted_proxies``: anyone can send
``X-Forwarded-Proto: https`` or ``X-Forwarded-For``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

from aiohttp import web
from aiohttp.typedefs import Handler

from dockyard.api import errors, keys
from dockyard.api.ratelimit.addresses import address_group
from dockyard.core import logs
from dockyard.core.settings import Mode

logger = logging.getLogger(__name__)

Networks = Sequence[IPv4Network | IPv6Network]

# Kubelet probes speak plaintext to the pod even when clients must use HTTPS.
PROBE_PATHS = frozenset({"/healthz", "/readyz"})

FORWARDED_FOR = "X-Forwarded-For"
FORWARDED_PROTO = "X-Forwarded-Proto"

CORS_ALLOW_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
CORS_ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "If-Match",
    "Idempotency-Key",
    "X-Request-Id",
)
CORS_EXPOSE_HEADERS = ("X-Request-Id", "ETag", "RateLimit", "RateLimit-Policy", "Retry-After")
CORS_MAX_AGE = 600  # seconds a browser may cache a preflight answer


# -- who is calling, over what -------------------------------------------------------------


def parse_ip(text: str) -> IPv4Address | IPv6Address | None:
    """An address as proxies write it (``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``), or None."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]  # IPv4 with a port; bare IPv6 has several colons
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_trusted(address: str | None, trusted_proxies: Networks) -> bool:
    ip = parse_ip(address) if address else None
    return ip is not None and any(ip in network for network in trusted_proxies)


def client_ip(request: web.Request, trusted_proxies: Networks) -> str | None:
    """The caller's address: the peer, or behind trusted proxies the rightmost hop of
    ``X-Forwarded-For`` that is not one of them (hops further left could be forged)."""
    peer = request.remote
    if not is_trusted(peer, trusted_proxies):
        return peer
    hops = [
        hop.strip()
        for header in request.headers.getall(FORWARDED_FOR, ())
        for hop in header.split(",")
        if hop.strip()
    ]
    nearest = peer
    for hop in reversed(hops):
        ip = parse_ip(hop)
        if ip is None:
            # Garbage written by someone we do not trust: the last trusted hop is all we know.
            return nearest
        if not any(ip in network for network in trusted_proxies):
            return str(ip)
        nearest = str(ip)
    return nearest


def is_https(request: web.Request, trusted_proxies: Networks) -> bool:
    """Whether the client spoke HTTPS: to us directly, or to a trusted proxy in front.

    The trusted proxy must set ``X-Forwarded-Proto`` to the scheme the client used;
    when a chain of proxies appended to it, the value nearest us (rightmost) counts.
    """
    if request.secure:
        return True
    if not is_trusted(request.remote, trusted_proxies):
        return False
    forwarded = request.headers.get(FORWARDED_PROTO, "")
    return forwarded.rsplit(",", 1)[-1].strip().lower() == "https"


# Refusals happen before authentication and the rate limiter, at whatever rate a client
# sends them: one line per client (an IPv6 one by its /64) per ten seconds says enough.
_refusals = logs.EventSampler()


# -- HTTPS and HSTS ------------------------------------------------------------------------


def https_required() -> errors.Problem:
    return errors.HTTPS_REQUIRED(
        "This API is served over HTTPS only; repeat the request with https://.",
    )


@web.middleware
async def transport_security(request: web.Request, handler: Handler) -> web.StreamResponse:
    """In production, refuse plaintext (except the kubelet's probes)."""
    settings = request.app[keys.SETTINGS]
    if (
        settings.mode is Mode.PRODUCTION
        and request.path not in PROBE_PATHS
        and not is_https(request, settings.trusted_proxies)
    ):
        source = client_ip(request, settings.trusted_proxies) or "-"
        if _refusals.due(f"plaintext:{address_group(source, settings.client_networks)}"):
            logs.security_event(
                logger,
                "transport.plaintext_refused",
                path=logs.clipped(request.path),
                source_ip=source,
            )
        raise https_required()
    return await handler(request)


async def add_hsts_header(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: HSTS on every HTTPS response in production.

    Never on plaintext: browsers ignore it there, and RFC 6797 forbids sending it.
    """
    settings = request.app[keys.SETTINGS]
    if settings.mode is Mode.PRODUCTION and is_https(request, settings.trusted_proxies):
        response.headers["Strict-Transport-Security"] = (
            f"max-age={settings.hsts_max_age}; includeSubDomains"
        )


# -- CORS ----------------------------------------------------------------------------------


def allowed_origin(request: web.Request, origins: Sequence[str]) -> str | None:
    """The request's Origin when it is on the allowlist (exact match), else None."""
    origin = request.headers.get("Origin")
    # "null" is what sandboxed frames and file:// pages send: never one frontend.
    if origin is None or origin == "null" or origin not in origins:
        return None
    return origin


def cors_origin_refused(origin: str) -> errors.Problem:
    return errors.CORS_ORIGIN_NOT_ALLOWED(
        f"Cross-origin requests from {origin} are not allowed.",
    )


@web.middleware
async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer CORS preflights here, before routing (aiohttp would say 405) and before
    authentication (browsers send preflights without credentials)."""
    if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
        return await handler(request)
    origins = request.app[keys.SETTINGS].cors_origins
    origin = allowed_origin(request, origins)
    if origin is None:
        sent = logs.clipped(request.headers.get("Origin", "(none)"))
        settings = request.app[keys.SETTINGS]
        source = client_ip(request, settings.trusted_proxies) or "-"
        if _refusals.due(f"cors:{address_group(source, settings.client_networks)}"):
            logs.security_event(
                logger,
                "cors.origin_refused",
                origin=sent,
                path=logs.clipped(request.path),
                source_ip=source,
            )
        raise cors_origin_refused(sent)
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ", ".join(CORS_ALLOW_METHODS),
            "Access-Control-Allow-Headers": ", ".join(CORS_ALLOW_HEADERS),
            "Access-Control-Max-Age": str(CORS_MAX_AGE),
            "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        },
    )


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: let an allowed origin read the response; nothing for others.

    ``Vary: Origin`` goes on every response once origins are configured, so a shared
    cache never hands one origin's answer to another.
    """
    origins = request.app[keys.SETTINGS].cors_origins
    if not origins:
        return
    _add_vary(response, "Origin")
    origin = allowed_origin(request, origins)
    if origin is None:
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = ", ".join(CORS_EXPOSE_HEADERS)


def _add_vary(response: web.StreamResponse, header: str) -> None:
    present = [v.strip() for v in response.headers.get("Vary", "").split(",") if v.strip()]
    if header.lower() not in (v.lower() for v in present):
        response.headers["Vary"] = ", ".join([*present, header])
