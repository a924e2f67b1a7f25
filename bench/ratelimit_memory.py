"""The in-memory limiter under a flood of fresh keys: its memory and its cost per check,
against the unbounded limiter (the peer, as it was before the cap) in the same run.

A client that sends a new ``Header`` value with each request makes a new bucket each
time, kept until it is full again (2.4 hours under a rule of 10 a day). The flood sends
``--keys`` such requests, each a 32-hex-digit key as ``rules.bucket`` makes them, under
a 10-a-day quota, so that none is full again during the run; one "victim" bucket is
spent to its limit first. Both limiters see the same keys in the same order:

- ``bounded``: ``MemoryLimiter(capacity=--capacity)``, Dockyard's.
- ``unbounded``: the same class with a capacity above the flood, which sweeps only full
  buckets: what the limiter did before it had a cap.

Measured for each: the peak of traced memory during the flood (``tracemalloc``), the
buckets held at the end, the per-check time (p50, p99, the worst: an eviction's pause),
and whether the victim is still refused. The flood runs ``--runs`` times, alternating.

Run: ``.venv/bin/python -m bench.ratelimit_memory [--keys 400000] [--capacity 100000]``.
Writes ``bench/results/ratelimit_memory.json``. Needs no test bed.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from array import array
from typing import Any

from bench.common import Figure, Spread, write_result
from dockyard.api.ratelimit.backends import Bucket, MemoryLimiter
from dockyard.api.ratelimit.gcra import Quota

DAILY = Quota(requests=10, period=86_400.0)
BYTES_PER_BUCKET = 300
"""The budget per bucket the cap is sized by (docs/ratelimits.md: about 250 bytes)."""


def _flood(limiter: MemoryLimiter, keys: int) -> dict[str, Any]:
    victim = Bucket(key="victim", quota=DAILY, cost=1, enforced=True)
    while limiter.check_now([victim])[0].allowed:
        pass
    timings = array("q", bytes(8 * keys))  # allocated before tracing starts
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    for n in range(keys):
        # Made inside the trace: a real request's key is a new string too.
        bucket = Bucket(key=f"uid:rule:{n:032x}", quota=DAILY, cost=1, enforced=True)
        started = time.perf_counter_ns()
        limiter.check_now([bucket])
        timings[n] = time.perf_counter_ns() - started
    end, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ordered = sorted(timings)
    return {
        "peak_mib": round((peak - base) / 2**20, 2),
        "end_mib": round((end - base) / 2**20, 2),
        "held": len(limiter),
        "check_p50_us": round(ordered[keys // 2] / 1000, 2),
        "check_p99_us": round(ordered[int(keys * 0.99)] / 1000, 2),
        "check_max_ms": round(ordered[-1] / 1e6, 2),
        "check_mean_us": round(statistics.fmean(ordered) / 1000, 2),
        "victim_refused": not limiter.check_now([victim])[0].allowed,
    }


def _bench(keys: int, capacity: int, runs: int) -> tuple[dict[str, Any], list[Figure]]:
    rounds: list[dict[str, dict[str, Any]]] = []
    for _ in range(runs):
        rounds.append(
            {
                "bounded": _flood(MemoryLimiter(capacity=capacity), keys),
                "unbounded": _flood(MemoryLimiter(capacity=keys * 4), keys),
            }
        )

    def spread(variant: str, field: str) -> Spread:
        return Spread(tuple(float(r[variant][field]) for r in rounds))

    peak, peer_peak = spread("bounded", "peak_mib"), spread("unbounded", "peak_mib")
    budget = capacity * BYTES_PER_BUCKET / 2**20
    mean, peer_mean = spread("bounded", "check_mean_us"), spread("unbounded", "check_mean_us")
    worst = spread("bounded", "check_max_ms")
    figures = [
        Figure(
            f"in-memory limiter peak under {keys:,} fresh keys",
            round(peak.median, 1),
            round(peer_peak.median, 1),
            round(peak.median / peer_peak.median, 2),
            f"< {budget:.1f} MiB ({capacity:,} buckets)",
            peak.median < budget,
            "MiB",
            peak.as_dict()["spread"],
        ),
        Figure(
            "in-memory limiter mean check under the flood",
            mean.median,
            peer_mean.median,
            round(mean.median / peer_mean.median, 2),
            "< 2x the unbounded",
            mean.median < 2 * peer_mean.median,
            "us",
            mean.as_dict()["spread"],
        ),
        Figure(
            "in-memory limiter worst check (an eviction)",
            worst.median,
            spread("unbounded", "check_max_ms").median,
            None,
            "< 200 ms",
            worst.median < 200,
            "ms",
        ),
        Figure(
            "busiest bucket kept through the flood",
            float(all(r["bounded"]["victim_refused"] for r in rounds)),
            None,
            None,
            "true",
            all(r["bounded"]["victim_refused"] for r in rounds),
        ),
    ]
    result = {
        "benchmark": "in-memory rate limiter under a flood of fresh keys",
        "keys": keys,
        "capacity": capacity,
        "runs": runs,
        "rounds": rounds,
    }
    return result, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=400_000)
    parser.add_argument("--capacity", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    result, figures = _bench(args.keys, args.capacity, args.runs)
    write_result("ratelimit_memory", result, figures)


if __name__ == "__main__":
    main()
