"""Backup and restore throughput against raw pg_dump / pg_restore, same run, same database.

On the test bed's PostgreSQL, with a database of at least 1 GB (``--size-mb``; built
once with generate_series, then kept by name and reused while its size fits; dropped by
``--cleanup``):

1. backup: ``dockyard backup-run`` (pg_dump -Z0 | zstd -3 | AES-256-GCM | sha256 |
   fsynced file, plus the row-count manifest from the dump's snapshot) against
   ``pg_dump -Fc -f FILE`` (pg_dump's default compression), each timed end to end as a
   process; the goal is at least 2.5x the peer's throughput;
2. restore: ``dockyard restore-run --jobs N --spool-dir DIR`` (one read: checksum,
   decrypt and zstd -d into a spool file, then ``pg_restore --jobs N``) into a fresh
   database against a single-stream ``pg_restore -d`` of the peer's file into another
   fresh one; the goal is at least 1.3x the peer's throughput;
3. the runner's peak memory: its own VmHWM, and the most it and its tools held
   together, both sampled from /proc while it runs.

Every measurement runs ``--repeat`` times, alternating Dockyard and the peer; the
judged figure is the median of the rounds' ratios (and its spread); the fastest runs'
ratio is kept beside it. The runner's peak memory is judged against 100 MB.
Run: ``.venv/bin/python -m bench.backup``. Writes ``bench/results/backup.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import (
    Figure,
    Spread,
    bound_figure,
    ratio_figure,
    with_database,
    write_result,
)
from dockyard.runner import table_counts
from dockyard.runner.libpq import tool_connection
from dockyard.testbed.cluster import Testbed

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "backup.json"
DATABASE = "dockyard_bench_backup"
TARGETS = ("dockyard_bench_restore_peer", "dockyard_bench_restore_dockyard")
KEY_HEX = "b5" * 32
MiB = 1024 * 1024

# Wide-ish rows that compress like application data (ids, timestamps, enums, JSON,
# hex digests); the events table grows in batches until the database is big enough.
SCHEMA = """
CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, name text NOT NULL,
    plan text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO accounts SELECT g, 'user' || g || '@example.com', 'Name ' || md5(g::text),
    (ARRAY['free', 'team', 'enterprise'])[1 + g % 3],
    timestamptz '2020-01-01' + g * interval '1 minute'
FROM generate_series(1, 200000) g;
CREATE TABLE events (id bigint PRIMARY KEY, account_id bigint NOT NULL, kind text NOT NULL,
    created_at timestamptz NOT NULL, payload jsonb NOT NULL, note text);
CREATE INDEX events_by_account ON events (account_id, created_at);
CREATE TABLE bench_meta (complete boolean NOT NULL);
"""
BATCH = """
INSERT INTO events
SELECT g, 1 + g % 200000, (ARRAY['login', 'purchase', 'refund', 'view', 'logout'])[1 + g % 5],
    timestamptz '2024-01-01' + g * interval '1 second',
    jsonb_build_object('ip', '10.' || (g % 256) || '.' || (g / 256 % 256) || '.1',
        'amount', (g % 10000) / 100.0, 'sku', md5((g % 5000)::text)),
    md5(g::text) || ' ' || md5((g * 7)::text)
FROM generate_series($1::bigint, $2::bigint) g
"""
BATCH_ROWS = 1_000_000


@dataclass(frozen=True)
class Timed:
    seconds: float
    # The process's own peak RSS (VmHWM, counted from its exec), bytes.
    runner_peak: int = 0
    # The largest sum of RSS of the process and all its descendants at one sample:
    # the whole pipeline (runner, pg_dump, zstd) at its fullest, bytes.
    tree_peak: int = 0
    out: str = ""


async def ensure_database(admin_dsn: str, size_mb: int) -> tuple[int, bool]:
    """(size in bytes, reused) of the bench database, building it when needed."""
    admin = await asyncpg.connect(admin_dsn)
    try:
        if await admin.fetchval("SELECT true FROM pg_database WHERE datname = $1", DATABASE):
            conn = await asyncpg.connect(with_database(admin_dsn, DATABASE))
            try:
                done = await conn.fetchval(
                    "SELECT to_regclass('bench_meta') IS NOT NULL"
                    " AND EXISTS (SELECT FROM bench_meta WHERE complete)"
                )
                size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
            finally:
                await conn.close()
            if done and size >= size_mb * MiB:
                return size, True
            await admin.execute(f'DROP DATABASE "{DATABASE}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{DATABASE}"')
    finally:
        await admin.close()
    conn = await asyncpg.connect(with_database(admin_dsn, DATABASE), command_timeout=None)
    try:
        print(f"building {DATABASE} (>= {size_mb} MB) ...", file=sys.stderr)
        await conn.execute(SCHEMA)
        first = 1
        while int(await conn.fetchval("SELECT pg_database_size(current_database())")) < (
            size_mb * MiB
        ):
            await conn.execute(BATCH, first, first + BATCH_ROWS - 1)
            first += BATCH_ROWS
        # Freeze now, so no run pays for setting hint bits on pages the seed wrote.
        await conn.execute("VACUUM (FREEZE, ANALYZE)")
        await conn.execute("INSERT INTO bench_meta VALUES (true)")
        size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()
    return size, False


async def fresh_target(admin_dsn: str, name: str) -> str:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return with_database(admin_dsn, name)


async def drop(admin_dsn: str, *names: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def timed(argv: list[str], env: dict[str, str]) -> Timed:
    """Run ``argv`` to its end; wall time and peak memory; raise if it failed.

    Memory is sampled from /proc every 20 ms. Not ``ru_maxrss``: a child's counts the
    pages it shared with this (forked) process before its exec.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        runner_peak = tree_peak = 0
        while True:
            pid, status = os.waitpid(proc.pid, os.WNOHANG)
            if pid:
                break
            runner_peak = max(runner_peak, _status_kb(proc.pid, "VmHWM"))
            tree_peak = max(tree_peak, sum(_status_kb(p, "VmRSS") for p in _tree(proc.pid)))
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {err.read().decode()[-2000:]}")
        return Timed(seconds, runner_peak * 1024, tree_peak * 1024, out.read().decode())


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def _tool_env(dsn: str) -> tuple[str, dict[str, str]]:
    conn = tool_connection(dsn, application_name="dockyard-bench")
    return conn.uri, conn.env


async def run(
    admin_dsn: str, size_mb: int, repeat: int, work: Path, jobs: int
) -> tuple[dict[str, Any], list[Figure]]:
    size, reused = await ensure_database(admin_dsn, size_mb)
    load_before = os.getloadavg()
    source = with_database(admin_dsn, DATABASE)
    source_uri, source_env = _tool_env(source)
    key_file = work / "key"
    key_file.write_text(KEY_HEX)
    cli = [sys.executable, "-m", "dockyard.cli"]
    runner_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DOCKYARD_", "PG"))},
        "DOCKYARD_LOG_LEVEL": "WARNING",
    }
    peer_file = work / "peer.dump"

    # Warm the page cache, then measure the source alone: -Z0 to a file.
    z0 = ["pg_dump", "-Fc", "-Z0", f"--dbname={source_uri}", f"--file={work / 'z0.dump'}"]
    timed(z0, source_env)
    source_only = timed(z0, source_env)
    (work / "z0.dump").unlink()

    backups: dict[str, list[Timed]] = {"peer": [], "dockyard": []}
    results: list[dict[str, Any]] = []
    for i in range(repeat):
        peer_file.unlink(missing_ok=True)
        backups["peer"].append(
            timed(
                ["pg_dump", "-Fc", f"--dbname={source_uri}", f"--file={peer_file}"],
                source_env,
            )
        )
        store = work / "store"
        shutil.rmtree(store, ignore_errors=True)
        run_ = timed(
            [
                *cli,
                "backup-run",
                "--storage",
                store.as_uri(),
                "--name",
                f"bench-{i}.dkbk",
                "--key-id",
                "bench",
                "--key-file",
                str(key_file),
            ],
            {**runner_env, "DOCKYARD_BACKUP_SOURCE_DSN": source},
        )
        backups["dockyard"].append(run_)
        results.append(json.loads(run_.out))
    result = results[-1]
    store = work / "store"

    restores: dict[str, list[Timed]] = {"peer": [], "dockyard": []}
    for _ in range(repeat):
        peer_target = await fresh_target(admin_dsn, TARGETS[0])
        target_uri, target_env = _tool_env(peer_target)
        restores["peer"].append(
            timed(["pg_restore", f"--dbname={target_uri}", str(peer_file)], target_env)
        )
        ours = await fresh_target(admin_dsn, TARGETS[1])
        restores["dockyard"].append(
            timed(
                [
                    *cli,
                    "restore-run",
                    "--storage",
                    store.as_uri(),
                    "--name",
                    result["name"],
                    "--sha256",
                    result["sha256"],
                    "--key-id",
                    "bench",
                    "--key-file",
                    str(key_file),
                    f"--jobs={jobs}",
                    f"--spool-dir={work}",
                ],
                {**runner_env, "DOCKYARD_RESTORE_TARGET_DSN": ours},
            )
        )
    restored_ok = (
        await table_counts(with_database(admin_dsn, TARGETS[1]))
        == result["manifest"]
        == await table_counts(with_database(admin_dsn, TARGETS[0]))
    )
    verify = timed(
        [
            *cli,
            "restore-run",
            "--verify-only",
            "--storage",
            store.as_uri(),
            "--name",
            result["name"],
            "--sha256",
            result["sha256"],
            "--key-id",
            "bench",
            "--key-file",
            str(key_file),
        ],
        runner_env,
    )
    await drop(admin_dsn, *TARGETS)

    load_after = os.getloadavg()
    best = {side: min(t.seconds for t in runs) for side, runs in backups.items()}
    best_restore = {side: min(t.seconds for t in runs) for side, runs in restores.items()}
    mb = size / MiB
    figures = [
        ratio_figure(
            "backup throughput of a 1 GB database",
            _seconds(backups["dockyard"]),
            _seconds(backups["peer"]),
            at_least=2.5,
            unit="s",
            invert=True,
        ),
        ratio_figure(
            f"restore throughput of the same (pg_restore --jobs {jobs})",
            _seconds(restores["dockyard"]),
            _seconds(restores["peer"]),
            at_least=1.3,
            unit="s",
            invert=True,
        ),
        bound_figure(
            "runner peak RSS during backup and restore",
            max(t.runner_peak for t in (*backups["dockyard"], *restores["dockyard"])) / MiB,
            below=100,
            unit="MB",
        ),
    ]
    return {
        "benchmark": "backup and restore throughput against pg_dump -Fc / pg_restore",
        # The machine is shared: its 1-minute load around the run says how noisy it was.
        "load_average_1m": {"before": load_before[0], "after": load_after[0]},
        "repeat": repeat,
        "database": {
            "name": DATABASE,
            "size_mb": round(mb, 1),
            "reused_from_an_earlier_run": reused,
            "rows": sum(result["manifest"].values()),
            "manifest": result["manifest"],
        },
        "source_only_pg_dump_Z0_seconds": round(source_only.seconds, 2),
        "backup": {
            "peer_pg_dump_Fc": {
                "seconds": [round(t.seconds, 2) for t in backups["peer"]],
                "bytes": peer_file.stat().st_size,
                "mb_per_s": round(mb / best["peer"], 1),
            },
            "dockyard_backup_run": {
                "seconds": [round(t.seconds, 2) for t in backups["dockyard"]],
                "runner_reported_seconds": [r["duration_seconds"] for r in results],
                "bytes": result["size"],
                "mb_per_s": round(mb / best["dockyard"], 1),
                "pipeline": "pg_dump -Fc -Z0 | zstd -3 | AES-256-GCM 1 MiB frames | sha256"
                " | fsynced file, + row counts from the same snapshot",
            },
            "speedup_over_peer": round(best["peer"] / best["dockyard"], 2),
            "speedup_over_peer_median": _median_ratio(backups),
        },
        "restore": {
            "peer_pg_restore": {
                "seconds": [round(t.seconds, 2) for t in restores["peer"]],
            },
            "dockyard_restore_run": {
                "seconds": [round(t.seconds, 2) for t in restores["dockyard"]],
                "steps": "one read: sha256 + decrypt | zstd -d -o SPOOL, key check, then"
                f" pg_restore --jobs {jobs} --no-owner --no-privileges SPOOL",
            },
            "throughput_ratio_to_peer": round(best_restore["peer"] / best_restore["dockyard"], 2),
            "throughput_ratio_to_peer_median": _median_ratio(restores),
            "row_counts_match_manifest": restored_ok,
        },
        "verify_artifact_seconds": round(verify.seconds, 2),
        "memory": {
            "backup_runner_peak_rss_mb": round(
                max(t.runner_peak for t in backups["dockyard"]) / MiB, 1
            ),
            "backup_pipeline_peak_rss_mb": round(
                max(t.tree_peak for t in backups["dockyard"]) / MiB, 1
            ),
            "restore_runner_peak_rss_mb": round(
                max(t.runner_peak for t in restores["dockyard"]) / MiB, 1
            ),
            "restore_pipeline_peak_rss_mb": round(
                max(t.tree_peak for t in restores["dockyard"]) / MiB, 1
            ),
            "peer_pg_dump_peak_rss_mb": round(max(t.runner_peak for t in backups["peer"]) / MiB, 1),
            "what": "runner = the dockyard process alone (VmHWM); pipeline = the most the"
            " runner and its tools (pg_dump, zstd, pg_restore) held together at one 20 ms"
            " sample",
        },
    }, figures


def _seconds(runs: list[Timed]) -> Spread:
    return Spread(tuple(t.seconds for t in runs))


def _median_ratio(runs: dict[str, list[Timed]]) -> float:
    """Peer time over Dockyard time, each side's median: the fastest-run ratio's check."""
    peer = statistics.median(t.seconds for t in runs["peer"])
    return round(peer / statistics.median(t.seconds for t in runs["dockyard"]), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1100, help="database size (default 1100)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each case (default 3)")
    parser.add_argument("--jobs", type=int, default=4, help="pg_restore --jobs (default 4)")
    parser.add_argument("--cleanup", action="store_true", help="drop the bench database, exit")
    args = parser.parse_args()
    state = Testbed().require()
    if args.cleanup:
        asyncio.run(drop(state.managed_postgres_url, DATABASE, *TARGETS))
        print(f"dropped {DATABASE}")
        return
    with tempfile.TemporaryDirectory(prefix="dockyard-bench-") as work:
        result, figures = asyncio.run(
            run(state.managed_postgres_url, args.size_mb, args.repeat, Path(work), args.jobs)
        )
    write_result("backup", result, figures)


if __name__ == "__main__":
    main()
