"""What the rate limit integration tests share: settings, policies applied with kubectl,
and waiting until an app has a policy in force.

Each test's app treats the test's own fresh namespace as its platform namespace, so its
policies apply to every request of that app and to no other session's app on the
shared test bed (for those, the namespace is just a tenant nobody calls about).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml
from aiohttp import web

from dockyard.api import keys
from dockyard.core.settings import Settings
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl

RULES_PATH = "/api/v1/me"
T = TypeVar("T")


def settings(state: State, namespace: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": state.database_url,
        "kubeconfig": Path(state.kubeconfig),
        "redis_url": state.redis_url,
        "metrics_port": None,
        "namespace": namespace,
        "ratelimit_status_interval": 1.0,
        **overrides,
    }
    return Settings(**values)


def rule(name: str, requests: int, period: str = "minute", **fields: Any) -> dict[str, Any]:
    return {"name": name, "limit": {"requests": requests, "period": period}, **fields}


def manifest(
    namespace: str, name: str, *rules: dict[str, Any], mode: str = "Enforce"
) -> dict[str, Any]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"mode": mode, "rules": list(rules)},
    }


def apply(kubectl: Kubectl, *objects: dict[str, Any]) -> None:
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objects))


async def in_force(app: web.Application, namespace: str, name: str, within: float = 10.0) -> None:
    """Wait until ``app`` has the current generation of the policy in force."""
    service = app[keys.RATE_LIMITING]
    cache = app[keys.RATE_LIMIT_POLICY_CACHE]
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        obj = cache.get(namespace, name)
        report = service.index.reports.get((namespace, name))
        if (
            obj is not None
            and report is not None
            and report.generation == obj["metadata"].get("generation")
        ):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"policy {namespace}/{name} not in force within {within}s")


async def eventually(
    probe: Callable[[], T | None], within: float = 20.0, interval: float = 0.25
) -> T:
    """Poll a blocking ``probe`` (kubectl) in a thread until it returns something, without
    stalling the event loop the apps under test run on."""
    deadline = time.monotonic() + within
    last: T | None = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(probe)
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {within}s; last value: {last!r}")


def metric(app: web.Application, name: str, labels: dict[str, str]) -> float:
    value = app[keys.METRICS].registry.get_sample_value(name, labels)
    return 0.0 if value is None else value
