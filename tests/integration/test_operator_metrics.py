"""The operator's ``/metrics`` on the test bed: after a backup that a Webhook announces,
a scrape has the reconcile, status-based and webhook series with the right values."""

from __future__ import annotations

import asyncio
import base64
import secrets
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from dockyard.testbed.cluster import State
from dockyard.testbed.processes import free_port
from tests.conftest import Kubectl
from tests.integration.test_backup_operator import (
    _apply,
    _backup,
    _environment,
    _key_secret,
    _wait_phase,
)
from tests.integration.test_webhooks import _status, _until, _webhook

pytestmark = pytest.mark.usefixtures("operator_process", "platform_migrated")


def _scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:  # nosec B310
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_scrape_shows_reconciles_backups_and_webhook_deliveries(
    kubectl: Kubectl,
    testbed_state: State,
    namespace: str,
    backup_root: Path,
    operator_metrics_port: int,
) -> None:
    delivered: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        delivered.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        await _webhook(kubectl, namespace, "hook", f"http://127.0.0.1:{port}/hook", secret)
        await _until(lambda: _ready(kubectl, namespace), what="Webhook Ready")
        await asyncio.to_thread(_environment, kubectl, testbed_state, namespace)
        await asyncio.to_thread(_key_secret, kubectl, namespace)
        await asyncio.to_thread(
            _apply, kubectl, namespace, _backup(namespace, "first", backup_root)
        )
        status = await asyncio.to_thread(_wait_phase, kubectl, namespace, "first", "Completed")

        async def announced() -> bool:
            return any(b"backup.completed" in body for body in delivered)

        await _until(announced, what="backup.completed delivered")
        await asyncio.sleep(2)  # the dispatcher's next pass updates the gauges
        scraped = await asyncio.to_thread(_scrape, operator_metrics_port)
    finally:
        await runner.cleanup()

    def value(name: str, **labels: str) -> float | None:
        return scraped.get((name, frozenset(labels.items())))

    completed = datetime.fromisoformat(status["completedAt"].replace("Z", "+00:00"))
    env = {"namespace": namespace, "environment": "shop"}
    assert value("dockyard_backup_last_success_timestamp_seconds", **env) == completed.timestamp()
    assert value("dockyard_backups", namespace=namespace, phase="Completed") == 1
    assert (value("dockyard_reconciles_total", kind="Backup", outcome="succeeded") or 0) >= 1
    assert (value("dockyard_reconcile_duration_seconds_count", kind="Environment") or 0) >= 1
    hook_labels = {"namespace": namespace, "webhook": "hook"}
    assert (value("dockyard_webhook_deliveries_total", **hook_labels, result="delivered") or 0) >= 1
    assert value("dockyard_webhook_breaker_state", **hook_labels) == 0
    assert value("dockyard_webhook_dead_letters", **hook_labels) == 0


async def _ready(kubectl: Kubectl, namespace: str) -> bool:
    conditions = (await _status(kubectl, namespace, "hook")).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
