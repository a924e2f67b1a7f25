"""A Backup's runner Job, at the two ends of an attempt a Job cannot decide alone.

- An attempt that failed because the database server went away is not counted: once the
  server answers, it runs again under its number, in a new Job (not by reading the failed
  Job of that name again, which an identical manifest applied over it left in place).
- A Job stopped by ``DOCKYARD_RUN_DEADLINE`` (its ``activeDeadlineSeconds``) fails the
  Backup with ``DeadlineExceeded``, as an inline run does, and is not retried.

Each test runs an operator of its own, in a namespace the session's operator does not
watch, with runner Jobs run by the test bed's stand-in kubelet (``runner-pods``).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dockyard.operator.runs import jobs
from dockyard.testbed import faults
from dockyard.testbed.cluster import State, Testbed
from dockyard.testbed.nodes import RUNNER_PODS
from tests.conftest import OPERATOR_LOGS, Kubectl, release_and_stop, wait_for
from tests.integration.test_backup_operator import (
    _apply,
    _backup,
    _environment,
    _events,
    _key_secret,
    _paused,
    _start_operator,
    _wait_phase,
    migrated,
    own_namespace,
)

pytestmark = pytest.mark.usefixtures("crds_installed", "migrated")

__all__ = ["migrated", "own_namespace"]


def _job_uids(kubectl: Kubectl, namespace: str, backup: str) -> dict[str, str]:
    """The runner Jobs of ``backup`` there are now: their uid by their name."""
    listing = kubectl(
        "get", "jobs", "-n", namespace, "-l", f"dockyard.io/backup={backup}", "-o", "json"
    )
    return {
        j["metadata"]["name"]: j["metadata"]["uid"] for j in json.loads(listing.stdout)["items"]
    }


def _operator(
    env: dict[str, str], namespace: str, root: Path, tmp_path: Path, **settings: str
) -> subprocess.Popen[bytes]:
    """An operator of the test's own for ``namespace``, with ``settings``; its log is shown
    beside a failure."""
    log = tmp_path / "operator.log"
    OPERATOR_LOGS.append(log)
    return _start_operator({**env, **settings}, namespace, log, root)


@pytest.mark.alone  # it kills the shared test bed's PostgreSQL and its stand-in kubelet
def test_an_attempt_a_database_outage_failed_runs_again_in_a_new_job_and_completes(
    kubectl: Kubectl,
    testbed: Testbed,
    testbed_state: State,
    testbed_env: dict[str, str],
    own_namespace: str,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    # One attempt only: had the outage used it up, the Backup would fail.
    operator = _operator(
        testbed_env, own_namespace, backup_root, tmp_path, DOCKYARD_BACKUP_MAX_ATTEMPTS="1"
    )
    try:
        _environment(kubectl, testbed_state, own_namespace)
        _key_secret(kubectl, own_namespace)
        job_name = jobs.job_name("outage", 1)
        # No kubelet: the Job's pod waits, and its runner starts only once the server is out.
        kubelet = faults.killed(testbed, RUNNER_PODS)
        try:
            _apply(
                kubectl, own_namespace, _backup(own_namespace, "outage", backup_root, runner="Job")
            )
            _wait_phase(kubectl, own_namespace, "outage", "Running", timeout=60)
            first = wait_for(lambda: _job_uids(kubectl, own_namespace, "outage"), timeout=30)
            assert isinstance(first, dict)
            assert list(first) == [job_name]
            database = faults.killed(testbed, "postgres")
        except BaseException:
            faults.restart(testbed, kubelet)
            raise
        try:
            kubelet = faults.restart(testbed, kubelet)  # the runner runs, and cannot connect

            status = wait_for(lambda: _paused(kubectl, own_namespace, "outage"), timeout=90)
            assert isinstance(status, dict)
            assert (status["phase"], status.get("attempts", 0)) == ("Pending", 0)
        finally:
            faults.restart(testbed, database)

        status = _wait_phase(kubectl, own_namespace, "outage", "Completed", timeout=120)
        assert status["attempts"] == 1  # the outage used up no attempt
        # The attempt ran again in a Job of its own: the failed one was deleted, not read.
        now = _job_uids(kubectl, own_namespace, "outage")
        assert list(now) == [job_name]
        assert now[job_name] != first[job_name]
        started = [m for m in _events(kubectl, own_namespace, "Started") if "Attempt 1" in m]
        assert len(started) == 2, started
    finally:
        release_and_stop(kubectl, own_namespace, "environments,backups", operator)


def test_a_job_past_the_run_deadline_fails_the_backup_with_that_reason_and_no_retry(
    kubectl: Kubectl,
    testbed_state: State,
    testbed_env: dict[str, str],
    own_namespace: str,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    operator = _operator(
        testbed_env, own_namespace, backup_root, tmp_path, DOCKYARD_RUN_DEADLINE="4"
    )
    try:
        dsn = _environment(kubectl, testbed_state, own_namespace)
        _key_secret(kubectl, own_namespace)

        async def hold_a_lock_while_it_runs() -> dict[str, Any]:
            # pg_dump waits for this lock (two minutes by its own lock timeout): far past
            # the Job's deadline of four seconds.
            conn = await asyncpg.connect(dsn)
            try:
                async with conn.transaction():
                    await conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
                    manifest = _backup(own_namespace, "stuck", backup_root, runner="Job")
                    _apply(kubectl, own_namespace, manifest)
                    return await asyncio.to_thread(
                        _wait_phase, kubectl, own_namespace, "stuck", "Failed", 90
                    )
            finally:
                await conn.close()

        started = time.monotonic()
        status = asyncio.run(hold_a_lock_while_it_runs())

        assert time.monotonic() - started < 90
        assert status["attempts"] == 1  # not retried: another run would take as long
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "DeadlineExceeded"
        assert "DOCKYARD_RUN_DEADLINE" in status["message"]
        assert list(_job_uids(kubectl, own_namespace, "stuck")) == [jobs.job_name("stuck", 1)]
    finally:
        release_and_stop(kubectl, own_namespace, "environments,backups", operator)
