"""``make bench``: run every benchmark, judge every figure, write ``results/SUMMARY.md``.

Each benchmark runs as its own process (``python -m bench.<name>``), one after the
other (they share the test bed), with its output and the logs of the operator and API
it starts kept in ``results/logs/``. Each writes ``results/<name>.json`` with its
figures judged against their goals (see ``bench.common``); the fault suite's verdicts
and the audit trail's p95 bounds are judged here from their result files. The summary
is one table: figure, Dockyard, peer in the same run, ratio (median of the rounds, and
its spread), goal, met. The exit status is 1 when any goal was missed or a benchmark
failed, so ``make bench`` fails too.

Run: ``.venv/bin/python -m bench [--only environments,backup]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from bench.common import RESULTS, Figure, logs_dir

BENCHES: tuple[str, ...] = (
    "environments",
    "me_latency",
    "ratelimit",
    "ratelimit_memory",
    "backup",
    "s3_upload",
    "audit_events",
    "webhook_claims",
    "webhook_history",
    "faults",
)
AUDIT_BOUND_MS = 100.0
"""The constitution's bound for a database query, which the audit trail's pages meet."""


def derived_figures(name: str, document: Mapping[str, Any]) -> list[Figure]:
    """Figures for the result files that judge themselves another way."""
    if name == "faults":
        return [
            Figure(f"faults: {verdict.replace('_', ' ')}", float(ok), None, None, "true", bool(ok))
            for verdict, ok in document.get("verdict", {}).items()
        ]
    if name == "audit_events":
        rows = []
        for case, figures in document.get("cases", {}).items():
            p95, peer = figures["dockyard"]["p95_ms"], figures["peer"]["p95_ms"]
            rows.append(
                Figure(
                    f"audit events page p95: {case.replace('_', ' ')}",
                    p95,
                    peer,
                    round(p95 / peer, 3) if peer else None,
                    f"< {AUDIT_BOUND_MS:g} ms",
                    p95 < AUDIT_BOUND_MS,
                    "ms",
                )
            )
        return rows
    return []


def figures_of(name: str, document: Mapping[str, Any]) -> list[Figure]:
    rows = document.get("figures")
    if rows is None:
        return derived_figures(name, document)
    return [Figure(**row) for row in rows]


def _cell(value: float | None, unit: str = "") -> str:
    if value is None:
        return "—"
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} {unit}".strip()


def summary(
    rows: Sequence[tuple[str, Figure]],
    failures: Mapping[str, str],
    when: str,
    measured: Mapping[str, str],
) -> str:
    lines = [
        "# Benchmark summary",
        "",
        f"Written {when} on {os.cpu_count()} CPUs by `make bench` (`python -m bench`), from "
        "each benchmark's last run (listed below the table). Each ratio "
        "is the median over rounds that alternate Dockyard and its peer in the same run; "
        "the spread is (max - min) / median of those rounds. Raw figures: "
        "`bench/results/<name>.json`; logs: `bench/results/logs/`.",
        "",
        "| figure | Dockyard | peer in the same run | ratio | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for bench, row in rows:
        value = _cell(row.dockyard, row.unit)
        if row.goal == "true":  # a verdict, not a number
            value = "true" if row.met else "false"
        ratio = _cell(row.ratio)
        if row.ratio is not None and row.spread is not None:
            ratio += f" (spread {row.spread:.0%})"
        lines.append(
            f"| {row.figure} ({bench}) | {value} | "
            f"{_cell(row.peer, row.unit)} | {ratio} | {row.goal} | "
            f"{'yes' if row.met else '**no**'} |"
        )
    for bench, why in failures.items():
        lines.append(f"| {bench} did not finish: {why} | — | — | — | runs | **no** |")
    missed = [row.figure for _, row in rows if not row.met] + list(failures)
    lines += ["", f"Missed: {', '.join(missed)}." if missed else "Every goal met.", ""]
    lines += ["Measured at:", ""]
    lines += [f"- {bench}: {at}" for bench, at in measured.items()]
    lines.append("")
    return "\n".join(lines)


def run(names: Sequence[str]) -> int:
    """Run ``names`` (none: only rebuild the summary from the result files)."""
    logs = logs_dir()
    env = {**os.environ, "DOCKYARD_BENCH_LOGS": str(logs)}
    rows: list[tuple[str, Figure]] = []
    failures: dict[str, str] = {}
    for name in names:
        started = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        with (logs / f"{name}.out").open("wb") as out:
            done = subprocess.run(
                [sys.executable, "-m", f"bench.{name}"], env=env, stdout=out, stderr=out
            )
        took = time.monotonic() - started
        result = RESULTS / f"{name}.json"
        fresh = result.exists() and result.stat().st_mtime >= time.time() - took - 1
        if done.returncode != 0 and not fresh:
            failures[name] = f"exit {done.returncode}, see bench/results/logs/{name}.out"
            print(f"[bench] {name} failed ({took:.0f} s)", file=sys.stderr)
            continue
        print(f"[bench] {name} done in {took:.0f} s", file=sys.stderr)
    # The summary covers every benchmark with a result: those not run this time (--only)
    # keep their last figures, and the list below the table says when each was measured.
    measured: dict[str, str] = {}
    for name in BENCHES:
        result = RESULTS / f"{name}.json"
        if name in failures or not result.exists():
            continue
        document = json.loads(result.read_text())
        measured[name] = str(
            document.get("when") or document.get("at") or document.get("generated") or "unknown"
        )
        rows += [(name, row) for row in figures_of(name, document)]
    when = datetime.now(UTC).isoformat(timespec="minutes")
    text = summary(rows, failures, when, measured)
    (RESULTS / "SUMMARY.md").write_text(text)
    print(text)
    return 1 if failures or any(not row.met for _, row in rows) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help="comma-separated benchmarks (default: all)")
    parser.add_argument(
        "--summary", action="store_true", help="only rebuild SUMMARY.md from the result files"
    )
    args = parser.parse_args(argv)
    if args.summary:
        return run(())
    names = [n for n in (args.only or "").split(",") if n] or list(BENCHES)
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    return run(names)


if __name__ == "__main__":
    raise SystemExit(main())
