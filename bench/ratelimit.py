"""The rate limiter's cost per request and its accuracy, each against a peer in the same run.

1. **Overhead.** The same app four ways, in one process, against the test bed: without
   the limiter middleware (the peer: a pass-through middleware in its place), with it
   and no policy in scope, with a policy counted in memory, and with a policy counted
   in Redis. The middleware in that place is timed in process, from entering it to
   leaving it minus the time spent below it (the rest of the pipeline and the
   handler), so the figure is the limiter's own work, not the noise of a whole request.
   Requests go one at a time, in interleaved rounds so that drift hits every variant
   alike, to a trivial route added for the benchmark. The policy's limit is far above
   the load: every request takes the full check. ``--runs`` (3) repeat the whole
   measurement; the figures are the medians of the runs' p99s.
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
import statistics
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.typedefs import Middleware

from bench.common import Figure, Spread, write_result
from dockyard.api import keys
from dockyard.api.app import create_app
from dockyard.api.ratelimit import middleware as rate_limit_middleware
from dockyard.core import migrations
from dockyard.core.settings import Settings
from dockyard.testbed.cluster import State, Testbed

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
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


@web.middleware
async def _pass_through(request: web.Request, handler: Handler) -> web.StreamResponse:
    return await handler(request)


def _timed(middleware: Middleware, samples: list[float]) -> Middleware:
    """``middleware``, its own time per request (below it excluded) added to ``samples``."""

    @web.middleware
    async def timed(request: web.Request, handler: Handler) -> web.StreamResponse:
        below = 0.0

        async def inner(req: web.Request) -> web.StreamResponse:
            nonlocal below
            started = time.perf_counter()
            try:
                return await handler(req)
            finally:
                below += time.perf_counter() - started

        started = time.perf_counter()
        try:
            return await middleware(request, inner)
        finally:
            if request.path == NOOP:
                samples.append(time.perf_counter() - started - below)

    return timed


@asynccontextmanager
async def _serve(
    state: State,
    namespace: str,
    *,
    redis: bool,
    limiter: bool = True,
    samples: list[float] | None = None,
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
    place = app.middlewares.index(rate_limit_middleware.limit_requests)
    timed = rate_limit_middleware.limit_requests if limiter else _pass_through
    app.middlewares[place] = _timed(timed, samples if samples is not None else [])
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


async def _overhead(
    urls: dict[str, str], own: dict[str, list[float]], requests: int, rounds: int = 10
) -> dict[str, Any]:
    """One run: every variant's own middleware time and whole-request time."""
    for values in own.values():
        values.clear()
    whole: dict[str, list[float]] = {name: [] for name in urls}
    async with aiohttp.ClientSession() as http:
        for url in urls.values():  # warm connections and caches
            for _ in range(200):
                async with http.get(url + NOOP) as response:
                    await response.read()
        for values in own.values():
            values.clear()
        for _ in range(rounds):
            for name, url in urls.items():
                for _ in range(requests // rounds):
                    started = time.perf_counter()
                    async with http.get(url + NOOP) as response:
                        await response.read()
                    whole[name].append(time.perf_counter() - started)
                    if response.status != 200:
                        raise RuntimeError(f"{name} answered {response.status}")
    return {
        name: {"middleware": _percentiles(own[name]), "whole_request": _percentiles(whole[name])}
        for name in urls
    }


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


async def _bench(
    state: State, namespace: str, requests: int, windows: int, runs: int
) -> tuple[dict[str, Any], list[Figure]]:
    conn = await asyncpg.connect(state.database_url)
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()
    empty = f"{namespace}-none"  # a platform namespace without policies
    own: dict[str, list[float]] = {
        name: [] for name in ("no_limiter", "limiter_no_policy", "policy_memory", "policy_redis")
    }
    async with AsyncExitStack() as stack:

        async def serve(name: str, ns: str, *, redis: bool, limiter: bool = True) -> str:
            return await stack.enter_async_context(
                _serve(state, ns, redis=redis, limiter=limiter, samples=own[name])
            )

        urls = {
            "no_limiter": await serve("no_limiter", namespace, redis=False, limiter=False),
            "limiter_no_policy": await serve("limiter_no_policy", empty, redis=False),
            "policy_memory": await serve("policy_memory", namespace, redis=False),
            "policy_redis": await serve("policy_redis", namespace, redis=True),
        }
        second_redis = await stack.enter_async_context(_serve(state, namespace, redis=True))
        overheads = [await _overhead(urls, own, requests) for _ in range(runs)]
        memory = await _accuracy([urls["policy_memory"]], windows)
        shared = await _accuracy([urls["policy_redis"], second_redis], windows)

    def p99s(name: str) -> Spread:
        return Spread(tuple(run[name]["middleware"]["p99_us"] for run in overheads))

    peer = p99s("no_limiter")
    figures = [
        _bound("limiter overhead p99, in memory", p99s("policy_memory"), peer, below=50),
        _bound("limiter overhead p99, with Redis", p99s("policy_redis"), peer, below=1000),
        _bound("limiter overhead p99, no policy in scope", p99s("limiter_no_policy"), peer, 50),
    ]
    result = {
        "benchmark": "rate limiter overhead per request and accuracy",
        "route": f"GET {NOOP} (trivial handler), one request at a time",
        "runs": runs,
        "overhead_runs": overheads,
        "middleware_p99_us": {name: p99s(name).as_dict(1) for name in own},
        "accuracy": {"memory_one_app": memory, "redis_two_apps": shared},
    }
    return result, figures


def _bound(figure: str, dockyard: Spread, peer: Spread, below: float) -> Figure:
    """The limiter's own p99 (median of runs) under an absolute bound, beside the pass-through's."""
    value = dockyard.median
    return Figure(
        figure,
        round(value, 1),
        round(peer.median, 1),
        round(value / peer.median, 2) if peer.median else None,
        f"< {below:g} us",
        value < below,
        "us",
        dockyard.as_dict()["spread"],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="per variant")
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
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
        result, figures = asyncio.run(
            _bench(state, namespace, args.requests, args.windows, args.runs)
        )
    finally:
        subprocess.run(
            [*kubectl, "delete", "namespace", namespace, "--wait=false"], capture_output=True
        )
    write_result("ratelimit", result, figures)


if __name__ == "__main__":
    main()
