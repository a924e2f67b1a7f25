"""The rate limiter's cost per request and its accuracy, each against a peer in the same run.

1. **Overhead.** The same app four ways, in one process, against the test bed: without
   the limiter middleware (the peer), with it and no policy in scope, with a policy
   counted in memory, and with a policy counted in Redis. Requests go one at a time,
   in interleaved rounds so that drift hits every variant alike, to a trivial route
   added for the benchmark (so the figures are the pipeline's, not a handler's).
   The policy's limit is far above the load: every request takes the full check.
2. **Accuracy.** A 50/second rule (burst 0, keyed by client address) hammered by 12
   concurrent clients for consecutive 2-second windows: allowed requests per window
   against what GCRA promises (the full bucket once, then the rate), for one app on
   memory counters and for two apps sharing Redis (the global budget).

Run: ``.venv/bin/python -m bench.ratelimit [--requests 3000]``.
Writes ``bench/results/ratelimit.json``. Policies live in a namespace of the
benchmark's own (the apps' platform namespace), deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer

from dockyard.api import keys
from dockyard.api.app import create_app
from dockyard.api.ratelimit import middleware as rate_limit_middleware
from dockyard.core import migrations
from dockyard.core.settings import Settings
from dockyard.testbed.cluster import State, Testbed

RESULTS = Path(__file__).parent / "results" / "ratelimit.json"
NOOP = "/bench/noop"
ACCURACY = "/bench/accuracy"
RATE = 50
WINDOW_SECONDS = 2.0


async def _noop(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def _policies(namespace: str) -> list[dict[str, Any]]:
    def policy(name: str, rule: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "RateLimitPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"rules": [rule]},
        }

    return [
        policy(
            "overhead",
            {
                "name": "per-address",
                "match": {"paths": [NOOP]},
                "limit": {"requests": 1_000_000_000, "period": "second"},
                "key": "ClientIP",
            },
        ),
        policy(
            "accuracy",
            {
                "name": "per-address",
                "match": {"paths": [ACCURACY]},
                "limit": {"requests": RATE, "period": "second"},
                "key": "ClientIP",
            },
        ),
    ]


@asynccontextmanager
async def _serve(
    state: State, namespace: str, *, redis: bool, limiter: bool = True
) -> AsyncIterator[str]:
    settings = Settings(
        database_url=state.database_url,  # type: ignore[arg-type]
        kubeconfig=Path(state.kubeconfig),
        redis_url=state.redis_url if redis else None,  # type: ignore[arg-type]
        metrics_port=None,
        namespace=namespace,
        log_level="ERROR",
    )
    app = create_app(settings)
    if not limiter:
        app.middlewares.remove(rate_limit_middleware.limit_requests)
    app.router.add_get(NOOP, _noop)
    app.router.add_get(ACCURACY, _noop)
    server = TestServer(app)
    await server.start_server()
    try:
        if limiter:
            service = app[keys.RATE_LIMITING]
            for _ in range(600):  # the two policies arrive through the watch
                if len(service.index.reports) >= 2:
                    break
                await asyncio.sleep(0.05)
        yield str(server.make_url(""))
    finally:
        await server.close()


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e6, 1)

    return {
        "p50_us": pick(0.50),
        "p99_us": pick(0.99),
        "mean_us": round(statistics.fmean(ordered) * 1e6, 1),
        "n": len(ordered),
    }


async def _overhead(urls: dict[str, str], requests: int, rounds: int = 10) -> dict[str, Any]:
    samples: dict[str, list[float]] = {name: [] for name in urls}
    async with aiohttp.ClientSession() as http:
        for url in urls.values():  # warm connections and caches
            for _ in range(200):
                async with http.get(url + NOOP) as response:
                    await response.read()
        for _ in range(rounds):
            for name, url in urls.items():
                for _ in range(requests // rounds):
                    started = time.perf_counter()
                    async with http.get(url + NOOP) as response:
                        await response.read()
                    samples[name].append(time.perf_counter() - started)
                    if response.status != 200:
                        raise RuntimeError(f"{name} answered {response.status}")
    figures = {name: _percentiles(values) for name, values in samples.items()}
    base = figures["no_limiter"]
    for name, figure in figures.items():
        if name != "no_limiter":
            figure["overhead_p50_us"] = round(figure["p50_us"] - base["p50_us"], 1)
            figure["overhead_p99_us"] = round(figure["p99_us"] - base["p99_us"], 1)
    return figures


async def _accuracy(urls: list[str], windows: int, concurrency: int = 12) -> dict[str, Any]:
    await asyncio.sleep(2)  # a full bucket at the start
    counts = [0] * windows
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        end = started + windows * WINDOW_SECONDS

        async def client(url: str) -> None:
            while (now := time.monotonic()) < end:
                async with http.get(url + ACCURACY) as response:
                    await response.read()
                if response.status == 200:
                    counts[min(windows - 1, int((now - started) // WINDOW_SECONDS))] += 1

        await asyncio.gather(*(client(urls[i % len(urls)]) for i in range(concurrency)))
    expected = [RATE * WINDOW_SECONDS + (RATE if i == 0 else 0) for i in range(windows)]
    errors = [round(100 * (c - e) / e, 2) for c, e in zip(counts, expected, strict=True)]
    return {
        "rule": f"{RATE}/second, burst 0, per client address",
        "window_seconds": WINDOW_SECONDS,
        "allowed_per_window": counts,
        "expected_per_window": expected,
        "error_percent": errors,
        "total_allowed": sum(counts),
        "total_expected": sum(expected),
        "total_error_percent": round(100 * (sum(counts) - sum(expected)) / sum(expected), 2),
    }


async def _bench(state: State, namespace: str, requests: int, windows: int) -> dict[str, Any]:
    conn = await asyncpg.connect(state.database_url)
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()
    empty = f"{namespace}-none"  # a platform namespace without policies
    async with AsyncExitStack() as stack:
        urls = {
            "no_limiter": await stack.enter_async_context(
                _serve(state, namespace, redis=False, limiter=False)
            ),
            "limiter_no_policy": await stack.enter_async_context(_serve(state, empty, redis=False)),
            "policy_memory": await stack.enter_async_context(_serve(state, namespace, redis=False)),
            "policy_redis": await stack.enter_async_context(_serve(state, namespace, redis=True)),
        }
        second_redis = await stack.enter_async_context(_serve(state, namespace, redis=True))
        overhead = await _overhead(urls, requests)
        memory = await _accuracy([urls["policy_memory"]], windows)
        shared = await _accuracy([urls["policy_redis"], second_redis], windows)
    return {
        "benchmark": "rate limiter overhead per request and accuracy",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "route": f"GET {NOOP} (trivial handler), one request at a time",
        "overhead": overhead,
        "accuracy": {"memory_one_app": memory, "redis_two_apps": shared},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="per variant")
    parser.add_argument("--windows", type=int, default=3)
    args = parser.parse_args()

    testbed = Testbed()
    state, _ = testbed.up()
    namespace = f"bench-ratelimit-{uuid.uuid4().hex[:6]}"
    kubectl = [str(Path(state.bin_dir) / "kubectl"), f"--kubeconfig={state.kubeconfig}"]
    subprocess.run([*kubectl, "create", "namespace", namespace], check=True, capture_output=True)
    try:
        subprocess.run(
            [*kubectl, "apply", "-f", "-"],
            input=yaml.safe_dump_all(_policies(namespace)),
            text=True,
            check=True,
            capture_output=True,
        )
        result = asyncio.run(_bench(state, namespace, args.requests, args.windows))
    finally:
        subprocess.run(
            [*kubectl, "delete", "namespace", namespace, "--wait=false"], capture_output=True
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
