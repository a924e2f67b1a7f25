"""The operator runs RestoreDrills on the real control plane and PostgreSQL: a drill on a
completed backup of a seeded environment passes and verifies the backup, a flipped byte
in the artifact fails it on the checksum, the run-now annotation runs one and is
removed, a failing SQL assertion fails with its reason, scratch databases go after
their keep window or with the drill, and production environments get a default drill."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dockyard.operator.database import database_identity
from dockyard.testbed import faults
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import SESSION_ID, Kubectl, release_and_stop, wait_for
from tests.integration.test_backup_operator import (
    EXPECTED_ROWS,
    PINNED,
    _apply,
    _artifact_path,
    _backup,
    _environment,
    _events,
    _fetch,
    _get,
    _key_secret,
    _run_sql,
    _start_operator,
    _wait_phase,
    migrated,  # noqa: F401  (the platform schema: drill_runs and the backup catalog)
    own_namespace,  # noqa: F401  (a namespace the session's operator does not watch)
)

pytestmark = pytest.mark.usefixtures("operator_process")

ORDERS = EXPECTED_ROWS["public.orders"]


@pytest.fixture(scope="module")
def seeded(
    kubectl: Kubectl, testbed_state: State, backup_root: Path, operator_process: object
) -> Iterator[str]:
    """A namespace with the seeded environment ``shop``, its key and the Completed Backup
    ``nightly``, shared by the drills of this module (each drill only reads them)."""
    name = f"t-drills-{SESSION_ID}-{uuid.uuid4().hex[:4]}"
    kubectl("create", "namespace", name)
    try:
        _environment(kubectl, testbed_state, name)
        _key_secret(kubectl, name)
        _apply(kubectl, name, _backup(name, "nightly", backup_root))
        _wait_phase(kubectl, name, "nightly", "Completed")
        yield name
    finally:
        # Drills first, while the operator watches: their finalizer drops scratch databases.
        kubectl(
            "delete",
            "restoredrills,environments",
            "--all",
            "-n",
            name,
            "--timeout=60s",
            check=False,
        )
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def _drill(name: str, *, annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "RestoreDrill",
        "metadata": {"name": name, "annotations": annotations or {}},
        # Yearly: only run-now runs in a test.
        "spec": {"environmentRef": {"name": "shop"}, "schedule": "@yearly", **spec},
    }


def _status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return dict(((_get(kubectl, namespace, "restoredrill", name) or {}).get("status")) or {})


def _wait_last_run(
    kubectl: Kubectl, namespace: str, name: str, timeout: float = 120
) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        status = _status(kubectl, namespace, name)
        return status if status.get("lastRun") else None

    try:
        found = wait_for(finished, timeout=timeout)
    except AssertionError:
        raise AssertionError(
            f"drill {name} did not finish a run: {_status(kubectl, namespace, name)}"
        ) from None
    assert isinstance(found, dict)
    return found


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", ()) if c["type"] == kind), {})


def _database_exists(state: State, name: str) -> bool:
    return bool(
        _fetch(state.managed_postgres_url, "SELECT 1 FROM pg_database WHERE datname = $1", name)
    )


def _scratch_databases(state: State, uid: str) -> list[str]:
    prefix = f"dkd_{uid.replace('-', '')[:16]}"
    rows = _fetch(
        state.managed_postgres_url,
        "SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
        prefix,
    )
    return [r["datname"] for r in rows]


def _run_now(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    """Run the drill now; its new ``lastRun`` once finished."""
    before = _status(kubectl, namespace, name).get("lastRun")
    kubectl("annotate", "restoredrill", name, "-n", namespace, "dockyard.io/run-now=1")

    def finished() -> dict[str, Any] | None:
        run = _status(kubectl, namespace, name).get("lastRun")
        return run if run and run != before else None

    run = wait_for(finished, timeout=180)
    assert isinstance(run, dict)
    return run


RUN_NOW = {"dockyard.io/run-now": "1"}
ORDERS_CHECK = {"name": "orders", "query": "SELECT count(*) FROM orders", "expect": str(ORDERS)}


def test_a_drill_on_a_completed_backup_passes_records_the_run_and_verifies_the_backup(
    kubectl: Kubectl, testbed_state: State, seeded: str
) -> None:
    _apply(
        kubectl,
        seeded,
        _drill("daily", annotations=RUN_NOW, checks={"rowCounts": True, "sql": [ORDERS_CHECK]}),
    )

    status = _wait_last_run(kubectl, seeded, "daily")

    run = status["lastRun"]
    assert (run["backup"], run["result"], run["failedChecks"]) == ("nightly", "Passed", [])
    assert run["restoreSeconds"] > 0
    assert run["backupAgeSeconds"] >= 0
    assert _database_exists(testbed_state, run["scratchDatabase"])  # kept for keepFor (1h)
    assert "currentRun" not in status
    assert [h["result"] for h in status["history"]] == ["Passed"]
    passing = _condition(status, "Passing")
    assert (passing["status"], passing["reason"]) == ("True", "Passed")
    [row] = _fetch(
        testbed_state.database_url,
        "SELECT backup, result, restore_seconds, backup_age_seconds, failed_checks"
        " FROM drill_runs WHERE namespace = $1 AND drill = $2",
        seeded,
        "daily",
    )
    assert (row["backup"], row["result"]) == ("nightly", "Passed")
    assert row["restore_seconds"] == pytest.approx(run["restoreSeconds"])
    assert json.loads(row["failed_checks"]) == []
    backup = (_get(kubectl, seeded, "backup", "nightly") or {})["status"]
    assert backup["verified"]["drill"] == "daily"
    verified = _condition(backup, "Verified")
    assert (verified["status"], verified["reason"]) == ("True", "DrillPassed")
    [catalog] = _fetch(
        testbed_state.database_url,
        "SELECT verified_by, verified_at FROM backup_catalog WHERE namespace = $1 AND name = $2",
        seeded,
        "nightly",
    )
    assert catalog["verified_by"] == "daily"
    assert catalog["verified_at"] is not None

    # The environment says it too, at its next reconcile: its backups are healthy and a
    # drill proved the newest one restorable.
    def protected() -> dict[str, Any] | None:
        env = (_get(kubectl, seeded, "environment", "shop") or {}).get("status") or {}
        drill = _condition(env, "DrillPassing")
        return env if drill.get("status") == "True" else None

    env = wait_for(protected, timeout=60)
    assert isinstance(env, dict)
    assert _condition(env, "BackupsHealthy")["status"] == "True"
    assert env["lastBackup"]["name"] == "nightly"
    assert env["lastBackup"]["verifiedBy"] == "daily"
    assert (env["lastDrill"]["drill"], env["lastDrill"]["result"]) == ("daily", "Passed")
    assert "daily" in _condition(env, "DrillPassing")["message"]


def test_a_flipped_byte_in_the_artifact_fails_the_drill_on_the_checksum(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    _apply(kubectl, namespace, _backup(namespace, "nightly", backup_root))
    artifact = _artifact_path(_wait_phase(kubectl, namespace, "nightly", "Completed")["location"])
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))

    _apply(kubectl, namespace, _drill("daily", annotations=RUN_NOW))
    status = _wait_last_run(kubectl, namespace, "daily")

    run = status["lastRun"]
    assert run["result"] == "Failed"
    [failure] = run["failedChecks"]
    assert failure["check"] == "restore"
    assert "checksum mismatch" in failure["reason"]
    assert "restoreSeconds" not in run
    passing = _condition(status, "Passing")
    assert (passing["status"], passing["reason"]) == ("False", "Failed")
    backup = (_get(kubectl, namespace, "backup", "nightly") or {})["status"]
    assert "verified" not in backup
    assert _condition(backup, "Verified")["reason"] == "DrillFailed"
    assert any("checksum mismatch" in m for m in _events(kubectl, namespace, "Failed"))
    kubectl("delete", "restoredrill", "daily", "-n", namespace, "--timeout=60s")


def test_the_run_now_annotation_runs_the_drill_and_is_removed(
    kubectl: Kubectl, seeded: str
) -> None:
    _apply(kubectl, seeded, _drill("on-demand"))
    ready = wait_for(lambda: _condition(_status(kubectl, seeded, "on-demand"), "Ready"))
    assert isinstance(ready, dict)
    assert (ready["status"], ready["reason"]) == ("True", "Scheduled")
    before = _status(kubectl, seeded, "on-demand")
    assert before["nextRunTime"]
    assert "lastRun" not in before

    kubectl("annotate", "restoredrill", "on-demand", "-n", seeded, "dockyard.io/run-now=1")
    status = _wait_last_run(kubectl, seeded, "on-demand")

    assert status["lastRun"]["result"] == "Passed"
    annotations = (_get(kubectl, seeded, "restoredrill", "on-demand") or {})["metadata"].get(
        "annotations", {}
    )
    assert "dockyard.io/run-now" not in annotations
    assert status["nextRunTime"] == before["nextRunTime"]  # the cron plan is untouched


@pytest.mark.alone  # it kills the shared test bed's PostgreSQL
def test_a_due_drill_waits_while_postgres_is_down_and_passes_once_it_is_back(
    kubectl: Kubectl, testbed: Testbed, seeded: str
) -> None:
    killed = faults.killed(testbed, "postgres")
    try:
        _apply(kubectl, seeded, _drill("patient", annotations=RUN_NOW))

        def waiting() -> dict[str, Any] | None:
            status = _status(kubectl, seeded, "patient")
            paused = _condition(status, "DatabaseUnavailable").get("status") == "True"
            return status if paused else None

        status = wait_for(waiting, timeout=60)
        assert isinstance(status, dict)
        # Not failed over the outage: no run started, none recorded, run-now kept.
        assert "lastRun" not in status, status
        assert "currentRun" not in status, status
        assert _condition(status, "Passing") == {}, status
        annotations = (_get(kubectl, seeded, "restoredrill", "patient") or {})["metadata"][
            "annotations"
        ]
        assert "dockyard.io/run-now" in annotations
        assert _events(kubectl, seeded, "DatabaseUnavailable")
    finally:
        faults.restart(testbed, killed)

    status = _wait_last_run(kubectl, seeded, "patient")
    assert status["lastRun"]["result"] == "Passed"
    condition = _condition(status, "DatabaseUnavailable")
    assert (condition["status"], condition["reason"]) == ("False", "ServerAnswers")


def test_a_failing_sql_assertion_fails_the_run_with_one_reason_naming_the_check(
    kubectl: Kubectl, testbed_state: State, seeded: str
) -> None:
    checks = {
        "rowCounts": True,
        "sql": [
            ORDERS_CHECK,
            {"name": "no-orders", "query": "SELECT count(*) FROM orders;", "expect": "0"},
        ],
    }
    _apply(kubectl, seeded, _drill("strict", annotations=RUN_NOW, checks=checks))

    status = _wait_last_run(kubectl, seeded, "strict")

    run = status["lastRun"]
    assert run["result"] == "Failed"
    assert run["failedChecks"] == [
        {"check": "sql/no-orders", "reason": f"expected 0, got {ORDERS}"}
    ]
    assert run["restoreSeconds"] > 0
    [row] = _fetch(
        testbed_state.database_url,
        "SELECT result, failed_checks FROM drill_runs WHERE namespace = $1 AND drill = $2",
        seeded,
        "strict",
    )
    assert row["result"] == "Failed"
    assert json.loads(row["failed_checks"]) == run["failedChecks"]


def test_a_scratch_database_is_dropped_after_its_keep_window(
    kubectl: Kubectl, testbed_state: State, seeded: str
) -> None:
    _apply(kubectl, seeded, _drill("brief", annotations=RUN_NOW, scratch={"keepFor": "3s"}))
    scratch = _wait_last_run(kubectl, seeded, "brief")["lastRun"]["scratchDatabase"]
    assert re.fullmatch(r"dkd_[0-9a-f]{16}_1", scratch)

    def dropped() -> bool:
        run = _status(kubectl, seeded, "brief")["lastRun"]
        return "scratchDatabase" not in run and not _database_exists(testbed_state, scratch)

    wait_for(dropped, timeout=30)
    assert "scratchDatabase" not in _status(kubectl, seeded, "brief")["history"][0]


def test_deleting_a_drill_drops_its_kept_scratch_databases(
    kubectl: Kubectl, testbed_state: State, seeded: str
) -> None:
    _apply(kubectl, seeded, _drill("doomed", annotations=RUN_NOW))
    scratch = _wait_last_run(kubectl, seeded, "doomed")["lastRun"]["scratchDatabase"]
    uid = (_get(kubectl, seeded, "restoredrill", "doomed") or {})["metadata"]["uid"]
    assert _scratch_databases(testbed_state, uid) == [scratch]

    kubectl("delete", "restoredrill", "doomed", "-n", seeded, "--timeout=60s")

    assert _scratch_databases(testbed_state, uid) == []


def test_deleting_the_environment_drops_its_kept_scratch_databases_so_its_role_can_go(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    _apply(kubectl, namespace, _backup(namespace, "nightly", backup_root))
    _wait_phase(kubectl, namespace, "nightly", "Completed")
    _apply(kubectl, namespace, _drill("daily", annotations=RUN_NOW))
    scratch = _wait_last_run(kubectl, namespace, "daily")["lastRun"]["scratchDatabase"]
    _, role = database_identity(namespace, "shop")

    # The scratch database belongs to the environment's role, which its deletion drops.
    kubectl("delete", "environment", "shop", "-n", namespace, "--timeout=90s")

    assert not _database_exists(testbed_state, scratch)
    assert not _fetch(
        testbed_state.managed_postgres_url, "SELECT 1 FROM pg_roles WHERE rolname = $1", role
    )
    kubectl("delete", "restoredrill", "daily", "-n", namespace, "--timeout=60s")


def test_production_environments_get_a_default_drill_unless_they_opt_out(
    kubectl: Kubectl, namespace: str
) -> None:
    def production(name: str, annotations: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "tier": "production",
                "image": PINNED,
                "replicas": 2,
                "database": {"enabled": False},
            },
        }

    _apply(kubectl, namespace, production("opted-out", {"dockyard.io/default-drill": "false"}))
    _apply(kubectl, namespace, production("shop", {}))

    drill = wait_for(lambda: _get(kubectl, namespace, "restoredrill", "shop-drill"))
    assert isinstance(drill, dict)
    assert drill["spec"]["environmentRef"] == {"name": "shop"}
    assert drill["spec"]["schedule"] == "30 4 * * *"
    assert drill["spec"]["checks"]["rowCounts"] is True
    assert drill["metadata"]["ownerReferences"][0]["kind"] == "Environment"
    ready = wait_for(lambda: _condition(_status(kubectl, namespace, "shop-drill"), "Ready"))
    assert isinstance(ready, dict)
    assert ready["status"] == "True"
    assert _get(kubectl, namespace, "restoredrill", "opted-out-drill") is None
    assert _get(kubectl, namespace, "backupschedule", "opted-out-backups") is not None


def test_a_drill_interrupted_by_an_operator_crash_is_run_again_not_left_running(
    kubectl: Kubectl,
    testbed_state: State,
    testbed_env: dict[str, str],
    own_namespace: str,  # noqa: F811
    backup_root: Path,
    tmp_path: Path,
) -> None:
    log = tmp_path / "operator.log"
    # One slot: a backup waiting for a table lock holds it, so the drill's run is
    # recorded in status.currentRun and waits for the slot when the operator is killed.
    env = {**testbed_env, "DOCKYARD_BACKUP_CONCURRENCY": "1"}
    operator = _start_operator(env, own_namespace, log, backup_root)
    try:
        dsn = _environment(kubectl, testbed_state, own_namespace)
        _key_secret(kubectl, own_namespace)
        _apply(kubectl, own_namespace, _backup(own_namespace, "nightly", backup_root))
        _wait_phase(kubectl, own_namespace, "nightly", "Completed")

        async def crash_mid_run() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                async with conn.transaction():
                    await conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
                    _apply(kubectl, own_namespace, _backup(own_namespace, "slow", backup_root))
                    await asyncio.to_thread(
                        _wait_phase, kubectl, own_namespace, "slow", "Running", 60
                    )
                    _apply(kubectl, own_namespace, _drill("daily", annotations=RUN_NOW))
                    await asyncio.to_thread(
                        wait_for,
                        lambda: _status(kubectl, own_namespace, "daily").get("currentRun"),
                    )
                    os.kill(operator.pid, signal.SIGKILL)
                    operator.wait(timeout=10)
            finally:
                await conn.close()

        asyncio.run(crash_mid_run())
        interrupted = _status(kubectl, own_namespace, "daily")
        assert interrupted["currentRun"]["attempts"] == 1
        assert "lastRun" not in interrupted

        operator = _start_operator(env, own_namespace, log, backup_root)
        status = _wait_last_run(kubectl, own_namespace, "daily")

        assert status["lastRun"]["result"] == "Passed"
        assert status["lastRun"]["backup"] == "nightly"
        assert "currentRun" not in status
        assert len(status["history"]) == 1
        retried = _events(kubectl, own_namespace, "AttemptFailed")
        assert any("interrupted" in m and "attempt 2" in m for m in retried), retried
    finally:
        # Everything with a finalizer, while the operator still runs to release it.
        release_and_stop(kubectl, own_namespace, "restoredrills,environments,backups", operator)


# -- runner: Job ----------------------------------------------------------------------------


def test_a_drill_in_a_runner_job_passes_and_its_job_had_no_api_token(
    kubectl: Kubectl, testbed_state: State, seeded: str
) -> None:
    # The test bed's stand-in kubelet runs the Job's pod (dockyard/testbed/runner_pods.py).
    _apply(
        kubectl,
        seeded,
        _drill("in-job", annotations=RUN_NOW, runner="Job", checks={"sql": [ORDERS_CHECK]}),
    )

    status = _wait_last_run(kubectl, seeded, "in-job", timeout=180)

    run = status["lastRun"]
    assert (run["result"], run["failedChecks"]) == ("Passed", [])
    assert _database_exists(testbed_state, run["scratchDatabase"])
    uid = (_get(kubectl, seeded, "restoredrill", "in-job") or {})["metadata"]["uid"]
    listing = json.loads(
        kubectl(
            "get", "jobs", "-n", seeded, "-l", f"dockyard.io/owner-uid={uid}", "-o", "json"
        ).stdout
    )
    [job] = listing["items"]
    assert job["metadata"]["ownerReferences"][0]["kind"] == "RestoreDrill"
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert any(c["type"] == "Complete" for c in job["status"]["conditions"])
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert f"--database={run['scratchDatabase']}" in container["args"]


def test_a_run_that_takes_a_dropped_runs_scratch_number_has_its_own_runner_job(
    kubectl: Kubectl, testbed_state: State, seeded: str
) -> None:
    """With ``historyLimit: 1`` the second run drops the first run's database, and the
    third takes its number again, while the first run's finished Job stays an hour: the
    third run must not take that Job's result for its own restore."""
    name = "reused-number"
    _apply(
        kubectl,
        seeded,
        _drill(name, runner="Job", historyLimit=1, checks={"sql": [ORDERS_CHECK]}),
    )
    runs = [_run_now(kubectl, seeded, name) for _ in range(3)]

    assert [(r["result"], r["failedChecks"]) for r in runs] == [("Passed", [])] * 3
    assert runs[2]["scratchDatabase"] == runs[0]["scratchDatabase"]  # the number reused
    uid = (_get(kubectl, seeded, "restoredrill", name) or {})["metadata"]["uid"]
    listing = json.loads(
        kubectl(
            "get", "jobs", "-n", seeded, "-l", f"dockyard.io/owner-uid={uid}", "-o", "json"
        ).stdout
    )
    assert len({job["metadata"]["name"] for job in listing["items"]}) == 3


def test_a_scratch_database_no_record_names_is_dropped_by_the_next_pass(
    kubectl: Kubectl, testbed_state: State, seeded: str
) -> None:
    """Left by a drop that failed as its run fell off the history (the server was out):
    the drill's next pass drops it, not only its next run."""
    name = "sweeps-leftovers"
    _apply(kubectl, seeded, _drill(name, suspend=True))
    drill = wait_for(lambda: _get(kubectl, seeded, "restoredrill", name))
    assert isinstance(drill, dict)
    prefix = f"dkd_{drill['metadata']['uid'].replace('-', '')[:16]}"
    leftover = f"{prefix}_77"
    _run_sql(testbed_state.managed_postgres_url, f'CREATE DATABASE "{leftover}"')

    kubectl("annotate", "restoredrill", name, "-n", seeded, "touched=1")  # a pass

    wait_for(lambda: not _database_exists(testbed_state, leftover), timeout=60)


def test_each_run_of_a_drill_with_a_long_name_has_its_own_runner_job(
    kubectl: Kubectl, testbed_state: State, seeded: str
) -> None:
    """A name long enough that ``drill-<name>-<run>`` is cut to fit a Job's 63 characters:
    the run number used to be cut off with it, so the second run found the first run's
    finished Job (kept an hour) and took its result for its own restore."""
    name = "a-drill-whose-name-leaves-no-room-for-its-run-number-x"
    _apply(kubectl, seeded, _drill(name, runner="Job", checks={"sql": [ORDERS_CHECK]}))
    runs = [_run_now(kubectl, seeded, name) for _ in range(2)]

    assert [(r["result"], r["failedChecks"]) for r in runs] == [("Passed", [])] * 2
    assert runs[0]["scratchDatabase"] != runs[1]["scratchDatabase"]
    uid = (_get(kubectl, seeded, "restoredrill", name) or {})["metadata"]["uid"]
    listing = json.loads(
        kubectl(
            "get", "jobs", "-n", seeded, "-l", f"dockyard.io/owner-uid={uid}", "-o", "json"
        ).stdout
    )
    restored = {
        arg.removeprefix("--database=")
        for job in listing["items"]
        for arg in job["spec"]["template"]["spec"]["containers"][0]["args"]
        if arg.startswith("--database=")
    }
    assert restored == {r["scratchDatabase"] for r in runs}
    assert all(len(job["metadata"]["name"]) <= 63 for job in listing["items"])
