"""Tracing: a server span per request continuing the caller's trace, with Kubernetes and
SQL calls as its children, and the trace id in every log line written meanwhile."""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id
from pytest_aiohttp import AiohttpClient, AiohttpServer

from dockyard.api.app import create_app
from dockyard.core import logs, telemetry
from dockyard.core.kube import KubeClient, KubeConfig
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import api_settings

Client = TestClient[object, object]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


@dataclass
class Traced:
    client: Client
    exporter: InMemorySpanExporter

    def spans_of(self, trace_id: str) -> list[ReadableSpan]:
        return [
            span
            for span in self.exporter.get_finished_spans()
            if span.context is not None and format_trace_id(span.context.trace_id) == trace_id
        ]


@pytest.fixture
async def traced(
    testbed_state: State, monkeypatch: pytest.MonkeyPatch, aiohttp_client: AiohttpClient
) -> Traced:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    exporter = InMemorySpanExporter()
    settings = api_settings(testbed_state, redis_url=None)
    app = create_app(settings, span_processors=[SimpleSpanProcessor(exporter)])
    return Traced(await aiohttp_client(app), exporter)


def _only(spans: list[ReadableSpan], kind: SpanKind, name: str) -> ReadableSpan:
    found = [span for span in spans if span.kind is kind and span.name == name]
    assert len(found) == 1, [(span.kind, span.name) for span in spans]
    return found[0]


def _is_child(child: ReadableSpan, parent: ReadableSpan) -> bool:
    assert child.parent is not None
    assert parent.context is not None
    return child.parent.span_id == parent.context.span_id


async def test_a_request_continues_the_callers_trace(traced: Traced) -> None:
    response = await traced.client.get("/readyz", headers={"traceparent": TRACEPARENT})
    assert response.status == 200
    spans = traced.spans_of(TRACE_ID)
    server = _only(spans, SpanKind.SERVER, "GET /readyz")
    assert server.parent is not None
    assert server.parent.is_remote
    assert format_span_id(server.parent.span_id) == PARENT_ID
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/readyz"
    assert server.attributes["http.request.method"] == "GET"
    assert server.attributes["url.path"] == "/readyz"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["dockyard.request_id"] == response.headers["X-Request-Id"]


async def test_the_readiness_query_is_a_sql_span_without_its_text(traced: Traced) -> None:
    await traced.client.get("/readyz", headers={"traceparent": TRACEPARENT})
    spans = traced.spans_of(TRACE_ID)
    server = _only(spans, SpanKind.SERVER, "GET /readyz")
    sql = _only(spans, SpanKind.CLIENT, "SELECT")
    assert _is_child(sql, server)
    assert sql.attributes is not None
    assert sql.attributes["db.system"] == "postgresql"
    assert sql.attributes["db.operation.name"] == "SELECT"
    assert "SELECT 1" not in json.dumps(dict(sql.attributes))


async def test_a_token_review_is_a_child_client_span(traced: Traced, testbed: Testbed) -> None:
    token = testbed.user_token("tracing-tester", [])
    response = await traced.client.get(
        "/api/v1/me",
        headers={"traceparent": TRACEPARENT, "Authorization": f"Bearer {token}"},
    )
    assert response.status == 200, await response.text()
    spans = traced.spans_of(TRACE_ID)
    server = _only(spans, SpanKind.SERVER, "GET /api/v1/me")
    review = _only(spans, SpanKind.CLIENT, "POST /apis/authentication.k8s.io/v1/tokenreviews")
    assert _is_child(review, server)
    assert review.attributes is not None
    assert review.attributes["http.request.method"] == "POST"
    assert review.attributes["http.response.status_code"] == 201
    assert str(review.attributes["url.full"]).endswith(
        "/apis/authentication.k8s.io/v1/tokenreviews"
    )


@pytest.fixture
def log_lines() -> Iterator[list[dict[str, object]]]:
    """Every dockyard log line, formatted when written (the ids live in context vars)."""
    lines: list[dict[str, object]] = []
    formatter = logs.JsonFormatter()

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(formatter.format(record)))

    handler = Capture(logging.WARNING)
    logger = logging.getLogger("dockyard")
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)


async def test_log_lines_of_a_request_carry_its_trace_id(
    traced: Traced, log_lines: list[dict[str, object]]
) -> None:
    response = await traced.client.get("/api/v1/me", headers={"traceparent": TRACEPARENT})
    assert response.status == 401
    request_id = response.headers["X-Request-Id"]
    mine = [line for line in log_lines if line.get("request_id") == request_id]
    assert mine, log_lines
    assert all(line.get("trace_id") == TRACE_ID for line in mine)


async def test_a_request_without_traceparent_starts_a_trace(traced: Traced) -> None:
    await traced.client.get("/healthz")
    server = _only(list(traced.exporter.get_finished_spans()), SpanKind.SERVER, "GET /healthz")
    assert server.parent is None


async def test_kubernetes_calls_send_their_span_as_traceparent(
    aiohttp_server: AiohttpServer,
) -> None:
    # The apiserver does not echo request headers, so a loopback server stands in for
    # this one assertion about what goes over the wire.
    seen: list[str] = []

    async def pod(request: web.Request) -> web.Response:
        seen.append(request.headers.get("traceparent", ""))
        return web.json_response({"kind": "Pod"})

    upstream = web.Application()
    upstream.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}", pod)
    exporter = InMemorySpanExporter()
    tracing = telemetry.build_tracing(
        telemetry.TelemetrySettings(),
        default_service_name="test",
        span_processors=[SimpleSpanProcessor(exporter)],
    )
    server = await aiohttp_server(upstream)
    config = KubeConfig(
        server=str(server.make_url("")).rstrip("/"), ssl_context=ssl.create_default_context()
    )
    client = KubeClient.connect(config, tracer_provider=tracing.provider)
    try:
        await client.get("/api/v1/namespaces/team-a/pods/web-0")
    finally:
        await client.close()
    span = _only(
        list(exporter.get_finished_spans()),
        SpanKind.CLIENT,
        "GET /api/v1/namespaces/{namespace}/pods/{name}",
    )
    assert span.context is not None
    trace_id, span_id = format_trace_id(span.context.trace_id), format_span_id(span.context.span_id)
    assert len(seen) == 1
    version, sent_trace, sent_parent, flags = seen[0].split("-")
    assert (version, sent_trace, sent_parent) == ("00", trace_id, span_id)
    assert int(flags, 16) & 1  # sampled
