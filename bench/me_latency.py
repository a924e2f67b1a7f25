"""p95 of ``GET /api/v1/me`` under concurrent load, with the auth caches warm, against
its peer in the same run: one TokenReview plus one SubjectAccessReview made directly
against the test bed's kube-apiserver (what the API would cost per request uncached).

Run: ``.venv/bin/python -m bench.me_latency [--requests 2000] [--concurrency 16]``.
Writes ``bench/results/me_latency.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from dockyard.core.kube import KubeClient, KubeConfig
from dockyard.testbed.cluster import State, Testbed

RESULTS = Path(__file__).parent / "results" / "me_latency.json"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    state: State, token: str, port: int, requests: int, concurrency: int
) -> dict[str, Any]:
    url = f"http://127.0.0.1:{port}/api/v1/me?namespace=default"
    headers = {"Authorization": f"Bearer {token}"}
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

        api_samples, api_wall = await _load(api_call, requests, concurrency)

    kube = KubeClient.connect(KubeConfig.from_kubeconfig(Path(state.kubeconfig)))
    try:

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

        peer_samples, peer_wall = await _load(direct_call, requests, concurrency)
    finally:
        await kube.close()

    api, peer = _percentiles(api_samples), _percentiles(peer_samples)
    return {
        "benchmark": "GET /api/v1/me p95, auth caches warm",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "requests": requests,
        "concurrency": concurrency,
        "api": {**api, "throughput_rps": round(requests / api_wall, 1)},
        "peer_tokenreview_plus_sar": {**peer, "throughput_rps": round(requests / peer_wall, 1)},
        "p95_ratio_api_over_peer": round(api["p95_ms"] / peer["p95_ms"], 3),
        "bound_p95_ms": 200,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    testbed = Testbed()
    state, _ = testbed.up()
    token = testbed.user_token("bench-user", ["dockyard:bench"])
    port = _free_port()
    env = dict(os.environ)
    env.update(
        {
            "DOCKYARD_KUBECONFIG": state.kubeconfig,
            "DOCKYARD_DATABASE_URL": state.database_url,
            "DOCKYARD_AUTH_CACHE_TTL": "300",
            "DOCKYARD_AUTHZ_CACHE_TTL": "300",
            "DOCKYARD_METRICS_PORT": str(_free_port()),
            "DOCKYARD_LOG_LEVEL": "WARNING",
        }
    )
    api = subprocess.Popen(
        [sys.executable, "-m", "dockyard.cli", "api", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        result = asyncio.run(_bench(state, token, port, args.requests, args.concurrency))
    finally:
        api.terminate()
        api.wait(timeout=15)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
