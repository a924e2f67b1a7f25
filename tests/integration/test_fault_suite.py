"""The fault suite (``bench/faults.py``) in ``make test``: each dependency hangs for 15 s,
then is killed and restarted 10 s later, under a steady load, and every goal of
docs/operations.md holds.

It writes its report to ``faults.json`` in the test's temporary directory (and prints
its path), not over ``bench/results/faults.json``: that file holds the figures
``docs/operations.md`` shows, written by ``python -m bench.faults``, and a test run
leaves the checkout clean.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import faults
from dockyard.testbed.cluster import State

# It hangs and kills the test bed's PostgreSQL, Redis and apiserver: no other test meanwhile.
pytestmark = [pytest.mark.usefixtures("crds_installed", "platform_migrated"), pytest.mark.alone]


async def test_every_goal_holds_while_each_dependency_hangs_or_dies(
    testbed_state: State, tmp_path: Path
) -> None:
    report = await faults.run(testbed_state, hang=15.0, down=10.0)
    written = tmp_path / "faults.json"
    written.write_text(json.dumps(report, indent=2) + "\n")
    print(f"fault suite report: {written}")
    assert report["verdict"] == {goal: True for goal in report["verdict"]}, faults.table(report)
    runs = {(e["dependency"], e["limiter"], e["fault"]) for e in report["runs"]}
    assert runs == {
        (dependency, limiter, fault)
        for dependency, limiter in faults.TARGETS
        for fault in faults.FAULTS
    }
    for entry in report["runs"]:
        assert entry["phases"]["during"]["requests"] > 100  # the load really ran
    assert report["acknowledged_writes"] > 0
