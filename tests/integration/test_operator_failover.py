"""Two operator replicas and a Lease: one reconciles, the other stands by, and when the
leader is killed (SIGKILL, mid-backup) the standby takes over within 20 s. The backup is
retried exactly once, nothing is left Running and one artifact is committed. A leader
stopped cleanly (SIGTERM) releases the Lease, and the standby leads within seconds."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dockyard.operator.leadership import lease_name
from dockyard.testbed.cluster import State
from tests.conftest import (
    Kubectl,
    backup_settings,
    get_json,
    start_operator,
    stop_operator,
    wait_for,
)
from tests.integration.test_backup_operator import (
    EXPECTED_ROWS,
    _apply,
    _backup,
    _environment,
    _events,
    _key_secret,
    _wait_phase,
    migrated,  # noqa: F401  (the platform schema, for the backup catalog)
    own_namespace,  # noqa: F401  (a namespace the session's operator does not watch)
)

# Its bounds are seconds of take-over time: measured with the test bed to itself.
pytestmark = [pytest.mark.usefixtures("crds_installed"), pytest.mark.alone]

FAILOVER_GOAL = 20.0


def _replica(
    env: dict[str, str], namespace: str, name: str, log: Path, root: Path
) -> subprocess.Popen[bytes]:
    settings = {
        **env,
        **backup_settings(root),
        "DOCKYARD_RECONCILE_INTERVAL": "3",
        # The Lease lives in the test's namespace (the platform one may not exist here).
        "DOCKYARD_NAMESPACE": namespace,
        "DOCKYARD_OPERATOR_LEADER_ELECTION": "true",
        "POD_NAME": name,
    }
    return start_operator(namespace, settings, log, append=True)


@contextlib.contextmanager
def _two_replicas(
    kubectl: Kubectl, env: dict[str, str], namespace: str, root: Path, logs: Path
) -> Iterator[tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]]:
    """replica-a leading and replica-b standing by (logs in ``logs``/a.log and b.log);
    the test's objects deleted and both stopped afterwards."""
    replicas = [_replica(env, namespace, "replica-a", logs / "a.log", root)]
    try:
        wait_for(lambda: _holder(kubectl, namespace) == "replica-a", timeout=30)
        replicas.append(_replica(env, namespace, "replica-b", logs / "b.log", root))
        wait_for(lambda: "standing by" in (logs / "b.log").read_text(), timeout=30)
        yield replicas[0], replicas[1]
    finally:
        kubectl(
            "delete",
            "environments,backups",
            "--all",
            "-n",
            namespace,
            "--timeout=60s",
            check=False,
        )
        for replica in replicas:
            if replica.poll() is None:
                stop_operator(replica)


def _holder(kubectl: Kubectl, namespace: str) -> str | None:
    found = kubectl(
        "get", "lease", lease_name([namespace]), "-n", namespace, "-o", "json", check=False
    )
    if found.returncode != 0:
        return None
    lease: dict[str, Any] = json.loads(found.stdout)
    holder = (lease.get("spec") or {}).get("holderIdentity")
    return str(holder) if holder else None


def test_the_standby_takes_over_a_killed_leaders_backup_within_20_seconds(
    kubectl: Kubectl,
    testbed_state: State,
    testbed_env: dict[str, str],
    own_namespace: str,  # noqa: F811  (the fixture imported above)
    backup_root: Path,
    tmp_path: Path,
) -> None:
    ns = own_namespace
    with _two_replicas(kubectl, testbed_env, ns, backup_root, tmp_path) as (first, _):
        dsn = _environment(kubectl, testbed_state, ns)  # reconciled by the leader alone
        _key_secret(kubectl, ns)

        async def kill_the_leader_mid_backup() -> float:
            # pg_dump waits for this lock, so the backup is Running when the leader dies.
            conn = await asyncpg.connect(dsn)
            try:
                async with conn.transaction():
                    await conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
                    _apply(kubectl, ns, _backup(ns, "slow", backup_root))
                    await asyncio.to_thread(_wait_phase, kubectl, ns, "slow", "Running", 60)
                    await asyncio.sleep(1)
                    os.kill(first.pid, signal.SIGKILL)
                    at = time.monotonic()
                    first.wait(timeout=10)
                    return at
            finally:
                await conn.close()

        killed_at = asyncio.run(kill_the_leader_mid_backup())
        wait_for(
            lambda: _holder(kubectl, ns) == "replica-b", timeout=FAILOVER_GOAL + 5, interval=0.2
        )
        took_over = time.monotonic() - killed_at
        assert took_over <= FAILOVER_GOAL, f"the standby took over after {took_over:.1f}s"
        print(f"failover: the standby held the Lease {took_over:.1f}s after the SIGKILL")

        status = _wait_phase(kubectl, ns, "slow", "Completed", timeout=120)
        assert status["attempts"] == 2  # the killed attempt, and exactly one retry
        assert {t["name"]: t["rows"] for t in status["manifest"]["tables"]} == EXPECTED_ROWS
        interrupted = _events(kubectl, ns, "AttemptFailed")
        assert any("interrupted" in m for m in interrupted), interrupted
        backups = get_json(kubectl, "backups", "-n", ns)["items"]
        assert [b["status"]["phase"] for b in backups] == ["Completed"]  # none left Running
        artifacts = sorted(p.name for p in backup_root.rglob("*") if p.is_file() and ns in str(p))
        committed = [a for a in artifacts if a.endswith(".dkbk")]
        assert len(committed) == 1, artifacts
        assert "standing by" in (tmp_path / "b.log").read_text()
        assert "leading" in (tmp_path / "b.log").read_text()


# Kopf's own stop (up to 5 s, instant_exit_timeout: the Lease is released only once
# nothing reconciles any more), then the standby's next look (every 2 s); not the 15 s
# a crashed leader's Lease takes to expire.
CLEAN_HANDOVER_GOAL = 8.0


def test_a_leader_stopped_cleanly_hands_the_lease_over_at_once(
    kubectl: Kubectl,
    testbed_env: dict[str, str],
    own_namespace: str,  # noqa: F811  (the fixture imported above)
    backup_root: Path,
    tmp_path: Path,
) -> None:
    ns = own_namespace
    with _two_replicas(kubectl, testbed_env, ns, backup_root, tmp_path) as (first, _):
        first.send_signal(signal.SIGTERM)  # a rolling update's stop
        stopped_at = time.monotonic()
        wait_for(
            lambda: _holder(kubectl, ns) == "replica-b",
            timeout=CLEAN_HANDOVER_GOAL + 5,
            interval=0.2,
        )
        took_over = time.monotonic() - stopped_at

        assert took_over <= CLEAN_HANDOVER_GOAL, f"the standby took over after {took_over:.1f}s"
        print(f"clean handover: the standby held the Lease {took_over:.1f}s after SIGTERM")
        assert first.wait(timeout=30) is not None
        assert "lease released" in (tmp_path / "a.log").read_text()
