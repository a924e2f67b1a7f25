"""Tracing is configured from the standard OTel variables; spans say little and name shapes."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from dockyard.core.db import statement_keyword
from dockyard.core.kube import path_template
from dockyard.core.telemetry import TelemetrySettings, build_tracing

OTEL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER",
)


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_without_an_endpoint_no_exporter_is_configured_and_nothing_is_recorded(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    tracing = build_tracing(TelemetrySettings(), default_service_name="dockyard-api")
    span = tracing.tracer("test").start_span("GET /readyz")
    assert tracing.exporter is None
    assert not span.is_recording()
    # Not recorded, but still identified: logs and outgoing calls carry the trace id.
    assert span.get_span_context().is_valid


def test_an_empty_endpoint_counts_as_unset(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    assert TelemetrySettings().traces_endpoint() is None


def test_the_generic_endpoint_gets_the_traces_path(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    tracing = build_tracing(TelemetrySettings(), default_service_name="dockyard-api")
    assert isinstance(tracing.exporter, OTLPSpanExporter)
    assert TelemetrySettings().traces_endpoint() == "http://collector:4318/v1/traces"
    assert tracing.tracer("test").start_span("x").is_recording()
    tracing.provider.shutdown()


def test_the_traces_endpoint_is_used_as_given_and_wins(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    clean_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    clean_environment.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://traces.example/otlp")
    assert TelemetrySettings().traces_endpoint() == "https://traces.example/otlp"


def test_an_invalid_endpoint_fails_at_start_up(clean_environment: pytest.MonkeyPatch) -> None:
    clean_environment.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318 please")
    with pytest.raises(ValueError, match="otel_exporter_otlp_endpoint"):
        TelemetrySettings()


def test_the_service_name_defaults_to_the_component_and_can_be_overridden(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    default = build_tracing(TelemetrySettings(), default_service_name="dockyard-api")
    assert default.provider.resource.attributes["service.name"] == "dockyard-api"
    clean_environment.setenv("OTEL_SERVICE_NAME", "dockyard-api-eu")
    named = build_tracing(TelemetrySettings(), default_service_name="dockyard-api")
    assert named.provider.resource.attributes["service.name"] == "dockyard-api-eu"


def test_an_injected_processor_receives_spans_without_an_exporter(
    clean_environment: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    tracing = build_tracing(
        TelemetrySettings(),
        default_service_name="dockyard-api",
        span_processors=[SimpleSpanProcessor(exporter)],
    )
    tracing.tracer("test").start_span("work").end()
    assert tracing.exporter is None
    assert [span.name for span in exporter.get_finished_spans()] == ["work"]


@pytest.mark.parametrize(
    ("query", "keyword"),
    [
        ("SELECT 1", "SELECT"),
        ("  insert into audit_events (actor) values ($1)", "INSERT"),
        ("-- newest first\nWITH recent AS (SELECT 1) SELECT * FROM recent", "WITH"),
        ("/* keyset page */ update idempotency_keys set x = $1", "UPDATE"),
        ("", "SQL"),
        ("  (SELECT 1)", "SQL"),
    ],
)
def test_sql_spans_are_named_by_the_first_keyword_only(query: str, keyword: str) -> None:
    assert statement_keyword(query) == keyword


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/readyz", "/readyz"),
        (
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "/apis/authentication.k8s.io/v1/tokenreviews",
        ),
        (
            "/apis/dockyard.io/v1alpha1/namespaces/team-a/environments",
            "/apis/dockyard.io/v1alpha1/namespaces/{namespace}/environments",
        ),
        (
            "/apis/dockyard.io/v1alpha1/namespaces/team-a/environments/web/status",
            "/apis/dockyard.io/v1alpha1/namespaces/{namespace}/environments/{name}/status",
        ),
        ("/api/v1/namespaces/team-a", "/api/v1/namespaces/{name}"),
        ("/api/v1/namespaces/team-a/secrets/db", "/api/v1/namespaces/{namespace}/secrets/{name}"),
        ("/apis/dockyard.io/v1alpha1/environments", "/apis/dockyard.io/v1alpha1/environments"),
    ],
)
def test_kubernetes_spans_name_the_path_shape_not_the_objects(path: str, template: str) -> None:
    assert path_template(path) == template
