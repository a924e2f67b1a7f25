"""An operator that dies in the middle of a switch-over, after it refused connections to
the target's database, does not leave that database refusing them: recovery allows
connections again, whether the renames had happened or not. One that dies once the
restore is Completed, before it dropped the target's old database, drops it when it
is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from dockyard.operator import crash_points
from dockyard.operator.database import database_identity, retired_database_name
from dockyard.operator.restores.switch_over import SWITCHED
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl, release_and_stop, wait_for
from tests.integration.test_backup_operator import (
    _apply,
    _artifact_path,
    _backup,
    _environment,
    _fetch,
    _key_secret,
    _owner_dsn,
    _run_sql,
    _start_operator,
    _wait_phase,
    own_namespace,  # noqa: F401  (a namespace the session's operator does not watch)
)
from tests.integration.test_restore_operator import (
    _empty_environment,
    _restore,
    _restore_status,
    _staging_databases,
    _wait_restore,
)


def _allows_connections(state: State, namespace: str, environment: str) -> bool:
    database, _ = database_identity(namespace, environment)
    [row] = _fetch(
        state.managed_postgres_url,
        "SELECT datallowconn FROM pg_database WHERE datname = $1",
        database,
    )
    return bool(row["datallowconn"])


def _tenant_connects(dsn: str) -> bool:
    async def connect() -> bool:
        try:
            conn = await asyncpg.connect(dsn)
        except asyncpg.PostgresError:
            return False
        await conn.close()
        return True

    return asyncio.run(connect())


@pytest.mark.parametrize(
    "point",
    [
        crash_points.SWITCH_OVER_RENAMED,
        crash_points.SWITCH_OVER_REFUSED,
        crash_points.SWITCH_OVER_DONE,
    ],
)
def test_an_operator_killed_during_the_switch_over_leaves_the_target_accepting_connections(
    point: str,
    kubectl: Kubectl,
    testbed_state: State,
    testbed_env: dict[str, str],
    own_namespace: str,  # noqa: F811  (the fixture imported above)
    backup_root: Path,
    tmp_path: Path,
) -> None:
    log = tmp_path / "operator.log"
    operator = _start_operator(
        {**testbed_env, crash_points.ENV: point}, own_namespace, log, backup_root
    )
    try:
        _environment(kubectl, testbed_state, own_namespace)
        _key_secret(kubectl, own_namespace)
        _apply(kubectl, own_namespace, _backup(own_namespace, "nightly", backup_root))
        backup = _wait_phase(kubectl, own_namespace, "nightly", "Completed", timeout=180)
        _empty_environment(kubectl, own_namespace, "copy")
        target = _owner_dsn(kubectl, own_namespace, "copy")
        _run_sql(target, "CREATE TABLE before_the_restore (id int)")
        _apply(
            kubectl,
            own_namespace,
            _restore(
                "swap",
                source={"backupRef": {"name": "nightly"}},
                target={"environmentRef": {"name": "copy"}},
                safetyBackup=False,
            ),
        )
        # The hook ends the process right there, as a crash would.
        assert operator.wait(timeout=240) == crash_points.EXIT_CODE
        if point == crash_points.SWITCH_OVER_DONE:
            # The restored database is live and in use before the restore is recorded
            # Completed: what is written now must survive the recovery.
            _run_sql(target, "CREATE TABLE after_the_switch (id int)")
        else:
            assert not _allows_connections(testbed_state, own_namespace, "copy")
        if point == crash_points.SWITCH_OVER_REFUSED:
            # The retry after the interruption fails before any switch-over (a bad
            # artifact is not retried): only recovery can open the database again.
            artifact = _artifact_path(backup["location"])
            data = bytearray(artifact.read_bytes())
            data[len(data) // 2] ^= 0x01
            artifact.write_bytes(bytes(data))

        operator = _start_operator(testbed_env, own_namespace, log, backup_root)
        final = "Failed" if point == crash_points.SWITCH_OVER_REFUSED else "Completed"
        status = _wait_restore(kubectl, own_namespace, "swap", final, timeout=240)

        wait_for(lambda: _allows_connections(testbed_state, own_namespace, "copy"), timeout=30)
        assert _tenant_connects(target)
        restored = _fetch(target, "SELECT 1 FROM pg_tables WHERE tablename = 'before_the_restore'")
        if point != crash_points.SWITCH_OVER_REFUSED:
            assert not restored  # the restored data is live
            assert "switch-over had completed" in status["message"]
            assert status["attempts"] == 1  # completed, not restored a second time
            uid = kubectl("get", "restore", "swap", "-n", own_namespace,
                          "-o", "jsonpath={.metadata.uid}").stdout  # fmt: skip
            assert not _fetch(
                testbed_state.managed_postgres_url,
                "SELECT 1 FROM pg_database WHERE datname = $1",
                retired_database_name(uid),
            )
            # The crash came before the switch-over was recorded: recovery records it, once.
            audited = _fetch(
                testbed_state.database_url,
                "SELECT 1 FROM audit_events WHERE source = 'operator' AND action = $1"
                " AND diff ->> 'uid' = $2",
                SWITCHED,
                uid,
            )
            assert len(audited) == 1
            if point == crash_points.SWITCH_OVER_DONE:
                written = "SELECT 1 FROM pg_tables WHERE tablename = 'after_the_switch'"
                assert _fetch(target, written)
        else:
            assert restored  # the target as it was
            assert "checksum mismatch" in status["message"]
    finally:
        release_and_stop(kubectl, own_namespace, "restores,environments,backups", operator)


def test_an_operator_killed_after_recording_completed_drops_the_old_database_when_back(
    kubectl: Kubectl,
    testbed_state: State,
    testbed_env: dict[str, str],
    own_namespace: str,  # noqa: F811  (the fixture imported above)
    backup_root: Path,
    tmp_path: Path,
) -> None:
    log = tmp_path / "operator.log"
    point = crash_points.RESTORE_COMPLETED
    operator = _start_operator(
        {**testbed_env, crash_points.ENV: point}, own_namespace, log, backup_root
    )
    try:
        _environment(kubectl, testbed_state, own_namespace)
        _key_secret(kubectl, own_namespace)
        _apply(kubectl, own_namespace, _backup(own_namespace, "nightly", backup_root))
        _wait_phase(kubectl, own_namespace, "nightly", "Completed", timeout=180)
        _empty_environment(kubectl, own_namespace, "copy")
        _apply(
            kubectl,
            own_namespace,
            _restore(
                "swap",
                source={"backupRef": {"name": "nightly"}},
                target={"environmentRef": {"name": "copy"}},
                safetyBackup=False,
            ),
        )
        assert operator.wait(timeout=240) == crash_points.EXIT_CODE
        assert _restore_status(kubectl, own_namespace, "swap")["phase"] == "Completed"
        uid = kubectl("get", "restore", "swap", "-n", own_namespace,
                      "-o", "jsonpath={.metadata.uid}").stdout  # fmt: skip
        # A full copy of the target's data as it was, which its Completed status no
        # longer names.
        assert _staging_databases(testbed_state, uid) == [retired_database_name(uid)]

        operator = _start_operator(testbed_env, own_namespace, log, backup_root)

        wait_for(lambda: not _staging_databases(testbed_state, uid), timeout=60)
        assert _restore_status(kubectl, own_namespace, "swap")["phase"] == "Completed"
    finally:
        release_and_stop(kubectl, own_namespace, "restores,environments,backups", operator)
