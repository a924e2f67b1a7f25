"""What every benchmark shares: repeated samples summarised, figures judged against their
goals, processes started with their logs kept, peak memory read from /proc.

A benchmark's result file (``bench/results/<name>.json``) holds its raw measurements and
a list ``figures``: one row per figure of the goals table, each with Dockyard's value,
the peer's value measured in the same run, their ratio, the goal and whether it was met.
``python -m bench`` runs every benchmark and turns the rows into ``SUMMARY.md``.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from dockyard.core import db, migrations
from dockyard.core.settings import Settings
from dockyard.testbed.cluster import Testbed

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def logs_dir() -> Path:
    """Where the operator and API logs of this run go (``DOCKYARD_BENCH_LOGS``)."""
    path = Path(os.environ.get("DOCKYARD_BENCH_LOGS") or RESULTS / "logs")
    path.mkdir(parents=True, exist_ok=True)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_database(dsn: str, database: str) -> str:
    """``dsn`` with its database replaced by ``database``."""
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


@asynccontextmanager
async def scratch_database(prefix: str) -> AsyncIterator[tuple[asyncpg.Pool, str]]:
    """A database of the benchmark's own on the test bed's PostgreSQL, at the latest
    migration: a small pool on it and its name. Dropped at the end, whatever happened."""
    state = Testbed().require()
    name = f"dockyard_bench_{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(state.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        settings = Settings(
            database_url=with_database(state.database_url, name),
            database_pool_min=1,
            database_pool_max=2,
        )
        async with db.pool_context(settings) as pool:
            await migrations.migrate(pool)
            yield pool, name
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def percentile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass(frozen=True)
class Spread:
    """Repeated measurements of one case: the median, the extremes, and the spread
    ((max - min) / median) as a share of the median."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def as_dict(self, digits: int = 3) -> dict[str, Any]:
        median = self.median
        return {
            "samples": [round(s, digits) for s in self.samples],
            "median": round(median, digits),
            "min": round(min(self.samples), digits),
            "max": round(max(self.samples), digits),
            "spread": round((max(self.samples) - min(self.samples)) / median, 3) if median else 0,
        }


@dataclass(frozen=True)
class Figure:
    """One row of the summary: a figure, Dockyard's value, the peer's, the goal."""

    figure: str
    dockyard: float
    peer: float | None
    ratio: float | None
    goal: str
    met: bool
    unit: str = ""
    spread: float | None = None
    """The spread of the ratio (or of Dockyard's value) over the rounds."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def ratio_figure(
    figure: str,
    dockyard: Spread,
    peer: Spread,
    *,
    at_most: float | None = None,
    at_least: float | None = None,
    unit: str,
    invert: bool = False,
) -> Figure:
    """The median over rounds of Dockyard over peer (peer over Dockyard with ``invert``,
    for throughputs from times), judged against ``at_most`` or ``at_least``."""
    ratios = [
        _ratio(p, d) if invert else _ratio(d, p)
        for d, p in zip(dockyard.samples, peer.samples, strict=True)
    ]
    spread = Spread(tuple(ratios))
    ratio = spread.median
    if at_most is not None:
        goal, met = f"≤ {at_most:g}x", ratio <= at_most
    else:
        assert at_least is not None
        goal, met = f"≥ {at_least:g}x", ratio >= at_least
    return Figure(
        figure,
        round(dockyard.median, 3),
        round(peer.median, 3),
        round(ratio, 3),
        goal,
        met,
        unit,
        spread.as_dict()["spread"],
    )


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else float("inf")


def bound_figure(figure: str, value: float, *, below: float, unit: str) -> Figure:
    """A figure with no peer, judged against an absolute bound (strictly below it)."""
    goal = f"< {below:g} {unit}".strip()
    return Figure(figure, round(value, 3), None, None, goal, value < below, unit)


def exact_figure(figure: str, value: float, *, equals: float, unit: str = "") -> Figure:
    return Figure(figure, value, None, None, f"= {equals:g}", value == equals, unit)


def write_result(name: str, result: Mapping[str, Any], figures: Sequence[Figure]) -> Path:
    """Write ``bench/results/<name>.json``: the measurements and the judged figures."""
    document = {
        **result,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "figures": [f.as_dict() for f in figures],
    }
    path = RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))
    return path


def spawn(argv: Sequence[str], env: Mapping[str, str], log: str) -> subprocess.Popen[bytes]:
    """Start a process whose output goes to ``logs_dir()/log``, kept after the run."""
    out = (logs_dir() / log).open("wb")
    try:
        return subprocess.Popen(list(argv), env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()  # the child holds its own copy


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def peak_rss_mb(pid: int) -> float:
    """A live process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")
