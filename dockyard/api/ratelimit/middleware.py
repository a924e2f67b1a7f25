"""The rate limit in the request pipeline: a middleware, and the headers on every response.

Where it sits: after transport security and CORS, **before** the audit trail and
``authenticate_and_authorize``. Unauthenticated requests must be limited too (per
address), including those whose token turns out to be invalid, and a throttled
request should cost neither an audit row nor a SubjectAccessReview. The subject, when
a rule needs it, is derived here through the same cached ``Authenticator`` that
authentication then uses (see ``service``), so placing the limiter first costs no
second TokenReview. The kubelet's probes are never limited.

The ``RateLimit-Policy``/``RateLimit`` headers are added in ``on_response_prepare``
from the verdict stored on the request, so they reach every response: the handler's,
a 429, and errors rendered further out by ``middlewares.problems``. A tenant's rules
are named there only when ``authenticate_and_authorize`` let the caller in
(``keys.AUTHORIZED``); on a 401, a 403 or a 429 they go by their aliases
(``namespace/limit-<n>``), which say how much, not what.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from dockyard.api import errors, keys
from dockyard.api.auth import AUDIT_SINK_PATH, holds_sink_token
from dockyard.api.ratelimit.decisions import describe
from dockyard.api.ratelimit.rules import Target
from dockyard.api.ratelimit.service import Request
from dockyard.api.telemetry import route_template
from dockyard.api.transport import PROBE_PATHS, client_ip


@web.middleware
async def limit_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Judge the request against the rules in scope; 429 when an enforced rule refuses."""
    service = request.app.get(keys.RATE_LIMITING)
    if service is None or request.path in PROBE_PATHS:
        return await handler(request)
    settings = request.app[keys.SETTINGS]
    if request.path == AUDIT_SINK_PATH and holds_sink_token(
        request.headers.get("Authorization"), settings.audit_sink_token
    ):
        # The apiserver drops a batch it was refused: its sink is not limited.
        return await handler(request)
    target = Target(
        method=request.method,
        path=request.path,
        route=route_template(request),
        namespace=request.match_info.get("namespace"),
    )
    rules = service.index.candidates(target)
    if not rules:
        return await handler(request)
    verdict = await service.judge(
        Request(
            address=client_ip(request, settings.trusted_proxies) or "-",
            headers=request.headers,
            authorization=request.headers.get("Authorization"),
            path=request.path,
            memo=request,
        ),
        rules,
        request.app.get(keys.AUTHENTICATOR),
    )
    if verdict is not None:
        request[keys.RATE_LIMIT] = verdict
        if not verdict.allowed:
            raise errors.too_many_requests(verdict.retry_after, describe(verdict.refusals))
    return await handler(request)


async def add_rate_limit_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the limits that applied to this request, and their state."""
    verdict = request.get(keys.RATE_LIMIT)
    if verdict is not None:
        # A tenant's rules are named only to callers authorized in its namespace.
        response.headers.update(verdict.headers(named=request.get(keys.AUTHORIZED, False)))
