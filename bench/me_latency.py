"""p95 of ``GET /api/v1/me`` under concurrent load, with the auth caches warm, against
its peer in the same run: one TokenReview plus one SubjectAccessReview made directly
against the test bed's kube-apiserver (what the API would cost per request uncached).

Each round loads the API and then the peer with the same requests; ``--rounds`` (3)
alternate them, and the figure is the median of the rounds' p95 ratios (goal at most 0.2x).

Run: ``.venv/bin/python -m bench.me_latency [--requests 2000] [--concurrency 16]``.
Writes ``bench/results/me_latency.json``; the API's log goes to ``results/logs``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import (
    Figure,
    Spread,
    bound_figure,
    free_port,
    ratio_figure,
    spawn,
    stop,
    write_result,
)
from dockyard.core.kube import KubeClient, KubeConfig
from dockyard.testbed.cluster import State, Testbed


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {
        "p50_ms": pick(0.50),
        "p95_ms": pick(0.95),
        "p99_ms": pick(0.99),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2),
        "n": len(ordered),
    }


async def _load(
    call: Callable[[], Awaitable[None]], requests: int, concurrency: int
) -> tuple[list[float], float]:
    samples: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            queue.get_nowait()
            started = time.perf_counter()
            await call()
            samples.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


async def _bench(
    state: State, token: str, port: int, requests: int, concurrency: int, rounds: int
) -> tuple[dict[str, Any], list[Figure]]:
    url = f"http://127.0.0.1:{port}/api/v1/me?namespace=default"
    headers = {"Authorization": f"Bearer {token}"}
    kube = KubeClient.connect(KubeConfig.from_kubeconfig(Path(state.kubeconfig)))
    api_rounds: list[dict[str, float]] = []
    peer_rounds: list[dict[str, float]] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(100):  # wait for the API, then warm its caches
            try:
                async with http.get(url, headers=headers) as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError("the API never answered 200 on /api/v1/me")

        async def api_call() -> None:
            async with http.get(url, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"/api/v1/me answered {response.status}")

        async def direct_call() -> None:
            review = await kube.create(
                "/apis/authentication.k8s.io/v1/tokenreviews",
                {
                    "apiVersion": "authentication.k8s.io/v1",
                    "kind": "TokenReview",
                    "spec": {"token": token},
                },
            )
            user = review["status"]["user"]
            await kube.create(
                "/apis/authorization.k8s.io/v1/subjectaccessreviews",
                {
                    "apiVersion": "authorization.k8s.io/v1",
                    "kind": "SubjectAccessReview",
                    "spec": {
                        "user": user["username"],
                        "groups": user.get("groups", []),
                        "resourceAttributes": {
                            "group": "dockyard.io",
                            "verb": "list",
                            "resource": "environments",
                            "namespace": "default",
                        },
                    },
                },
            )

        try:
            for _ in range(rounds):
                samples, wall = await _load(api_call, requests, concurrency)
                api_rounds.append({**_percentiles(samples), "throughput_rps": requests / wall})
                samples, wall = await _load(direct_call, requests, concurrency)
                peer_rounds.append({**_percentiles(samples), "throughput_rps": requests / wall})
        finally:
            await kube.close()

    api_p95 = Spread(tuple(r["p95_ms"] for r in api_rounds))
    peer_p95 = Spread(tuple(r["p95_ms"] for r in peer_rounds))
    figures = [
        ratio_figure("GET /api/v1/me p95, caches warm", api_p95, peer_p95, at_most=0.2, unit="ms"),
        bound_figure("GET /api/v1/me p95 (constitution)", api_p95.median, below=200, unit="ms"),
    ]
    result = {
        "benchmark": "GET /api/v1/me p95, auth caches warm",
        "requests": requests,
        "concurrency": concurrency,
        "rounds": rounds,
        "api": api_rounds,
        "peer_tokenreview_plus_sar": peer_rounds,
        "api_p95_ms": api_p95.as_dict(),
        "peer_p95_ms": peer_p95.as_dict(),
    }
    return result, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    testbed = Testbed()
    state, _ = testbed.up()
    token = testbed.user_token("bench-user", ["dockyard:bench"])
    port = free_port()
    env = dict(os.environ)
    env.update(
        {
            "DOCKYARD_KUBECONFIG": state.kubeconfig,
            "DOCKYARD_DATABASE_URL": state.database_url,
            "DOCKYARD_AUTH_CACHE_TTL": "300",
            "DOCKYARD_AUTHZ_CACHE_TTL": "300",
            "DOCKYARD_METRICS_PORT": str(free_port()),
            "DOCKYARD_LOG_LEVEL": "WARNING",
        }
    )
    api = spawn(
        [sys.executable, "-m", "dockyard.cli", "api", "--port", str(port)],
        env,
        "me_latency-api.log",
    )
    try:
        result, figures = asyncio.run(
            _bench(state, token, port, args.requests, args.concurrency, args.rounds)
        )
    finally:
        stop(api)
    write_result("me_latency", result, figures)


if __name__ == "__main__":
    main()
