"""Environments at scale, each figure against a peer measured in the same run:

1. ``--count`` (200) Environments without databases, created at once, until all are
   Ready, against kube-controller-manager making as many bare Deployments Available on
   the same test bed; ``--rounds`` (3) rounds, alternating which goes first.
2. The extra time when each has a database (Ready with a database, minus the same
   round's time without), against the same role + database + revoke SQL run by as
   many connections as the operator's admin pool holds.
3. The steady state: with every environment of the last rounds Ready, two drift
   intervals (``--interval``, the operator's ``DOCKYARD_RECONCILE_INTERVAL``) with
   nothing changed must cause no apiserver write by the operator (the test bed's audit
   log) and no new PostgreSQL session (``pg_stat_database.sessions``).
4. ``GET /api/v1/environments`` p95 at ``--count`` objects, against a direct apiserver
   LIST, in alternating blocks.
5. ``--large`` (1000) Environments without databases against as many bare Deployments,
   with the operator's and the API's peak memory (VmHWM) after them.

The operator's and API's logs go to ``bench/results/logs`` (``environments-*.log``):
count passes and retries there. Run: ``.venv/bin/python -m bench.environments``.
Writes ``bench/results/environments.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.common import (
    ROOT,
    Figure,
    Spread,
    bound_figure,
    exact_figure,
    free_port,
    peak_rss_mb,
    percentile,
    ratio_figure,
    spawn,
    stop,
    write_result,
)
from dockyard.core.kube import KubeClient, KubeConfig, KubeError
from dockyard.operator.database import database_identity
from dockyard.testbed.cluster import State, Testbed

ENVS = "/apis/dockyard.io/v1alpha1/namespaces/{ns}/environments"
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
ADMIN_POOL = 4
"""The operator's admin pool in this run (DOCKYARD_MANAGED_POSTGRES_POOL_SIZE), and so
the concurrency of the raw SQL peer."""


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
    await _until(lambda: _exists(kube, f"/api/v1/namespaces/{name}/serviceaccounts/default"), 60)


async def _gone(kube: KubeClient, names: list[str], limit: float = 600) -> None:
    """Delete namespaces and wait until they are gone.

    Their environments go first, while the operator still watches the namespace: Kopf
    stops watching a namespace as soon as it sees it deleted, and unless the namespace
    controller has already reported remaining content by then, the environments'
    finalizers would never run.
    """
    for name in names:
        # A thousand finalizers take a while: the collection delete is given minutes, and
        # the wait below is what counts.
        with contextlib.suppress(KubeError, TimeoutError):
            await kube.delete(ENVS.format(ns=name), deadline=300)

    async def no_environments() -> bool:
        for name in names:
            with contextlib.suppress(KubeError, TimeoutError):
                if (await kube.get(ENVS.format(ns=name))).get("items"):
                    return False
        return True

    await _until(no_environments, limit)
    for name in names:
        with contextlib.suppress(KubeError, TimeoutError):
            await kube.delete(f"/api/v1/namespaces/{name}")

    async def all_gone() -> bool:
        return not any([await _exists(kube, f"/api/v1/namespaces/{n}") for n in names])

    await _until(all_gone, limit)


async def _exists(kube: KubeClient, path: str) -> bool:
    try:
        await kube.get(path)
    except KubeError:
        return False
    return True


async def environments_ready(kube: KubeClient, ns: str, count: int, database: bool) -> float:
    await _namespace(kube, ns)
    started = time.monotonic()

    def create(i: int) -> Callable[[], Awaitable[Any]]:
        body = {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": f"env-{i:04d}"},
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

    await _until(all_ready, 1200)
    return time.monotonic() - started


async def deployments_available(kube: KubeClient, ns: str, count: int) -> float:
    await _namespace(kube, ns)
    started = time.monotonic()
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"

    def create(i: int) -> Callable[[], Awaitable[Any]]:
        labels = {"app": f"bare-{i:04d}"}
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"bare-{i:04d}"},
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

    await _until(all_available, 1200)
    return time.monotonic() - started


async def raw_sql(admin_dsn: str, count: int, concurrency: int) -> float:
    """The SQL behind ``count`` environment databases, by ``concurrency`` sessions."""
    tag = secrets.token_hex(3)
    pool = await asyncpg.create_pool(admin_dsn, min_size=concurrency, max_size=concurrency)
    names = [f"rawbench_{tag}_{i}" for i in range(count)]

    async def one(role: str) -> None:
        password = secrets.token_urlsafe(24)
        async with pool.acquire() as conn:
            await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            await conn.execute(f"CREATE DATABASE {role} OWNER {role}")
            await conn.execute(f"REVOKE CONNECT ON DATABASE {role} FROM PUBLIC")

    try:
        started = time.monotonic()
        await asyncio.gather(*(one(role) for role in names))
        elapsed = time.monotonic() - started
        async with pool.acquire() as conn:
            for role in names:
                await conn.execute(f"DROP DATABASE {role}")
                await conn.execute(f"DROP ROLE {role}")
        return elapsed
    finally:
        await pool.close()


class AuditLog:
    def __init__(self, state: State) -> None:
        self.path = Path(state.directory) / "logs" / "audit.log"
        self.mark = 0

    def set_mark(self) -> None:
        self.mark = self.path.stat().st_size

    def operator_events(self, namespaces: set[str]) -> list[dict[str, Any]]:
        with self.path.open("rb") as log:
            log.seek(self.mark)
            lines = log.read().decode(errors="replace").splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        return [
            e
            for e in events
            if (e.get("objectRef") or {}).get("namespace") in namespaces
            and e.get("userAgent", "").startswith(("dockyard-operator", "kopf"))
        ]


async def _sessions(dsn: str, databases: list[str]) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        found = await conn.fetchval(
            "SELECT COALESCE(sum(sessions), 0)::bigint FROM pg_stat_database"
            " WHERE datname = ANY($1::text[])",
            databases,
        )
    finally:
        await conn.close()
    return int(found)


async def steady_state(
    state: State, namespaces: dict[str, bool], count: int, interval: float
) -> dict[str, Any]:
    """Two drift intervals with nothing changed: the operator's writes and new sessions."""
    databases = ["postgres"] + [
        database_identity(ns, f"env-{i:04d}")[0]
        for ns, with_db in namespaces.items()
        if with_db
        for i in range(count)
    ]
    await asyncio.sleep(interval)  # past the first drift-repair tick after creation
    audit = AuditLog(state)
    audit.set_mark()
    # Asked from the platform database: a session of this benchmark's own to "postgres"
    # would count itself.
    before = await _sessions(state.database_url, databases)
    await asyncio.sleep(2 * interval + 1)
    await asyncio.sleep(1.5)  # each backend flushes its statistics within a second
    after = await _sessions(state.database_url, databases)
    events = audit.operator_events(set(namespaces))
    writes = [e for e in events if e["verb"] in WRITE_VERBS]
    reads = [e for e in events if e["verb"] == "get"]
    return {
        "environments": count * len(namespaces),
        "window_seconds": 2 * interval + 1,
        "apiserver_writes": len(writes),
        "writes_by_resource": _tally(writes),
        "operator_reads_of_environments": sum(
            1 for e in reads if e["objectRef"].get("resource") == "environments"
        ),
        "new_postgres_sessions": after - before,
    }


def _tally(events: list[dict[str, Any]]) -> dict[str, int]:
    tally: dict[str, int] = {}
    for event in events:
        key = f"{event['verb']} {event['objectRef'].get('resource')}"
        tally[key] = tally.get(key, 0) + 1
    return tally


async def list_latency(
    kube: KubeClient, token: str, api_port: int, ns: str, count: int, rounds: int, requests: int
) -> tuple[Spread, Spread]:
    url = f"http://127.0.0.1:{api_port}/api/v1/namespaces/{ns}/environments?limit=500"
    headers = {"Authorization": f"Bearer {token}"}
    api_p95: list[float] = []
    peer_p95: list[float] = []
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(url, headers=headers) as response:
                    if response.status == 200 and len((await response.json())["items"]) >= count:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        for _ in range(rounds):
            api: list[float] = []
            direct: list[float] = []
            for _ in range(requests):
                started = time.perf_counter()
                async with http.get(url, headers=headers) as response:
                    await response.read()
                api.append(time.perf_counter() - started)
            for _ in range(requests):
                started = time.perf_counter()
                await kube.get(ENVS.format(ns=ns))
                direct.append(time.perf_counter() - started)
            api_p95.append(percentile(api, 0.95) * 1000)
            peer_p95.append(percentile(direct, 0.95) * 1000)
    return Spread(tuple(api_p95)), Spread(tuple(peer_p95))


async def run(
    state: State,
    testbed: Testbed,
    args: argparse.Namespace,
    api_port: int,
    tag: str,
    processes: dict[str, int],
) -> tuple[dict[str, Any], list[Figure]]:
    kube = KubeClient.connect(KubeConfig.from_kubeconfig(Path(state.kubeconfig)), limit=32)
    count, rounds = args.count, args.rounds
    bare: list[float] = []
    plain: list[float] = []
    with_db: list[float] = []
    sql: list[float] = []
    result: dict[str, Any] = {"benchmark": "environments at scale", "count": count}
    figures: list[Figure] = []
    try:
        for r in range(rounds):
            ns_bare, ns_env, ns_db = (f"bench-{kind}{r}-{tag}" for kind in ("bare", "env", "db"))
            # Alternate which goes first, so neither always meets a warmer apiserver.
            if r % 2 == 0:
                bare.append(await deployments_available(kube, ns_bare, count))
                plain.append(await environments_ready(kube, ns_env, count, database=False))
            else:
                plain.append(await environments_ready(kube, ns_env, count, database=False))
                bare.append(await deployments_available(kube, ns_bare, count))
            with_db.append(await environments_ready(kube, ns_db, count, database=True))
            sql.append(await raw_sql(state.managed_postgres_url, count, ADMIN_POOL))
            print(
                f"round {r}: bare {bare[-1]:.1f}s, environments {plain[-1]:.1f}s, "
                f"with databases {with_db[-1]:.1f}s, raw SQL {sql[-1]:.1f}s",
                file=sys.stderr,
            )
            last = r == rounds - 1
            if not last:
                await _gone(kube, [ns_bare, ns_env, ns_db])
        extra = [d - p for d, p in zip(with_db, plain, strict=True)]
        figures += [
            ratio_figure(
                f"{count} Environments, no database, all Ready",
                Spread(tuple(plain)),
                Spread(tuple(bare)),
                at_most=1.5,
                unit="s",
            ),
            ratio_figure(
                "extra time with a database each",
                Spread(tuple(extra)),
                Spread(tuple(sql)),
                at_most=1.2,
                unit="s",
            ),
        ]
        last_round = {f"bench-env{rounds - 1}-{tag}": False, f"bench-db{rounds - 1}-{tag}": True}
        steady = await steady_state(state, last_round, count, args.interval)
        figures += [
            exact_figure(
                f"steady state, {steady['environments']} Environments, 2 drift intervals: "
                "apiserver writes",
                steady["apiserver_writes"],
                equals=0,
            ),
            exact_figure(
                "steady state: new PostgreSQL sessions", steady["new_postgres_sessions"], equals=0
            ),
        ]
        token = testbed.user_token("bench-admin", ["system:masters"])
        api_p95, peer_p95 = await list_latency(
            kube, token, api_port, f"bench-env{rounds - 1}-{tag}", count, rounds, args.requests
        )
        figures.append(
            ratio_figure(
                f"GET .../environments p95 at {count}", api_p95, peer_p95, at_most=0.2, unit="ms"
            )
        )
        result.update(
            {
                "rounds": rounds,
                "bare_deployments_available_s": Spread(tuple(bare)).as_dict(),
                "environments_ready_s": Spread(tuple(plain)).as_dict(),
                "environments_with_database_ready_s": Spread(tuple(with_db)).as_dict(),
                "extra_for_databases_s": Spread(tuple(extra)).as_dict(),
                "raw_sql_s": Spread(tuple(sql)).as_dict(),
                "raw_sql_concurrency": ADMIN_POOL,
                "steady_state": steady,
                "list_p95_ms": {"api": api_p95.as_dict(), "peer": peer_p95.as_dict()},
            }
        )
        await _gone(kube, [f"bench-{k}{rounds - 1}-{tag}" for k in ("bare", "env", "db")])
        if args.large:
            large_bare: list[float] = []
            large_env: list[float] = []
            for r in range(rounds):
                ns_bare, ns_env = f"bench-lbare{r}-{tag}", f"bench-lenv{r}-{tag}"
                if r % 2 == 0:
                    large_bare.append(await deployments_available(kube, ns_bare, args.large))
                    large_env.append(await environments_ready(kube, ns_env, args.large, False))
                else:
                    large_env.append(await environments_ready(kube, ns_env, args.large, False))
                    large_bare.append(await deployments_available(kube, ns_bare, args.large))
                print(
                    f"large round {r}: bare {large_bare[-1]:.1f}s, "
                    f"environments {large_env[-1]:.1f}s",
                    file=sys.stderr,
                )
                if r == rounds - 1:
                    # Read while the last round's objects are all still there.
                    rss = {name: peak_rss_mb(pid) for name, pid in processes.items()}
                await _gone(kube, [ns_bare, ns_env], limit=1800)
            figures += [
                ratio_figure(
                    f"{args.large} Environments, no database, all Ready",
                    Spread(tuple(large_env)),
                    Spread(tuple(large_bare)),
                    at_most=2.0,
                    unit="s",
                ),
                bound_figure(
                    f"operator peak RSS at {args.large}", rss["operator"], below=300, unit="MB"
                ),
                bound_figure(f"API peak RSS at {args.large}", rss["api"], below=200, unit="MB"),
            ]
            result["large"] = {
                "count": args.large,
                "bare_deployments_available_s": Spread(tuple(large_bare)).as_dict(),
                "environments_ready_s": Spread(tuple(large_env)).as_dict(),
                "peak_rss_mb": {k: round(v, 1) for k, v in rss.items()},
            }
    finally:
        with contextlib.suppress(Exception):
            listing = await kube.get("/api/v1/namespaces")
            leftovers = [
                n["metadata"]["name"]
                for n in listing.get("items", [])
                if n["metadata"]["name"].endswith(f"-{tag}")
            ]
            await _gone(kube, leftovers, limit=600)
        await kube.close()
    return result, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--large", type=int, default=1000, help="0: skip the large case")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=200, help="LIST requests per block")
    parser.add_argument("--interval", type=float, default=10.0, help="drift interval, seconds")
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
    env.update(
        {
            "DOCKYARD_LOG_LEVEL": "INFO",
            "DOCKYARD_RECONCILE_INTERVAL": str(args.interval),
            "DOCKYARD_MANAGED_POSTGRES_POOL_SIZE": str(ADMIN_POOL),
        }
    )
    api_port = free_port()
    # The operator watches only this run's namespaces: a test session may share the bed.
    tag = secrets.token_hex(3)
    operator = spawn(
        [sys.executable, "-m", "dockyard.cli", "operator", "--namespace", f"bench-*-{tag}"],
        {**env, "DOCKYARD_METRICS_PORT": str(free_port())},
        "environments-operator.log",
    )
    api = spawn(
        [sys.executable, "-m", "dockyard.cli", "api", "--port", str(api_port)],
        {**env, "DOCKYARD_METRICS_PORT": str(free_port()), "DOCKYARD_LOG_LEVEL": "WARNING"},
        "environments-api.log",
    )
    try:
        processes = {"operator": operator.pid, "api": api.pid}
        result, figures = asyncio.run(run(state, testbed, args, api_port, tag, processes))
    finally:
        stop(operator)
        stop(api)
    write_result("environments", result, figures)


if __name__ == "__main__":
    main()
