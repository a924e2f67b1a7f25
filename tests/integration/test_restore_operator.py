"""The operator carries out Restores on the real control plane and PostgreSQL: a seeded
database restored into another environment table for table, an in-place restore after a
safety backup, a corrupted artifact that fails before the target is touched, a dry-run
plan, and the production approval flow that refuses the requester as approver."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import asyncpg
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from dockyard.api.app import create_app
from dockyard.core.settings import Settings
from dockyard.operator.database import database_identity
from dockyard.operator.database.tenants import NAMESPACE_MARK
from dockyard.operator.runs.context import with_database
from dockyard.testbed import faults
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import Kubectl, release_and_stop, wait_for
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
    _large_environment,
    _owner_dsn,
    _run_sql,
    _start_operator,
    _wait_phase,
    held,
    migrated,  # noqa: F401  (the platform schema, for the backup catalog)
    own_namespace,  # noqa: F401  (a namespace the session's operator does not watch)
)

pytestmark = pytest.mark.usefixtures("operator_process")

Client = TestClient[web.Request, web.Application]
TABLES = ("public.customers", "public.orders", "audit.log", "public.empty_one")


def _checksums(dsn: str) -> dict[str, tuple[int, str]]:
    """Row count and an md5 over every row's text, per table."""
    found = {}
    for table in TABLES:
        [row] = _fetch(
            dsn,
            f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), ''))"
            f" AS digest FROM {table} t",
        )
        found[table] = (row["n"], row["digest"])
    return found


# What most restores here do: the Backup "nightly" into the environment "copy", with no
# safety backup of it first (it holds nothing).
INTO_COPY: Final[dict[str, Any]] = {
    "source": {"backupRef": {"name": "nightly"}},
    "target": {"environmentRef": {"name": "copy"}},
    "safetyBackup": False,
}


def _restore(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Restore",
        "metadata": {"name": name},
        "spec": spec,
    }


def _restore_status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return dict(((_get(kubectl, namespace, "restore", name) or {}).get("status")) or {})


def _wait_restore(
    kubectl: Kubectl, namespace: str, name: str, phase: str, timeout: float = 120
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = _restore_status(kubectl, namespace, name)
        return status if status.get("phase") == phase else None

    try:
        found = wait_for(reached, timeout=timeout)
    except AssertionError:
        raise AssertionError(
            f"restore {name} not {phase}: {_restore_status(kubectl, namespace, name)}"
        ) from None
    assert isinstance(found, dict)
    return found


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", ()) if c["type"] == kind), {})


def _staging_databases(state: State, uid: str) -> list[str]:
    rows = _fetch(
        state.managed_postgres_url,
        "SELECT datname FROM pg_database WHERE datname LIKE $1",
        f"dkr_{uid.replace('-', '')[:16]}%",
    )
    return [r["datname"] for r in rows]


def _dsn(state: State, namespace: str, environment: str) -> str:
    database, _ = database_identity(namespace, environment)
    return with_database(state.managed_postgres_url, database)


def _large_backup(kubectl: Kubectl, state: State, namespace: str, root: Path) -> str:
    """A Completed Backup "nightly" of a large environment "shop" (``_large_environment``)
    and an empty environment "copy" to restore it into; the source's DSN."""
    source = _large_environment(kubectl, state, namespace)
    _apply(kubectl, namespace, _backup(namespace, "nightly", root))
    _wait_phase(kubectl, namespace, "nightly", "Completed", timeout=180)
    _empty_environment(kubectl, namespace, "copy")
    return source


def _empty_environment(kubectl: Kubectl, namespace: str, name: str, **spec: Any) -> None:
    body = {"tier": "development", "image": PINNED, "database": {"deletionPolicy": "Delete"}}
    _apply(
        kubectl,
        namespace,
        {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": name},
            "spec": {**body, **spec},
        },
    )

    def ready() -> bool:
        env = _get(kubectl, namespace, "environment", name) or {}
        return bool(((env.get("status") or {}).get("database") or {}).get("ready"))

    wait_for(ready, timeout=90)


def _backed_up(
    kubectl: Kubectl, state: State, namespace: str, root: Path, name: str = "nightly"
) -> tuple[str, dict[str, Any]]:
    dsn = _environment(kubectl, state, namespace)
    _key_secret(kubectl, namespace)
    _apply(kubectl, namespace, _backup(namespace, name, root))
    return dsn, _wait_phase(kubectl, namespace, name, "Completed")


def test_a_seeded_database_restored_into_another_environment_is_equal_table_for_table(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    source_dsn, backup = _backed_up(kubectl, testbed_state, namespace, backup_root)
    before = _checksums(source_dsn)
    assert {t: n for t, (n, _) in before.items()} == EXPECTED_ROWS
    assert sum(EXPECTED_ROWS.values()) >= 100_000
    _empty_environment(kubectl, namespace, "copy")
    target_dsn = _dsn(testbed_state, namespace, "copy")
    # Made by the target's own role, as its workload would: the safety backup dumps as it.
    _run_sql(
        _owner_dsn(kubectl, namespace, "copy"),
        "CREATE TABLE stale (id int); INSERT INTO stale VALUES (1)",
    )

    _apply(
        kubectl,
        namespace,
        _restore(
            "to-copy",
            source={"backupRef": {"name": "nightly"}},
            target={"environmentRef": {"name": "copy"}},
        ),
    )
    status = _wait_restore(kubectl, namespace, "to-copy", "Completed", timeout=180)

    assert _checksums(target_dsn) == before
    # The target's database was replaced, not added to.
    assert not _fetch(target_dsn, "SELECT 1 FROM pg_tables WHERE tablename = 'stale'")
    plan = status["plan"]
    assert (plan["backup"], plan["target"], plan["inPlace"]) == ("nightly", "copy", False)
    assert plan["size"] == backup["size"]
    assert {t["name"]: t["rows"] for t in plan["tables"]} == EXPECTED_ROWS
    assert _condition(status, "Completed")["status"] == "True"
    assert status["attempts"] == 1
    assert status["durationSeconds"] > 0
    # The last pass read the whole artifact, as status.progress shows it.
    progress = status["progress"]
    assert progress["step"] == "Restore"
    assert progress["bytesDone"] == progress["bytesTotal"] == backup["size"]
    # The target was backed up first, and that backup outlives nothing it should not.
    safety = _wait_phase(kubectl, namespace, "to-copy-safety", "Completed")
    assert {t["name"]: t["rows"] for t in safety["manifest"]["tables"]} == {"public.stale": 1}
    assert status["safetyBackup"] == "to-copy-safety"
    made = _get(kubectl, namespace, "backup", "to-copy-safety") or {}
    assert status["safetyBackupUid"] == made["metadata"]["uid"]
    # The environment's own role owns what was restored, so the app can use it.
    _, role = database_identity(namespace, "copy")
    owners = _fetch(
        target_dsn,
        "SELECT DISTINCT tableowner FROM pg_tables WHERE tablename"
        " IN ('customers', 'orders', 'log', 'empty_one')",
    )
    assert [r["tableowner"] for r in owners] == [role]
    uid = _get(kubectl, namespace, "restore", "to-copy")["metadata"]["uid"]  # type: ignore[index]
    assert _staging_databases(testbed_state, uid) == []
    assert any("copy" in m for m in _events(kubectl, namespace, "Completed"))


def test_an_in_place_restore_brings_the_backed_up_data_back(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    dsn, _ = _backed_up(kubectl, testbed_state, namespace, backup_root)
    before = _checksums(dsn)
    _run_sql(dsn, "DELETE FROM orders WHERE id > 1000; UPDATE customers SET email = 'x'")
    assert _checksums(dsn) != before

    _apply(
        kubectl,
        namespace,
        _restore("undo", source={"environmentRef": {"name": "shop"}, "select": "latest"}),
    )
    status = _wait_restore(kubectl, namespace, "undo", "Completed", timeout=180)

    assert _checksums(dsn) == before
    assert status["plan"]["inPlace"] is True
    assert status["plan"]["backup"] == "nightly"
    # The safety backup holds the data as it was just before the restore.
    safety = _wait_phase(kubectl, namespace, "undo-safety", "Completed")
    rows = {t["name"]: t["rows"] for t in safety["manifest"]["tables"]}
    assert rows["public.orders"] == 1000


@pytest.mark.alone  # it kills the shared test bed's PostgreSQL
def test_a_restore_waits_while_postgres_is_down_and_completes_on_its_first_attempt_after(
    kubectl: Kubectl, testbed: Testbed, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    dsn, _ = _backed_up(kubectl, testbed_state, namespace, backup_root)
    before = _checksums(dsn)
    _run_sql(dsn, "DELETE FROM orders WHERE id > 1000")
    killed = faults.killed(testbed, "postgres")
    try:
        _apply(
            kubectl,
            namespace,
            _restore(
                "patient",
                source={"environmentRef": {"name": "shop"}, "select": "latest"},
                safetyBackup=False,
            ),
        )

        def waiting() -> dict[str, Any] | None:
            status = _restore_status(kubectl, namespace, "patient")
            paused = _condition(status, "DatabaseUnavailable").get("status") == "True"
            return status if paused else None

        status = wait_for(waiting, timeout=60)
        assert isinstance(status, dict)
        assert status.get("attempts", 0) == 0, status  # waiting uses up no attempt
        assert status.get("phase") != "Failed", status
        assert _events(kubectl, namespace, "DatabaseUnavailable")
    finally:
        faults.restart(testbed, killed)

    status = _wait_restore(kubectl, namespace, "patient", "Completed", timeout=180)
    assert status["attempts"] == 1
    assert _checksums(dsn) == before
    condition = _condition(status, "DatabaseUnavailable")
    assert (condition["status"], condition["reason"]) == ("False", "ServerAnswers")


@pytest.mark.alone  # it kills the shared test bed's PostgreSQL
def test_a_restore_with_a_safety_backup_waits_out_an_outage_its_environment_saw(
    kubectl: Kubectl, testbed: Testbed, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    """The safety backup first needs the target's database ready: an Environment that
    saw the outage says it is not, and the Restore waits rather than fails."""
    dsn, _ = _backed_up(kubectl, testbed_state, namespace, backup_root)
    before = _checksums(dsn)
    _run_sql(dsn, "DELETE FROM orders WHERE id > 1000")
    killed = faults.killed(testbed, "postgres")
    try:
        # The Environment sees the outage (its next pass, hastened by a change).
        kubectl("annotate", "environment", "shop", "-n", namespace, "test/nudge=1")

        def seen_out() -> bool:
            env = _get(kubectl, namespace, "environment", "shop") or {}
            database = (env.get("status") or {}).get("database") or {}
            return database.get("ready") is False

        wait_for(seen_out, timeout=90)
        _apply(
            kubectl,
            namespace,
            _restore("careful", source={"environmentRef": {"name": "shop"}, "select": "latest"}),
        )

        def waiting() -> dict[str, Any] | None:
            status = _restore_status(kubectl, namespace, "careful")
            assert status.get("phase") != "Failed", status
            paused = _condition(status, "DatabaseUnavailable").get("status") == "True"
            return status if paused else None

        status = wait_for(waiting, timeout=60)
        assert isinstance(status, dict)
        assert status.get("attempts", 0) == 0, status
    finally:
        faults.restart(testbed, killed)

    status = _wait_restore(kubectl, namespace, "careful", "Completed", timeout=240)
    assert status["attempts"] == 1
    assert status["safetyBackup"]
    assert _checksums(dsn) == before
    condition = _condition(status, "DatabaseUnavailable")
    assert (condition["status"], condition["reason"]) == ("False", "ServerAnswers")


def test_a_corrupted_artifact_fails_the_restore_and_leaves_the_environment_intact(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    dsn, backup = _backed_up(kubectl, testbed_state, namespace, backup_root)
    _run_sql(dsn, "INSERT INTO customers VALUES (999999, 'after-the-backup@example.com')")
    before = _checksums(dsn)
    artifact = _artifact_path(backup["location"])
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))

    _apply(kubectl, namespace, _restore("broken", source={"backupRef": {"name": "nightly"}}))
    status = _wait_restore(kubectl, namespace, "broken", "Failed", timeout=180)

    assert "checksum mismatch" in status["message"]
    assert "not changed" in status["message"]
    completed = _condition(status, "Completed")
    assert (completed["status"], completed["reason"]) == ("False", "ChecksumMismatch")
    assert status["attempts"] == 1  # a bad artifact is not retried
    assert _checksums(dsn) == before
    uid = _get(kubectl, namespace, "restore", "broken")["metadata"]["uid"]  # type: ignore[index]
    assert _staging_databases(testbed_state, uid) == []


def test_a_dry_run_writes_the_plan_and_changes_nothing_until_it_is_turned_off(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    dsn, backup = _backed_up(kubectl, testbed_state, namespace, backup_root)
    _run_sql(dsn, "DELETE FROM orders")
    emptied = _checksums(dsn)
    _apply(
        kubectl,
        namespace,
        _restore("preview", source={"backupRef": {"name": "nightly"}}, dryRun=True),
    )

    def planned() -> dict[str, Any] | None:
        status = _restore_status(kubectl, namespace, "preview")
        return status if _condition(status, "Planned").get("status") == "True" else None

    status = wait_for(planned, timeout=60)
    assert isinstance(status, dict)
    plan = status["plan"]
    assert plan["backup"] == "nightly"
    assert plan["target"] == "shop"
    assert plan["size"] == backup["size"]
    assert plan["tableCount"] == len(EXPECTED_ROWS)
    assert plan["estimatedDurationSeconds"] >= 10
    assert plan["safetyBackup"] is True
    assert plan["requiresApproval"] is False
    assert status["phase"] == "Pending"
    assert "Dry run" in status["message"]
    assert _get(kubectl, namespace, "backup", "preview-safety") is None
    assert _checksums(dsn) == emptied

    kubectl(
        "patch",
        "restore",
        "preview",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"dryRun": False}}),
    )
    _wait_restore(kubectl, namespace, "preview", "Completed", timeout=180)
    assert {t: n for t, (n, _) in _checksums(dsn).items()} == EXPECTED_ROWS


@pytest.mark.usefixtures("approval_policy")
def test_a_production_restore_waits_for_a_second_person_and_refuses_the_requester(
    kubectl: Kubectl, testbed: Testbed, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _backed_up(kubectl, testbed_state, namespace, backup_root)
    _empty_environment(kubectl, namespace, "live", tier="production", replicas=2)
    alice, bob = f"alice-{uuid.uuid4().hex[:5]}", f"bob-{uuid.uuid4().hex[:5]}"
    for user in (alice, bob):
        kubectl(
            "create",
            "rolebinding",
            user,
            "--clusterrole=dockyard-operator",
            f"--user={user}",
            "-n",
            namespace,
        )
    as_alice, as_bob = testbed.user_token(alice, []), testbed.user_token(bob, [])
    wait_for(
        lambda: (
            kubectl(
                "auth",
                "can-i",
                "patch",
                "restores.dockyard.io",
                "-n",
                namespace,
                token=as_bob,
                check=False,
            ).returncode
            == 0
        ),
        timeout=30,
    )
    manifest = _restore(
        "promote",
        source={"backupRef": {"name": "nightly"}},
        target={"environmentRef": {"name": "live"}},
    )
    manifest["metadata"]["annotations"] = {"dockyard.io/requested-by": alice}
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest), token=as_alice)

    status = _wait_restore(kubectl, namespace, "promote", "AwaitingApproval")
    assert status["plan"]["requiresApproval"] is True
    assert status["approval"]["requestedBy"] == alice
    assert _condition(status, "Approved")["status"] == "False"

    def approve(user: str, token: str) -> None:
        patch = {"metadata": {"annotations": {"dockyard.io/approved-by": user}}}
        kubectl(
            "patch",
            "restore",
            "promote",
            "-n",
            namespace,
            "--type=merge",
            "-p",
            json.dumps(patch),
            token=token,
        )

    approve(alice, as_alice)

    def refused() -> dict[str, Any] | None:
        current = _restore_status(kubectl, namespace, "promote")
        return current if _condition(current, "Approved").get("reason") == "Refused" else None

    status = wait_for(refused, timeout=60)  # type: ignore[assignment]
    assert status["phase"] == "AwaitingApproval"
    assert f"{alice} requested this restore and cannot approve it" in status["message"]
    assert _get(kubectl, namespace, "backup", "promote-safety") is None

    approve(bob, as_bob)
    status = _wait_restore(kubectl, namespace, "promote", "Completed", timeout=180)
    assert status["approval"]["approvedBy"] == bob
    assert _condition(status, "Approved")["status"] == "True"
    live = _dsn(testbed_state, namespace, "live")
    assert {t: n for t, (n, _) in _checksums(live).items()} == EXPECTED_ROWS


@pytest.fixture
async def api(aiohttp_client: AiohttpClient, testbed_state: State) -> Client:
    settings = Settings(
        database_url=testbed_state.database_url,
        kubeconfig=Path(testbed_state.kubeconfig),
        metrics_port=None,
    )
    return await aiohttp_client(create_app(settings))


async def _poll(check: Callable[[], Awaitable[Any]], within: float = 120) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"condition not met within {within}s; last value: {last!r}")


@pytest.mark.usefixtures("approval_policy")
async def test_through_the_rest_api_the_requester_cannot_approve_and_a_second_user_can(
    api: Client,
    kubectl: Kubectl,
    testbed: Testbed,
    testbed_state: State,
    namespace: str,
    backup_root: Path,
) -> None:
    await asyncio.to_thread(_backed_up, kubectl, testbed_state, namespace, backup_root)
    await asyncio.to_thread(
        _empty_environment, kubectl, namespace, "live", tier="production", replicas=2
    )
    alice, bob = f"alice-{uuid.uuid4().hex[:5]}", f"bob-{uuid.uuid4().hex[:5]}"
    for user in (alice, bob):
        kubectl(
            "create",
            "rolebinding",
            user,
            "--clusterrole=dockyard-operator",
            f"--user={user}",
            "-n",
            namespace,
        )
    as_alice = {"Authorization": f"Bearer {testbed.user_token(alice, [])}"}
    as_bob = {"Authorization": f"Bearer {testbed.user_token(bob, [])}"}
    base = f"/api/v1/namespaces/{namespace}/restores"

    async def created() -> bool:
        response = await api.post(
            base,
            json={
                "metadata": {"name": "promote"},
                "spec": {
                    "source": {"backupRef": {"name": "nightly"}},
                    "target": {"environmentRef": {"name": "live"}},
                },
            },
            headers=as_alice,
        )
        return response.status == 201  # 403 until the new RoleBinding reaches the authorizer

    await _poll(created, within=30)

    async def awaiting() -> dict[str, Any] | None:
        response = await api.get(f"{base}/promote", headers=as_alice)
        body = await response.json()
        status = body.get("status") or {}
        return body if status.get("phase") == "AwaitingApproval" else None

    restore = await _poll(awaiting)
    assert restore["metadata"]["annotations"]["dockyard.io/requested-by"] == alice
    plan = await api.get(f"{base}/promote/plan", headers=as_bob)
    assert plan.status == 200
    assert (await plan.json())["requiresApproval"] is True

    refused = await api.post(f"{base}/promote/approve", headers=as_alice)
    assert refused.status == 403
    problem = await refused.json()
    assert problem["type"].endswith("approval-by-requester")
    assert f"{alice} requested restore" in problem["detail"]

    approved = await api.post(f"{base}/promote/approve", headers=as_bob)
    assert approved.status == 200
    assert (await approved.json())["metadata"]["annotations"]["dockyard.io/approved-by"] == bob
    # The approval's event was logged with its audit row, before the answer.
    logged = await _logged(testbed_state, namespace, "promote")
    assert ("restore.approved", bob) in logged

    async def completed() -> dict[str, Any] | None:
        response = await api.get(f"{base}/promote", headers=as_bob)
        status = (await response.json()).get("status") or {}
        return status if status.get("phase") == "Completed" else None

    status = await _poll(completed, within=180)
    assert status["approval"] == {
        "requiredBy": "production",
        "requestedBy": alice,
        "approvedBy": bob,
        "approvedAt": status["approval"]["approvedAt"],
    }
    live = _dsn(testbed_state, namespace, "live")
    counts = await asyncio.to_thread(_checksums, live)
    assert {t: n for t, (n, _) in counts.items()} == EXPECTED_ROWS
    # The operator saw the same approval: one restore.approved, announced by the API.
    expected = [
        ("restore.awaiting_approval", None),
        ("restore.approved", bob),
        ("restore.completed", None),
    ]
    try:
        await _poll(lambda: _logged_is(testbed_state, namespace, expected), within=30)
    except AssertionError:
        assert await _logged(testbed_state, namespace, "promote") == expected  # shows them
        raise
    # The switch-over is the operator's own action: in the audit trail with its reason.
    conn = await asyncpg.connect(testbed_state.database_url)
    try:
        switched = await conn.fetchrow(
            "SELECT action, diff::text FROM audit_events WHERE source = 'operator'"
            " AND namespace = $1 AND name = 'promote'",
            namespace,
        )
    finally:
        await conn.close()
    assert switched is not None
    assert switched["action"] == "SWITCH database (restore)"
    assert json.loads(switched["diff"])["environment"] == "live"


async def _logged(state: State, namespace: str, name: str) -> list[tuple[str, str | None]]:
    """The (type, actor) of each logged event about ``name``, in log order."""
    conn = await asyncpg.connect(state.database_url)
    try:
        rows = await conn.fetch(
            "SELECT type, body::text FROM events WHERE namespace = $1 AND name = $2 ORDER BY seq",
            namespace,
            name,
        )
    finally:
        await conn.close()
    return [(r["type"], json.loads(r["body"])["data"].get("actor")) for r in rows]


async def _logged_is(state: State, namespace: str, expected: list[tuple[str, str | None]]) -> bool:
    return await _logged(state, namespace, "promote") == expected


def test_an_operator_killed_mid_restore_drops_the_half_restored_database_and_retries(
    kubectl: Kubectl,
    testbed_state: State,
    testbed_env: dict[str, str],
    own_namespace: str,  # noqa: F811  (the fixture imported above)
    backup_root: Path,
    tmp_path: Path,
) -> None:
    log = tmp_path / "operator.log"
    operator = _start_operator(testbed_env, own_namespace, log, backup_root)
    try:
        # Big enough that the restore is still running when the operator is killed.
        source = _large_backup(kubectl, testbed_state, own_namespace, backup_root)
        before = _checksums(source)
        _apply(
            kubectl,
            own_namespace,
            _restore("slow", **INTO_COPY),
        )
        restoring = _wait_restore(kubectl, own_namespace, "slow", "Restoring", timeout=60)
        uid = _get(kubectl, own_namespace, "restore", "slow")["metadata"]["uid"]  # type: ignore[index]
        # The staging name is recorded before the database is made, so the phase
        # alone does not say the half-restored database exists yet.
        wait_for(
            lambda: restoring["stagingDatabase"] in _staging_databases(testbed_state, uid),
            timeout=60,
        )
        os.kill(operator.pid, signal.SIGKILL)
        operator.wait(timeout=10)
        assert restoring["stagingDatabase"] in _staging_databases(testbed_state, uid)
        assert _restore_status(kubectl, own_namespace, "slow")["phase"] == "Restoring"

        operator = _start_operator(testbed_env, own_namespace, log, backup_root)
        status = _wait_restore(kubectl, own_namespace, "slow", "Completed", timeout=240)

        assert status["attempts"] == 2
        assert _checksums(_dsn(testbed_state, own_namespace, "copy")) == before
        assert _staging_databases(testbed_state, uid) == []
        interrupted = _events(kubectl, own_namespace, "AttemptFailed")
        assert any("interrupted" in message for message in interrupted), interrupted
    finally:
        release_and_stop(kubectl, own_namespace, "restores,environments,backups", operator)


# -- runner: Job ----------------------------------------------------------------------------


def _runner_jobs(kubectl: Kubectl, namespace: str, uid: str) -> list[dict[str, Any]]:
    listing = json.loads(
        kubectl(
            "get", "jobs", "-n", namespace, "-l", f"dockyard.io/owner-uid={uid}", "-o", "json"
        ).stdout
    )
    return list(listing["items"])


def test_a_restore_in_a_runner_job_is_equal_table_for_table_and_owned_by_the_target(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    # The test bed's stand-in kubelet runs the Job's pod (dockyard/testbed/runner_pods.py):
    # a real restore-run process, with the Secret's DSN and the key file the pod would get.
    source_dsn, _ = _backed_up(kubectl, testbed_state, namespace, backup_root)
    before = _checksums(source_dsn)
    _empty_environment(kubectl, namespace, "copy")

    _apply(
        kubectl,
        namespace,
        _restore("in-job", **INTO_COPY, runner="Job"),
    )
    status = _wait_restore(kubectl, namespace, "in-job", "Completed", timeout=240)

    target_dsn = _dsn(testbed_state, namespace, "copy")
    assert _checksums(target_dsn) == before
    _, role = database_identity(namespace, "copy")
    owners = _fetch(
        target_dsn,
        "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname IN ('public', 'audit')",
    )
    assert [r["tableowner"] for r in owners] == [role]
    uid = _get(kubectl, namespace, "restore", "in-job")["metadata"]["uid"]  # type: ignore[index]
    [job] = _runner_jobs(kubectl, namespace, uid)
    assert job["metadata"]["name"] == "restore-in-job-1"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Restore"
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    [container] = pod["containers"]
    dsn = next(e for e in container["env"] if e["name"] == "DOCKYARD_RESTORE_TARGET_DSN")
    assert dsn["valueFrom"]["secretKeyRef"] == {"name": "copy-database", "key": "uri"}
    assert status["attempts"] == 1
    assert _staging_databases(testbed_state, uid) == []


def test_a_target_deleted_while_its_job_restores_keeps_its_database(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    """The target Environment is deleted (Retain keeps its database, a finalizer keeps it
    deleting) while the runner Job restores: its database is not replaced after."""
    _backed_up(kubectl, testbed_state, namespace, backup_root)
    _empty_environment(kubectl, namespace, "copy", database={"deletionPolicy": "Retain"})
    target_dsn = _dsn(testbed_state, namespace, "copy")
    _run_sql(_owner_dsn(kubectl, namespace, "copy"), "CREATE TABLE precious (id int)")
    hold = json.dumps({"metadata": {"finalizers": ["dockyard.io/test-hold"]}})
    kubectl("patch", "environment", "copy", "-n", namespace, "--type=merge", "-p", hold)
    try:
        _apply(kubectl, namespace, _restore("late", **INTO_COPY, runner="Job"))
        uid = wait_for(
            lambda: (
                (_get(kubectl, namespace, "restore", "late") or {}).get("metadata", {}).get("uid")
            ),
            timeout=30,
        )
        # As soon as its Job exists: the runner in it needs seconds to start.
        wait_for(lambda: _runner_jobs(kubectl, namespace, str(uid)), timeout=60, interval=0.1)
        kubectl("delete", "environment", "copy", "-n", namespace, "--wait=false")

        status = _wait_restore(kubectl, namespace, "late", "Failed", timeout=180)
        completed = _condition(status, "Completed")
        assert (completed["status"], completed["reason"]) == ("False", "TargetUnavailable")
        assert "target environment copy is being deleted" in status["message"]
        assert _fetch(target_dsn, "SELECT 1 FROM pg_tables WHERE tablename = 'precious'")
        assert _staging_databases(testbed_state, str(uid)) == []
    finally:
        kubectl("patch", "environment", "copy", "-n", namespace, "--type=merge",
                "-p", json.dumps({"metadata": {"finalizers": None}}), check=False)  # fmt: skip


def test_a_corrupted_artifact_fails_a_job_restore_with_the_runners_reason(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    dsn, backup = _backed_up(kubectl, testbed_state, namespace, backup_root)
    before = _checksums(dsn)
    artifact = _artifact_path(backup["location"])
    data = bytearray(artifact.read_bytes())
    data[len(data) // 3] ^= 0x01
    artifact.write_bytes(bytes(data))

    _apply(
        kubectl,
        namespace,
        _restore(
            "broken-job",
            source={"backupRef": {"name": "nightly"}},
            safetyBackup=False,
            runner="Job",
        ),
    )
    status = _wait_restore(kubectl, namespace, "broken-job", "Failed", timeout=180)

    assert "checksum mismatch" in status["message"]
    completed = _condition(status, "Completed")
    assert (completed["status"], completed["reason"]) == ("False", "ChecksumMismatch")
    assert status["attempts"] == 1
    assert _checksums(dsn) == before
    uid = _get(kubectl, namespace, "restore", "broken-job")["metadata"]["uid"]  # type: ignore[index]
    [job] = _runner_jobs(kubectl, namespace, uid)
    assert any(c["type"] == "Failed" for c in job["status"]["conditions"])
    assert _staging_databases(testbed_state, uid) == []


def test_a_job_restore_deleted_mid_run_leaves_neither_its_job_nor_its_staging_database(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    # No pass follows a deleted Restore: the watch's DELETED event stops its Job and
    # drops the database it was writing into.
    # Big enough that the Job is still restoring when the Restore is deleted.
    _large_backup(kubectl, testbed_state, namespace, backup_root)
    _apply(
        kubectl,
        namespace,
        _restore("dropped", **INTO_COPY, runner="Job"),
    )
    restoring = _wait_restore(kubectl, namespace, "dropped", "Restoring", timeout=60)
    uid = _get(kubectl, namespace, "restore", "dropped")["metadata"]["uid"]  # type: ignore[index]
    wait_for(lambda: _runner_jobs(kubectl, namespace, uid), timeout=60)
    assert restoring["stagingDatabase"] in _staging_databases(testbed_state, uid)

    kubectl("delete", "restore", "dropped", "-n", namespace, "--timeout=60s")

    wait_for(lambda: not _staging_databases(testbed_state, uid), timeout=60)
    wait_for(lambda: not _runner_jobs(kubectl, namespace, uid), timeout=60)


def test_an_inline_restore_deleted_mid_run_is_stopped_and_leaves_the_target_as_it_was(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    # Kopf hands the deletion to the Restore's handlers only once the run holding them
    # has ended; the run itself sees its Restore go and stops short of the switch-over.
    _large_backup(kubectl, testbed_state, namespace, backup_root)
    _apply(kubectl, namespace, _restore("aborted", **INTO_COPY))
    restoring = _wait_restore(kubectl, namespace, "aborted", "Restoring", timeout=60)
    uid = _get(kubectl, namespace, "restore", "aborted")["metadata"]["uid"]  # type: ignore[index]
    with held("pg_restore", restoring["stagingDatabase"]):
        kubectl("delete", "restore", "aborted", "-n", namespace, "--timeout=60s")
        # Made again under the name at once (a dry run now): the stopped run must write
        # nothing to the name, which is this one's.
        _apply(kubectl, namespace, _restore("aborted", **INTO_COPY, dryRun=True))
        time.sleep(5)  # the run reads its Restore every 2 s; let go, it would switch over

    # Switched over, the staging database would be gone too, under the target's name.
    wait_for(lambda: not _staging_databases(testbed_state, uid), timeout=60)
    tables = _fetch(
        _dsn(testbed_state, namespace, "copy"),
        "SELECT count(*) AS n FROM pg_catalog.pg_tables WHERE schemaname IN ('public', 'audit')",
    )
    assert tables[0]["n"] == 0, "the deleted restore switched the target over"
    again = _restore_status(kubectl, namespace, "aborted")
    assert again["phase"] == "Pending", again
    assert "Dry run" in again["message"]
    assert "progress" not in again  # nor the stopped run's figures


def test_a_restore_never_switches_over_a_database_made_for_another_namespace_of_the_name(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    # Another namespace of the name cannot log in as the role, so its restore fails
    # earlier; here the role's mark changes mid-run, as the check's own proof.
    _large_backup(kubectl, testbed_state, namespace, backup_root)
    _, role = database_identity(namespace, "copy")
    _apply(kubectl, namespace, _restore("taken", **INTO_COPY))
    restoring = _wait_restore(kubectl, namespace, "taken", "Restoring", timeout=60)
    own = kubectl("get", "namespace", namespace, "-o", "jsonpath={.metadata.uid}").stdout
    admin = testbed_state.managed_postgres_url
    try:
        with held("pg_restore", restoring["stagingDatabase"]):
            _run_sql(admin, f"COMMENT ON ROLE \"{role}\" IS '{NAMESPACE_MARK}{uuid.uuid4()}'")

        status = _wait_restore(kubectl, namespace, "taken", "Failed", timeout=120)
    finally:
        _run_sql(
            testbed_state.managed_postgres_url,
            f"COMMENT ON ROLE \"{role}\" IS '{NAMESPACE_MARK}{own}'",
        )
    assert _condition(status, "Completed")["reason"] == "DatabaseTaken", status
    assert status["attempts"] == 1  # not retried
    tables = _fetch(
        _dsn(testbed_state, namespace, "copy"),
        "SELECT count(*) AS n FROM pg_catalog.pg_tables WHERE schemaname IN ('public', 'audit')",
    )
    assert tables[0]["n"] == 0
