"""The API's metric labels stay bounded, and errors are counted by problem type."""

from __future__ import annotations

import json

from aiohttp import web
from prometheus_client import CollectorRegistry

from dockyard.api import errors
from dockyard.api.metrics import ApiMetrics, problem_slug


def _sample(metrics: ApiMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_app_has_a_registry_of_its_own() -> None:
    first, second = ApiMetrics(), ApiMetrics()
    first.observe(route="/healthz", method="GET", status=200, seconds=0.01, problem=None)
    count = "dockyard_api_request_duration_seconds_count"
    assert _sample(first, count, route="/healthz", method="GET", status="2xx") == 1
    assert _sample(second, count, route="/healthz", method="GET", status="2xx") is None


def test_unmatched_routes_and_unknown_methods_share_one_series() -> None:
    metrics = ApiMetrics(CollectorRegistry())
    for method in ("PROPFIND", "BREW"):
        metrics.observe(route=None, method=method, status=405, seconds=0.001, problem=None)
    count = "dockyard_api_request_duration_seconds_count"
    assert _sample(metrics, count, route="unmatched", method="other", status="4xx") == 2


def test_a_problem_is_counted_by_its_type_slug() -> None:
    metrics = ApiMetrics(CollectorRegistry())
    metrics.observe(route=None, method="GET", status=404, seconds=0.001, problem="not-found")
    assert _sample(metrics, "dockyard_api_errors_total", type="not-found") == 1


def test_the_slug_is_read_from_the_rendered_problem() -> None:
    problem = errors.too_many_requests(3)
    body = problem.document(instance="/x", request_id="r").model_dump(mode="json")
    response = web.Response(status=429, text=json.dumps(body), content_type=errors.PROBLEM_JSON)
    assert problem_slug(response) == "too-many-requests"
    assert problem_slug(web.json_response({"type": errors.TYPE_BASE + "x"})) is None


def test_a_foreign_problem_type_does_not_become_a_label() -> None:
    response = web.Response(
        text=json.dumps({"type": "https://evil.example/" + "a" * 500}),
        content_type=errors.PROBLEM_JSON,
    )
    assert problem_slug(response) == "other"
