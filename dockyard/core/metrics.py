"""Prometheus plumbing shared by the API and the operator: registries and the scrape endpoint
(and the operator's restore drill instruments, ``DrillMetrics``).

Each component gets its own ``CollectorRegistry`` rather than the client library's
global one, so several apps in one process (tests, ``dockyard dev``) never collide
over a metric name. ``/metrics`` is served by a small aiohttp server on its own port,
never beside the public API: what it reveals (routes, error rates, process details)
is for the cluster's scraper, not for clients.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

from aiohttp import hdrs, web
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)
from prometheus_client.exposition import choose_encoder

from dockyard.core.models.drill_runs import DrillResult

logger = logging.getLogger(__name__)

METRICS_PATH = "/metrics"


def new_registry() -> CollectorRegistry:
    """A registry of its own, with the process, platform and GC metrics every job exposes."""
    registry = CollectorRegistry(auto_describe=True)
    # The default collectors read only the process's own state, so sharing the
    # library's instances between registries is safe.
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


class DrillMetrics:
    """The operator's registry, and its count of the restore drill runs it finished, by
    drill and result. (The last RTO and RPO come from the drills' status, so that they
    survive a restart: ``dockyard.operator.events.observed``.)"""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.runs = Counter(
            "dockyard_drill_runs",
            "Restore drill runs this operator finished, by drill and result (Passed or Failed).",
            ["namespace", "drill", "result"],
            registry=self.registry,
        )

    def observe(self, *, namespace: str, drill: str, result: DrillResult) -> None:
        """Count one finished run."""
        self.runs.labels(namespace=namespace, drill=drill, result=result.value).inc()

    def forget(self, *, namespace: str, drill: str) -> None:
        """Remove the series of a deleted drill."""
        for result in DrillResult:
            with suppress(KeyError):
                self.runs.remove(namespace, drill, result.value)


def leading_gauge(registry: CollectorRegistry) -> Gauge:
    """``dockyard_operator_leading``: 1 on the operator replica that reconciles (it holds
    the Lease, ``dockyard.operator.leadership``), 0 on a standby."""
    return Gauge(
        "dockyard_operator_leading",
        "1 on the operator replica that reconciles (holds the Lease), 0 on a standby.",
        registry=registry,
    )


class OperatorMetrics:
    """The operator's own work: reconcile passes per kind, and webhook deliveries.

    Reconcile outcomes: ``succeeded``, ``retried`` (the handler asked Kopf to come back:
    waiting on a Job, a plan, the database) and ``failed``.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.leading = leading_gauge(registry)
        self.leading.set(1)  # handlers run only on the replica that leads
        self.reconcile_seconds = Histogram(
            "dockyard_reconcile_duration_seconds",
            "How long one reconcile pass took, by kind.",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.reconciles = Counter(
            "dockyard_reconciles",
            "Reconcile passes by kind and outcome (succeeded, retried, failed).",
            ["kind", "outcome"],
            registry=registry,
        )
        webhook = ["namespace", "webhook"]
        self.deliveries = Counter(
            "dockyard_webhook_deliveries",
            "Webhook delivery attempts by result (delivered, failed, dead_lettered).",
            [*webhook, "result"],
            registry=registry,
        )
        self.breaker = Gauge(
            "dockyard_webhook_breaker_state",
            "Each webhook endpoint's circuit breaker: 0 closed, 1 half-open, 2 open.",
            webhook,
            registry=registry,
        )
        self.dead_letters = Gauge(
            "dockyard_webhook_dead_letters",
            "Deliveries given up and not redelivered, by webhook.",
            webhook,
            registry=registry,
        )
        self.pending = Gauge(
            "dockyard_webhook_pending",
            "Deliveries waiting or being retried, by webhook.",
            webhook,
            registry=registry,
        )

    def forget_webhook(self, namespace: str, webhook: str) -> None:
        for gauge in (self.breaker, self.dead_letters, self.pending):
            with suppress(KeyError):
                gauge.remove(namespace, webhook)
        for result in ("delivered", "failed", "dead_lettered"):
            with suppress(KeyError):
                self.deliveries.remove(namespace, webhook, result)


async def exposition(registry: CollectorRegistry, accept: str | None) -> tuple[bytes, str]:
    """The registry's samples in the format the scraper asked for, and its content type."""
    encoder, content_type = choose_encoder(accept or "")
    # Collecting walks every metric (and reads /proc): keep it off the event loop.
    body = await asyncio.to_thread(encoder, registry)
    return body, content_type


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """An app answering ``GET /metrics`` with ``registry``'s samples, and nothing else."""

    async def scrape(request: web.Request) -> web.Response:
        body, content_type = await exposition(registry, request.headers.get(hdrs.ACCEPT))
        return web.Response(body=body, headers={hdrs.CONTENT_TYPE: content_type})

    app = web.Application()
    app.router.add_get(METRICS_PATH, scrape)
    return app


@asynccontextmanager
async def serving(registry: CollectorRegistry, *, host: str, port: int) -> AsyncIterator[list[Any]]:
    """Serve ``/metrics`` on ``host:port`` until the block exits; yields the bound addresses.

    A port that cannot be bound fails start-up: a component silently without metrics
    is an outage nobody sees.
    """
    runner = web.AppRunner(metrics_app(registry), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        logger.info("metrics endpoint listening", extra={"host": host, "port": port})
        yield runner.addresses
    finally:
        await runner.cleanup()
