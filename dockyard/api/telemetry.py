"""The API's telemetry in the request pipeline: a server span and metrics for every request.

Two middlewares, right after the request context (so the request id is known) and
outside ``problems`` (so they see the status the client gets), and two cleanup
contexts: the tracer provider, built before the pools and clients that trace through
it and shut down after them, and the ``/metrics`` server on its own port.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler
from opentelemetry import propagate
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.trace import Span, SpanKind

from dockyard.api import keys
from dockyard.api.metrics import problem_slug
from dockyard.core import logs, metrics, telemetry

SERVICE_NAME = "dockyard-api"
# nginx's code for "the client closed the connection before the answer": a client
# going away is not a server error.
CLIENT_CLOSED_REQUEST = 499

CleanupContext = Callable[[web.Application], AsyncIterator[None]]


def route_template(request: web.Request) -> str | None:
    """The matched route's template (``/api/v1/namespaces/{namespace}/environments``)."""
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


@web.middleware
async def trace_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A SERVER span per request, continuing the caller's ``traceparent`` if it sent one."""
    route = route_template(request)
    attributes: dict[str, str] = {
        "http.request.method": request.method,
        "url.path": request.path,
        "url.scheme": request.scheme,
    }
    if route is not None:
        attributes["http.route"] = route
    request_id = request.get(keys.REQUEST_ID)
    if request_id:
        attributes["dockyard.request_id"] = request_id
    with request.app[keys.TRACER].start_as_current_span(
        # Semantic conventions: "METHOD route", or the method alone when nothing matched.
        f"{request.method} {route}" if route is not None else request.method,
        context=propagate.extract(request.headers),
        kind=SpanKind.SERVER,
        attributes=attributes,
        # Exception messages can quote data; failures are recorded by type below.
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        # Logs, the audit trail and outgoing annotations read the trace id from here.
        token = logs.trace_id_var.set(telemetry.trace_id_of(span))
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # redirects, which ``problems`` lets through
            _set_status(span, exc.status)
            raise
        except Exception as exc:
            telemetry.mark_failed(span, type(exc).__qualname__)
            raise
        finally:
            logs.trace_id_var.reset(token)
        _set_status(span, response.status)
        return response


def _set_status(span: Span, status: int) -> None:
    span.set_attribute("http.response.status_code", status)
    # For a server, a 4xx is the client's mistake, not a failed span.
    if status >= 500:
        telemetry.mark_failed(span, str(status))


@web.middleware
async def measure_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Latency by route template, requests in flight, and problem responses by type."""
    instruments = request.app[keys.METRICS]
    started = time.perf_counter()
    status, problem = 500, None
    instruments.in_flight.inc()
    try:
        response = await handler(request)
        status, problem = response.status, problem_slug(response)
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED_REQUEST
        raise
    finally:
        instruments.in_flight.dec()
        instruments.observe(
            route=route_template(request),
            method=request.method,
            status=status,
            seconds=time.perf_counter() - started,
            problem=problem,
        )


def tracing(span_processors: Sequence[SpanProcessor] = ()) -> CleanupContext:
    """The cleanup context owning the app's tracer provider (extra processors: tests)."""

    async def tracer_provider(app: web.Application) -> AsyncIterator[None]:
        built = telemetry.build_tracing(
            telemetry.TelemetrySettings(),
            default_service_name=SERVICE_NAME,
            span_processors=span_processors,
        )
        app[keys.TRACING] = built
        app[keys.TRACER] = built.tracer(__name__)
        yield
        await built.shutdown()

    return tracer_provider


def metrics_endpoint(host: str) -> CleanupContext:
    """The cleanup context serving ``/metrics`` on ``settings.metrics_port`` of ``host``."""

    async def metrics_server(app: web.Application) -> AsyncIterator[None]:
        port = app[keys.SETTINGS].metrics_port
        if port is None:
            yield
            return
        async with metrics.serving(app[keys.METRICS].registry, host=host, port=port):
            yield

    return metrics_server
