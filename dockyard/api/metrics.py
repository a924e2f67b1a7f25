"""The API's Prometheus metrics: request latency per route, requests in flight, problems by type.

Label values come from bounded sets only (route templates, a few methods, status
classes, problem slugs), so a scanner probing random paths cannot grow the series.
"""

from __future__ import annotations

import json

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dockyard.api import errors
from dockyard.core import metrics

# The route label of requests no route matched: one series, whatever the path.
UNMATCHED = "unmatched"
OTHER = "other"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ApiMetrics:
    """The API's instruments, in a registry of their own (one per app)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else metrics.new_registry()
        self.request_duration = Histogram(
            "dockyard_api_request_duration_seconds",
            "Time to answer a request, by route template, method and status class.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "dockyard_api_requests_in_flight",
            "Requests being handled right now.",
            registry=self.registry,
        )
        self.dependency_ready = Gauge(
            "dockyard_api_dependency_ready",
            "Whether each dependency answered the last readiness check (1) or not (0).",
            ["dependency"],
            registry=self.registry,
        )
        self.errors = Counter(
            "dockyard_api_errors",
            "Problem responses (application/problem+json), by problem type slug.",
            ["type"],
            registry=self.registry,
        )

    def observe(
        self, *, route: str | None, method: str, status: int, seconds: float, problem: str | None
    ) -> None:
        """Record one finished request (``problem``: its problem type slug, if it failed)."""
        self.request_duration.labels(
            route=route or UNMATCHED,
            method=method if method in _METHODS else OTHER,
            status=f"{status // 100}xx",
        ).observe(seconds)
        if problem is not None:
            self.errors.labels(type=problem).inc()


def problem_slug(response: web.StreamResponse) -> str | None:
    """The problem type slug of a problem+json response, ``None`` for any other response.

    Read from the rendered document, so the mapping from exceptions to problems stays in
    one place (``middlewares.problems``).
    """
    if response.content_type != errors.PROBLEM_JSON:
        return None
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, bytes):
        return OTHER
    try:
        type_uri = json.loads(body).get("type")
    except (ValueError, AttributeError):
        return OTHER
    if not isinstance(type_uri, str) or not type_uri.startswith(errors.TYPE_BASE):
        return OTHER
    return type_uri.removeprefix(errors.TYPE_BASE)
