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
    """The operator's restore drill instruments: the last measured RTO and RPO of each
    drill, and its runs by result. One series set per drill, removed with the drill."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        labels = ["namespace", "drill"]
        self.restore_seconds = Gauge(
            "dockyard_drill_last_restore_seconds",
            "How long the last run's restore took (the measured RTO), by drill.",
            labels,
            registry=self.registry,
        )
        self.backup_age_seconds = Gauge(
            "dockyard_drill_last_backup_age_seconds",
            "How old the last run's backup was when it started (the measured RPO), by drill.",
            labels,
            registry=self.registry,
        )
        self.runs = Counter(
            "dockyard_drill_runs",
            "Finished restore drill runs, by drill and result (Passed or Failed).",
            [*labels, "result"],
            registry=self.registry,
        )

    def observe(
        self,
        *,
        namespace: str,
        drill: str,
        result: DrillResult,
        restore_seconds: float | None,
        backup_age_seconds: float | None,
    ) -> None:
        """Record one finished run (an unmeasured value leaves its gauge as it was)."""
        self.runs.labels(namespace=namespace, drill=drill, result=result.value).inc()
        if restore_seconds is not None:
            self.restore_seconds.labels(namespace=namespace, drill=drill).set(restore_seconds)
        if backup_age_seconds is not None:
            self.backup_age_seconds.labels(namespace=namespace, drill=drill).set(backup_age_seconds)

    def forget(self, *, namespace: str, drill: str) -> None:
        """Remove the series of a deleted drill."""
        for gauge in (self.restore_seconds, self.backup_age_seconds):
            with suppress(KeyError):
                gauge.remove(namespace, drill)
        for result in DrillResult:
            with suppress(KeyError):
                self.runs.remove(namespace, drill, result.value)


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
