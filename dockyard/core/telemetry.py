"""Tracing for the API and the operator: the tracer provider, its exporter and span helpers.

The provider is built at start-up from the standard OpenTelemetry variables, read by
``TelemetrySettings``, and shut down (flushing what is queued) at exit; nothing here
runs at import time, and no provider is installed globally, so several apps (or tests)
in one process each keep their own.

Without an OTLP endpoint there is no exporter and nothing is sampled: spans still get
ids and propagate them (logs carry the trace id, outgoing calls a ``traceparent``), but
recording costs next to nothing. Spans never carry exception messages, SQL text or
parameters: an error is recorded as its type only, since messages can quote data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace

import aiohttp
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.util.types import Attributes
from pydantic import AnyHttpUrl, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from yarl import URL

from dockyard import __version__

# The signal path OTLP/HTTP appends to the generic endpoint (the spec's rule; the
# traces-specific variable is used as given).
_TRACES_PATH = "/v1/traces"


class TelemetrySettings(BaseSettings):
    """The OpenTelemetry standard variables Dockyard reads itself (no ``DOCKYARD_`` prefix).

    The OTLP exporter still reads its transport knobs (``OTEL_EXPORTER_OTLP_HEADERS``,
    ``..._TIMEOUT``, ``..._CERTIFICATE``) and the SDK its sampler and resource variables,
    the standard way, when they are built at start-up.
    """

    model_config = SettingsConfigDict(extra="ignore", frozen=True, env_ignore_empty=True)

    otel_service_name: str | None = Field(
        default=None, description="service.name of every span; the component's name when unset"
    )
    otel_exporter_otlp_endpoint: AnyHttpUrl | None = Field(
        default=None, description="OTLP/HTTP collector base URL; /v1/traces is appended"
    )
    otel_exporter_otlp_traces_endpoint: AnyHttpUrl | None = Field(
        default=None, description="OTLP/HTTP traces URL, used as is; wins over the base URL"
    )

    def traces_endpoint(self) -> str | None:
        """Where spans are sent, or ``None`` when tracing is off."""
        if self.otel_exporter_otlp_traces_endpoint is not None:
            return str(self.otel_exporter_otlp_traces_endpoint)
        if self.otel_exporter_otlp_endpoint is not None:
            return str(self.otel_exporter_otlp_endpoint).rstrip("/") + _TRACES_PATH
        return None


@dataclass(frozen=True)
class Tracing:
    """A process component's tracer provider and the exporter it sends spans to, if any."""

    provider: TracerProvider
    exporter: SpanExporter | None

    def tracer(self, name: str) -> trace.Tracer:
        return self.provider.get_tracer(name, __version__)

    async def shutdown(self) -> None:
        # Shutting down flushes the queue over HTTP and joins the export thread: it
        # blocks, so it runs off the event loop.
        await asyncio.to_thread(self.provider.shutdown)


def build_tracing(
    settings: TelemetrySettings,
    *,
    default_service_name: str,
    span_processors: Sequence[SpanProcessor] = (),
) -> Tracing:
    """A tracer provider exporting over OTLP/HTTP when an endpoint is set.

    ``span_processors`` are added as well (tests pass an in-memory exporter's); with
    neither an endpoint nor a processor, nothing would receive a span, so none is
    sampled.
    """
    exporter: SpanExporter | None = None
    endpoint = settings.traces_endpoint()
    if endpoint is not None:
        # Imported here: protobuf and the HTTP stack are only worth loading when used.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=endpoint)
    recording = exporter is not None or bool(span_processors)
    provider = TracerProvider(
        resource=Resource.create(
            {
                SERVICE_NAME: settings.otel_service_name or default_service_name,
                SERVICE_VERSION: __version__,
            }
        ),
        # None: the SDK's default (parent-based, always on) or OTEL_TRACES_SAMPLER.
        sampler=None if recording else ALWAYS_OFF,
        # The owner shuts it down in its cleanup hook; an atexit hook per provider would
        # also keep every test's provider alive until the interpreter exits.
        shutdown_on_exit=False,
    )
    if exporter is not None:
        # Batched: spans are exported from the processor's own thread, never the loop.
        provider.add_span_processor(BatchSpanProcessor(exporter))
    for processor in span_processors:
        provider.add_span_processor(processor)
    return Tracing(provider=provider, exporter=exporter)


TRACEPARENT_ANNOTATION = "dockyard.io/traceparent"
"""The W3C traceparent of the REST request that last created or changed a custom
resource: the operator continues that trace for the reconcile it causes."""
TRACEPARENT_VARIABLE = "TRACEPARENT"
"""The traceparent a runner Job continues (an environment variable)."""


def traceparent() -> str | None:
    """The current span's W3C ``traceparent``, or None outside a valid span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def continued(value: str | None) -> Context | None:
    """The context a ``traceparent`` value continues (None for none, or a malformed one:
    the span then starts a trace of its own)."""
    if not value:
        return None
    context = propagate.extract({"traceparent": value})
    return context if trace.get_current_span(context).get_span_context().is_valid else None


def trace_id_of(span: Span) -> str | None:
    """The span's trace id as 32 hex digits (the W3C form logs carry), or ``None``."""
    context = span.get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None


def mark_failed(span: Span, error_type: str) -> None:
    """Mark a span as failed with a low-cardinality ``error.type``, never a message."""
    span.set_attribute("error.type", error_type)
    span.set_status(StatusCode.ERROR)


@contextmanager
def current_span(
    tracer: trace.Tracer,
    name: str,
    *,
    kind: SpanKind,
    attributes: Attributes = None,
    context: Context | None = None,
) -> Iterator[Span]:
    """A span made current for the block; an exception escaping it is recorded by type only."""
    with tracer.start_as_current_span(
        name,
        context=context,
        kind=kind,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except Exception as exc:
            mark_failed(span, type(exc).__qualname__)
            raise


SpanNamer = Callable[[str, URL], str]


def http_client_tracing(tracer: trace.Tracer, span_name: SpanNamer) -> aiohttp.TraceConfig:
    """An aiohttp ``TraceConfig`` giving each request of a session a CLIENT span.

    The span's context goes out as ``traceparent`` (through the configured propagator),
    so the server's own spans and audit logs join the caller's trace. It ends when the
    response headers arrive (or the request fails), so a long watch is one short span.
    """

    async def on_start(
        _: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestStartParams
    ) -> None:
        url = params.url
        span = tracer.start_span(
            span_name(params.method, url),
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": params.method,
                # Without the query: selectors and options add nothing to the trace.
                "url.full": str(url.with_query(None)),
                "server.address": url.host or "",
                "server.port": url.port or 0,
            },
        )
        ctx.span = span
        propagate.inject(params.headers, context=trace.set_span_in_context(span))

    async def on_end(
        _: aiohttp.ClientSession, ctx: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        span: Span = ctx.span
        status = params.response.status
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            mark_failed(span, str(status))
        span.end()

    async def on_exception(
        _: aiohttp.ClientSession,
        ctx: SimpleNamespace,
        params: aiohttp.TraceRequestExceptionParams,
    ) -> None:
        span: Span = ctx.span
        mark_failed(span, type(params.exception).__qualname__)
        span.end()

    config = aiohttp.TraceConfig()
    config.on_request_start.append(on_start)
    config.on_request_end.append(on_end)
    config.on_request_exception.append(on_exception)
    return config
