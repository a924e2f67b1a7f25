"""The fault suite: a bounded load on the API while each dependency hangs or dies, and after.

For PostgreSQL (the server and every backend), Redis and the kube-apiserver in turn, a
steady stream of requests (reads of one environment, and creates of new ones) runs
before, during and after two faults of the dependency (``dockyard.testbed.faults``):

- hung: stopped with SIGSTOP for ``--hang`` seconds, then SIGCONT;
- crashed: killed with SIGKILL, down for ``--down`` seconds, then started again.

Redis is put through both twice: once under an API replica whose limiter fails open,
once under one that fails closed (limiting in memory). Each phase records its status
codes and p95 latency; once the dependency is back, the time until a write succeeds
again. At the end every write the API acknowledged (201) must exist in the cluster.

Goals (issue "Resilience"): no request waits more than 3 s; the only server errors are
503 problem+json with ``Retry-After``; recovery within 5 s; zero acknowledged writes
lost; ``/readyz`` stays ready while only Redis is down.

Run: ``.venv/bin/python -m bench.faults [--hang 15] [--down 10]`` with the test bed up. Writes
``bench/results/faults.json`` and prints the table of ``docs/operations.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from dockyard.api.app import create_app
from dockyard.core import migrations
from dockyard.core.settings import Settings
from dockyard.testbed.cluster import State, Testbed
from dockyard.testbed.faults import hung, killed, restart
from dockyard.testbed.processes import free_port

RESULTS = Path(__file__).parent / "results" / "faults.json"
ROOT = Path(__file__).resolve().parent.parent
# Each dependency with the API replica whose limiter mode matters while it is down.
TARGETS = (
    ("postgres", "open"),
    ("redis", "open"),
    ("redis", "closed"),
    ("kube-apiserver", "open"),
)
FAULTS = ("hung", "crashed")
DOWN_SECONDS = 10.0
MAX_WAIT_SECONDS = 3.0
RECOVERY_SECONDS = 5.0
RATE_PER_SECOND = 20


@dataclass
class Sample:
    at: float
    kind: str  # read, write or ready
    status: int
    seconds: float
    problem: str | None = None
    retry_after: str | None = None


@dataclass
class Phase:
    name: str
    samples: list[Sample] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        latencies = sorted(s.seconds for s in self.samples)
        statuses: dict[str, int] = {}
        for sample in self.samples:
            statuses[str(sample.status)] = statuses.get(str(sample.status), 0) + 1
        bad_errors = [
            s
            for s in self.samples
            if s.status >= 500
            and not (s.status == 503 and s.problem == "dependency-unavailable" and s.retry_after)
        ]
        p95 = latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))] if latencies else 0
        return {
            "requests": len(self.samples),
            "statuses": statuses,
            "p95_ms": round(p95 * 1000, 1),
            "max_ms": round(max(latencies, default=0) * 1000, 1),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 1) if latencies else 0,
            "other_server_errors": len(bad_errors),
        }


class Load:
    """Reads and writes at a fixed rate, each request on its own task (no queueing)."""

    def __init__(self, http: aiohttp.ClientSession, base: str, headers: dict[str, str]) -> None:
        self.http = http
        self.base = base
        self.headers = headers
        self.phase = Phase("warm-up")
        self.acknowledged: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = True

    async def run(self) -> None:
        tick = 0
        while self._running:
            tick += 1
            kind = "write" if tick % 4 == 0 else "read"
            task = asyncio.create_task(self._one(kind, self.phase))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(1 / RATE_PER_SECOND)

    async def stop(self) -> None:
        self._running = False
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _one(self, kind: str, phase: Phase) -> None:
        started = time.monotonic()
        name = f"load-{uuid.uuid4().hex[:10]}"
        try:
            if kind == "write":
                body = {"metadata": {"name": name}, "spec": {"tier": "development", "image": "a:1"}}
                response = await self.http.post(self.base, json=body, headers=self.headers)
            else:
                response = await self.http.get(f"{self.base}/anchor", headers=self.headers)
            async with response:
                problem = None
                if response.content_type == "application/problem+json":
                    problem = str((await response.json()).get("type", "")).rsplit("/", 1)[-1]
                else:
                    await response.read()
                status, retry_after = response.status, response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError):
            status, problem, retry_after = 599, "client-timeout", None
        seconds = time.monotonic() - started
        if kind == "write" and status == 201:
            self.acknowledged.append(name)
        phase.samples.append(Sample(started, kind, status, seconds, problem, retry_after))


async def _wait_writable(load: Load, since: float) -> float | None:
    """Seconds from ``since`` until a write succeeds again (None: not within 30 s)."""
    while time.monotonic() - since < 30:
        recent = [s for s in load.phase.samples if s.kind == "write" and s.at >= since]
        if any(s.status == 201 for s in recent):
            first = min(s.at + s.seconds for s in recent if s.status == 201)
            return round(first - since, 2)
        await asyncio.sleep(0.1)
    return None


async def _readiness(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    started = time.monotonic()
    async with http.get(url + "/readyz") as response:
        body = await response.json()
        return {
            "status": response.status,
            "seconds": round(time.monotonic() - started, 3),
            "degraded": body.get("degraded", []),
        }


async def _during(http: aiohttp.ClientSession, url: str, seconds: float) -> dict[str, Any]:
    """Wait out a fault of ``seconds``; ``/readyz`` as it answers partway through."""
    await asyncio.sleep(min(2.0, seconds / 2))
    ready = await _readiness(http, url)
    await asyncio.sleep(max(0.0, seconds - min(2.0, seconds / 2)))
    return ready


def _kubectl(state: State, *args: str) -> str:
    return subprocess.run(
        [str(Path(state.bin_dir) / "kubectl"), "--kubeconfig", state.kubeconfig, *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


async def _serve(settings: Settings) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def run(state: State, hang: float, down: float = DOWN_SECONDS) -> dict[str, Any]:
    namespace = f"faults-{uuid.uuid4().hex[:6]}"
    user = f"faults-{uuid.uuid4().hex[:6]}"
    _kubectl(state, "apply", "-f", str(ROOT / "manifests" / "rbac-roles.yaml"))
    _kubectl(state, "create", "namespace", namespace)
    _kubectl(
        state, "create", "rolebinding", "dev", "--clusterrole=dockyard-developer",
        f"--user={user}", "-n", namespace,
    )  # fmt: skip
    testbed = Testbed()
    token = testbed.user_token(user, [])
    settings = Settings(
        database_url=state.database_url,
        kubeconfig=Path(state.kubeconfig),
        redis_url=state.redis_url,
        metrics_port=None,
        ratelimit_failure_mode="open",
        auth_cache_ttl=300,
        authz_cache_ttl=300,
    )
    conn = await asyncpg.connect(settings.migration_database_dsn())
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()
    # Two replicas of the API, one per limiter failure mode; both serve the namespace.
    servers = {
        mode: await _serve(settings.model_copy(update={"ratelimit_failure_mode": mode}))
        for mode in ("open", "closed")
    }
    headers = {"Authorization": f"Bearer {token}"}
    report: dict[str, Any] = {"hang_seconds": hang, "down_seconds": down, "runs": []}
    timeout = aiohttp.ClientTimeout(total=10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            bases = {
                mode: f"{url}/api/v1/namespaces/{namespace}/environments"
                for mode, (_, url) in servers.items()
            }
            anchor = {
                "metadata": {"name": "anchor"},
                "spec": {"tier": "development", "image": "a:1"},
            }
            async with http.post(bases["open"], json=anchor, headers=headers) as created:
                assert created.status == 201, await created.text()
            load = Load(http, bases["open"], headers)
            driver = asyncio.create_task(load.run())
            await asyncio.sleep(2)  # warm-up: the caller's decisions are cached
            for dependency, limiter in TARGETS:
                load.base = bases[limiter]
                url = servers[limiter][1]
                for fault in FAULTS:
                    entry: dict[str, Any] = {
                        "dependency": dependency,
                        "fault": fault,
                        "limiter": limiter,
                    }
                    load.phase = before = Phase("before")
                    await asyncio.sleep(3)
                    load.phase = during = Phase("during")
                    if fault == "hung":
                        with hung(testbed.require(), dependency):  # pids change on restarts
                            entry["readyz_during"] = await _during(http, url, hang)
                    else:
                        record = await asyncio.to_thread(killed, testbed, dependency)
                        entry["readyz_during"] = await _during(http, url, down)
                        # Restarting blocks until it serves: in a thread, the load goes on.
                        restarting = time.monotonic()
                        await asyncio.to_thread(restart, testbed, record)
                        entry["restart_seconds"] = round(time.monotonic() - restarting, 2)
                    returned = time.monotonic()
                    load.phase = after = Phase("after")
                    entry["recovery_seconds"] = await _wait_writable(load, returned)
                    await asyncio.sleep(3)
                    entry["phases"] = {p.name: p.summary() for p in (before, during, after)}
                    report["runs"].append(entry)
            await load.stop()
            driver.cancel()
            listed = json.loads(
                _kubectl(state, "get", "environments", "-n", namespace, "-o", "json")
            )
            present = {item["metadata"]["name"] for item in listed["items"]}
            lost = sorted(set(load.acknowledged) - present)
            report["acknowledged_writes"] = len(load.acknowledged)
            report["lost_writes"] = lost
    finally:
        for runner, _ in servers.values():
            await runner.cleanup()
        _kubectl(state, "delete", "namespace", namespace, "--wait=false")
    report["verdict"] = judge(report)
    report["at"] = datetime.now(UTC).isoformat(timespec="seconds")
    return report


def judge(report: dict[str, Any]) -> dict[str, bool]:
    """Each goal of the suite, met or not."""
    runs = report["runs"]
    phases = [phase for entry in runs for phase in entry["phases"].values()]
    return {
        "no_request_over_3s": all(p["max_ms"] <= MAX_WAIT_SECONDS * 1000 for p in phases),
        "only_503_problems": all(p["other_server_errors"] == 0 for p in phases),
        "recovery_within_5s": all(
            e["recovery_seconds"] is not None and e["recovery_seconds"] <= RECOVERY_SECONDS
            for e in runs
        ),
        "no_acknowledged_write_lost": not report["lost_writes"],
        "ready_while_only_redis_is_down": all(
            e["readyz_during"]["status"] == 200 for e in runs if e["dependency"] == "redis"
        ),
    }


def table(report: dict[str, Any]) -> str:
    """The Markdown table of ``docs/operations.md``."""
    lines = [
        "| dependency | fault | phase | requests | statuses | p95 ms | max ms | recovery s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for entry in report["runs"]:
        dependency = entry["dependency"]
        if dependency == "redis":
            dependency += f" (limiter fails {entry['limiter']})"
        for name, phase in entry["phases"].items():
            statuses = ", ".join(f"{k}: {v}" for k, v in sorted(phase["statuses"].items()))
            recovery = entry["recovery_seconds"] if name == "after" else ""
            lines.append(
                f"| {dependency} | {entry['fault']} | {name} | {phase['requests']} | "
                f"{statuses} | {phase['p95_ms']} | {phase['max_ms']} | {recovery} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hang", type=float, default=15.0, help="seconds each dependency hangs")
    parser.add_argument(
        "--down", type=float, default=DOWN_SECONDS, help="seconds each crashed one stays down"
    )
    args = parser.parse_args(argv)
    state = Testbed().require()
    report = asyncio.run(run(state, args.hang, args.down))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(json.dumps(report["verdict"], indent=2))
    return 0 if all(report["verdict"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
