"""The fault suite (``bench/faults.py``) in ``make test``: each dependency hangs for 15 s,
then is killed and restarted 10 s later, under a steady load, and every goal of
docs/operations.md holds.

It writes ``bench/results/faults.json``, so the figures of the last run are at hand.
"""

from __future__ import annotations

import json

import pytest

from bench import faults
from dockyard.testbed.cluster import State

# It hangs and kills the test bed's PostgreSQL, Redis and apiserver: no other test meanwhile.
pytestmark = [pytest.mark.usefixtures("crds_installed", "platform_migrated"), pytest.mark.alone]


async def test_every_goal_holds_while_each_dependency_hangs_or_dies(
    testbed_state: State,
) -> None:
    report = await faults.run(testbed_state, hang=15.0, down=10.0)
    faults.RESULTS.write_text(json.dumps(report, indent=2) + "\n")
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
