"""Environments at scale, each figure against a peer measured in the same run:

1. 200 Environments without databases, created at once, until all are Ready, against
   kube-controller-manager making 200 bare Deployments Available on the same test bed.
2. The extra time when each has a database, against running the raw SQL (CREATE ROLE,
   CREATE DATABASE, REVOKE) for 200 on the same server.
3. ``GET /api/v1/environments`` p95 at 200 objects, against a direct apiserver LIST.

Run: ``.venv/bin/python -m bench.environments [--count 200]``.
Writes ``bench/results/environments.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
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
import asyncpg

from dockyard.core.kube import KubeClient, KubeConfig, KubeError
from dockyard.testbed.cluster import State, Testbed

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "environments.json"
ENVS = "/apis/dockyard.io/v1alpha1/namespaces/{ns}/environments"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ms(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


async def _gather_limited(calls: list[Callable[[], Awaitable[Any]]], limit: int = 16) -> None:
    gate = asyncio.Semaphore(limit)

    async def run(call: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            await call()

    await asyncio.gather(*(run(c) for c in calls))


async def _until(check: Callable[[], Awaitable[bool]], limit: float) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > limit:
            raise TimeoutError(f"not done after {limit:.0f}s")
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def _namespace(kube: KubeClient, name: str) -> None:
    await kube.create(
        "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    # Pods need the namespace's default ServiceAccount, which a controller creates.
    await _until(lambda: _exists(kube, f"/api/v1/namespaces/{name}/serviceaccounts/default"), 30)


async def _exists(kube: KubeClient, path: str) -> bool:
    try:
        await kube.get(path)
    except KubeError:
        return False
    return True


async def environments_ready(kube: KubeClient, ns: str, count: int, database: bool) -> float:
    started = time.monotonic()

    def create(i: int) -> Callable[[], Awaitable[Any]]:
        body = {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": f"env-{i:03d}"},
            "spec": {
                "tier": "development",
                "image": "bench:1.0",
                "replicas": 1,
                "database": {"enabled": database, "deletionPolicy": "Delete"},
            },
        }
        return lambda: kube.create(ENVS.format(ns=ns), body)

    await _gather_limited([create(i) for i in range(count)])

    async def all_ready() -> bool:
        items = (await kube.get(ENVS.format(ns=ns))).get("items", [])
        ready = [o for o in items if (o.get("status") or {}).get("phase") == "Ready"]
        return len(ready) == count

    await _until(all_ready, 600)
    return time.monotonic() - started


async def deployments_available(kube: KubeClient, ns: str, count: int) -> float:
    started = time.monotonic()
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"

    def create(i: int) -> Callable[[], Awaitable[Any]]:
        labels = {"app": f"bare-{i:03d}"}
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"bare-{i:03d}"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "app", "image": "bench:1.0"}]},
                },
            },
        }
        return lambda: kube.create(path, body)

    await _gather_limited([create(i) for i in range(count)])

    async def all_available() -> bool:
        items = (await kube.get(path)).get("items", [])
        return sum(1 for d in items if (d.get("status") or {}).get("availableReplicas")) == count

    await _until(all_available, 600)
    return time.monotonic() - started


async def raw_sql(admin_dsn: str, count: int) -> float:
    conn = await asyncpg.connect(admin_dsn)
    tag = secrets.token_hex(3)
    try:
        started = time.monotonic()
        for i in range(count):
            role = f"rawbench_{tag}_{i}"
            password = secrets.token_urlsafe(24)
            await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            await conn.execute(f"CREATE DATABASE {role} OWNER {role}")
            await conn.execute(f"REVOKE CONNECT ON DATABASE {role} FROM PUBLIC")
        elapsed = time.monotonic() - started
        for i in range(count):
            role = f"rawbench_{tag}_{i}"
            await conn.execute(f"DROP DATABASE {role}")
            await conn.execute(f"DROP ROLE {role}")
        return elapsed
    finally:
        await conn.close()


async def list_latency(
    kube: KubeClient, state: State, token: str, api_port: int, ns: str, rounds: int
) -> dict[str, Any]:
    url = f"http://127.0.0.1:{api_port}/api/v1/namespaces/{ns}/environments?limit=500"
    headers = {"Authorization": f"Bearer {token}"}
    api: list[float] = []
    direct: list[float] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(url, headers=headers) as response:
                    if response.status == 200 and len((await response.json())["items"]) >= 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        for _ in range(rounds):
            started = time.perf_counter()
            async with http.get(url, headers=headers) as response:
                body = await response.read()
            api.append(time.perf_counter() - started)
            started = time.perf_counter()
            await kube.get(ENVS.format(ns=ns))
            direct.append(time.perf_counter() - started)
    return {
        "objects": len(json.loads(body)["items"]),
        "api": {
            "p50_ms": _ms(api, 0.5),
            "p95_ms": _ms(api, 0.95),
            "mean_ms": round(statistics.fmean(api) * 1000, 2),
        },
        "peer_apiserver_list": {
            "p50_ms": _ms(direct, 0.5),
            "p95_ms": _ms(direct, 0.95),
            "mean_ms": round(statistics.fmean(direct) * 1000, 2),
        },
        "p95_ratio_api_over_peer": round(_ms(api, 0.95) / _ms(direct, 0.95), 3),
    }


async def run(
    state: State, testbed: Testbed, count: int, rounds: int, api_port: int, tag: str
) -> dict[str, Any]:
    kube = KubeClient.connect(KubeConfig.from_kubeconfig(Path(state.kubeconfig)))
    ns_bare, ns_plain, ns_db = f"bench-bare-{tag}", f"bench-env-{tag}", f"bench-db-{tag}"
    try:
        for ns in (ns_bare, ns_plain, ns_db):
            await _namespace(kube, ns)
        bare = await deployments_available(kube, ns_bare, count)
        plain = await environments_ready(kube, ns_plain, count, database=False)
        with_db = await environments_ready(kube, ns_db, count, database=True)
        sql = await raw_sql(state.managed_postgres_url, count)
        token = testbed.user_token("bench-admin", ["system:masters"])
        listing = await list_latency(kube, state, token, api_port, ns_plain, rounds)
    finally:
        for ns in (ns_bare, ns_plain, ns_db):
            with contextlib.suppress(KubeError):
                await kube.delete(f"/api/v1/namespaces/{ns}")
        # Give the operator time to run the Delete policy (drop the databases).
        await asyncio.sleep(20)
        await kube.close()
    return {
        "benchmark": "environments at scale",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "count": count,
        "ready_without_database_s": round(plain, 2),
        "peer_bare_deployments_available_s": round(bare, 2),
        "ratio_environments_over_deployments": round(plain / bare, 2),
        "ready_with_database_s": round(with_db, 2),
        "extra_for_databases_s": round(with_db - plain, 2),
        "peer_raw_sql_s": round(sql, 2),
        "ratio_extra_over_raw_sql": round((with_db - plain) / sql, 2),
        "list": listing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    testbed = Testbed()
    state, _ = testbed.up()
    subprocess.run(
        [
            str(Path(state.bin_dir) / "kubectl"),
            f"--kubeconfig={state.kubeconfig}",
            "apply",
            "--server-side",
            "-f",
            str(ROOT / "crds"),
        ],
        check=True,
        capture_output=True,
    )
    env = dict(os.environ)
    env.update(state.env())
    env.update({"DOCKYARD_LOG_LEVEL": "WARNING", "DOCKYARD_METRICS_PORT": str(_free_port())})
    api_port = _free_port()
    # The operator watches only this run's namespaces: a test session may share the bed.
    tag = secrets.token_hex(3)
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "dockyard.cli", "operator", "--namespace", f"bench-*-{tag}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "dockyard.cli", "api", "--port", str(api_port)],
            env={**env, "DOCKYARD_METRICS_PORT": str(_free_port())},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ),
    ]
    try:
        result = asyncio.run(run(state, testbed, args.count, args.rounds, api_port, tag))
    finally:
        for child in children:
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
