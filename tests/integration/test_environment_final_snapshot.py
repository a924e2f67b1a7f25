"""deletionPolicy Snapshot on the real control plane and PostgreSQL: deleting the
environment takes a final Backup once open sessions ended, drops the database only once
it completed, and keeps the Backup; without the encryption key nothing is dropped and
the environment stays; a pass that could not record its Backup's uid is followed by one
that recognises it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest
import yaml

from dockyard.core.settings import Settings
from dockyard.operator.database import database_identity
from dockyard.operator.runs.context import with_database
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import ApiClient, Kubectl, wait_for

pytestmark = pytest.mark.usefixtures("operator_process")

PINNED = "registry.example.com/shop/api:1.4.2"
# The Secret the operator's own Backups are encrypted with (not overridden in tests).
KEY_SECRET = Settings.model_fields["default_backup_key_secret"].default
SEED_SQL = """
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL);
INSERT INTO customers SELECT g, 'c' || g || '@example.com' FROM generate_series(1, 2000) g;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers);
INSERT INTO orders SELECT g, 1 + g % 2000 FROM generate_series(1, 5000) g;
"""
SEEDED_ROWS = {"public.customers": 2000, "public.orders": 5000}


def _get(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    return dict(json.loads(result.stdout))


def _fetch(dsn: str, query: str, *args: object) -> list[Any]:
    async def go() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def _run_sql(dsn: str, sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def _database_exists(state: State, name: str) -> bool:
    query = "SELECT 1 FROM pg_database WHERE datname = $1"
    return bool(_fetch(state.managed_postgres_url, query, name))


def _role_exists(state: State, name: str) -> bool:
    return bool(
        _fetch(state.managed_postgres_url, "SELECT 1 FROM pg_roles WHERE rolname = $1", name)
    )


def _key_secret(kubectl: Kubectl, namespace: str) -> None:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    kubectl("create", "secret", "generic", KEY_SECRET, "-n", namespace, f"--from-literal=key={key}")


def _seeded_environment(kubectl: Kubectl, state: State, namespace: str) -> tuple[str, str]:
    """An environment "shop" with deletionPolicy Snapshot and rows in its database:
    its uid and its database's name."""
    manifest = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": "shop"},
        "spec": {
            "tier": "development",
            "image": PINNED,
            "database": {"deletionPolicy": "Snapshot"},
        },
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))

    def ready() -> dict[str, Any] | None:
        env = _get(kubectl, namespace, "environment", "shop") or {}
        database = (env.get("status") or {}).get("database") or {}
        return env if database.get("ready") else None

    env = wait_for(ready, timeout=90)
    assert isinstance(env, dict)
    database, _ = database_identity(namespace, "shop")
    # Its own role seeds it, as its workload would: the snapshot dumps as that role.
    secret = _get(kubectl, namespace, "secret", "shop-database") or {}
    _run_sql(base64.b64decode(secret["data"]["uri"]).decode(), SEED_SQL)
    return str(env["metadata"]["uid"]), database


def _ready_condition(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    env = _get(kubectl, namespace, "environment", "shop") or {}
    conditions = (env.get("status") or {}).get("conditions", ())
    return next((c for c in conditions if c["type"] == "Ready"), {})


def _events(kubectl: Kubectl, namespace: str, reason: str) -> list[str]:
    events = json.loads(
        kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"reason={reason}", "-o", "json"
        ).stdout
    )
    return [str(event.get("message", "")) for event in events["items"]]


def _wait_event(kubectl: Kubectl, namespace: str, reason: str, text: str) -> None:
    wait_for(lambda: any(text in m for m in _events(kubectl, namespace, reason)), timeout=30)


def test_deleting_takes_a_final_backup_then_drops_the_database_and_keeps_the_backup(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _key_secret(kubectl, namespace)
    uid, database = _seeded_environment(kubectl, testbed_state, namespace)
    snapshot = f"shop-final-{uid[:8]}"

    kubectl("delete", "env", "shop", "-n", namespace, "--wait=false")

    wait_for(lambda: _get(kubectl, namespace, "environment", "shop") is None, timeout=120)
    backup = _get(kubectl, namespace, "backup", snapshot)
    assert backup is not None, "the final snapshot went with the environment"
    status = backup["status"]
    assert status["phase"] == "Completed"
    artifact = Path(unquote(urlsplit(status["location"]).path))
    assert artifact.is_relative_to(backup_root)
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == status["sha256"]
    rows = {table["name"]: table["rows"] for table in status["manifest"]["tables"]}
    assert rows == SEEDED_ROWS
    assert "ownerReferences" not in backup["metadata"]
    assert backup["metadata"]["labels"]["dockyard.io/environment"] == "shop"
    assert backup["metadata"]["labels"]["dockyard.io/final-snapshot"] == "true"
    assert backup["spec"]["encryption"]["keySecretRef"] == {"name": KEY_SECRET, "key": "key"}
    assert not _database_exists(testbed_state, database)
    assert not _role_exists(testbed_state, database)
    _wait_event(kubectl, namespace, "FinalSnapshotStarted", snapshot)
    _wait_event(kubectl, namespace, "DatabaseDropped", f"its final snapshot is Backup {snapshot}")


def _held(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    """The Ready condition once the deletion holds (SnapshotFailed)."""

    def held() -> dict[str, Any] | None:
        ready = _ready_condition(kubectl, namespace)
        return ready if ready.get("reason") == "SnapshotFailed" else None

    ready = wait_for(held, timeout=60)
    assert isinstance(ready, dict)
    return ready


def test_without_the_key_the_database_is_kept_and_the_environment_waits(
    kubectl: Kubectl, testbed_state: State, namespace: str
) -> None:
    uid, database = _seeded_environment(kubectl, testbed_state, namespace)

    kubectl("delete", "env", "shop", "-n", namespace, "--wait=false")

    ready = _held(kubectl, namespace)
    assert ready["status"] == "False"
    assert f"encryption key Secret {KEY_SECRET} does not exist" in ready["message"]
    assert "Retain or Delete" in ready["message"]
    env = _get(kubectl, namespace, "environment", "shop")
    assert env is not None
    assert env["status"]["phase"] == "Deleting"
    assert "dockyard.io/operator" in env["metadata"]["finalizers"]
    assert _database_exists(testbed_state, database)
    assert _get(kubectl, namespace, "backup", f"shop-final-{uid[:8]}") is None
    _wait_event(kubectl, namespace, "SnapshotFailed", KEY_SECRET)

    # With the key in place, the next look takes the snapshot and lets the deletion finish.
    _key_secret(kubectl, namespace)

    wait_for(lambda: _get(kubectl, namespace, "environment", "shop") is None, timeout=120)
    assert not _database_exists(testbed_state, database)
    backup = _get(kubectl, namespace, "backup", f"shop-final-{uid[:8]}")
    assert backup is not None
    assert backup["status"]["phase"] == "Completed"


def test_the_snapshot_waits_for_open_sessions_to_end_so_it_holds_their_work(
    kubectl: Kubectl, testbed_state: State, namespace: str
) -> None:
    _key_secret(kubectl, namespace)
    uid, database = _seeded_environment(kubectl, testbed_state, namespace)
    snapshot = f"shop-final-{uid[:8]}"
    loop = asyncio.new_event_loop()
    dsn = with_database(testbed_state.managed_postgres_url, database)
    session = loop.run_until_complete(asyncpg.connect(dsn))
    try:
        kubectl("delete", "env", "shop", "-n", namespace, "--wait=false")

        def draining() -> dict[str, Any] | None:
            ready = _ready_condition(kubectl, namespace)
            return ready if ready.get("reason") == "DrainingConnections" else None

        ready = wait_for(draining, timeout=60)
        assert isinstance(ready, dict)
        assert "before taking its final snapshot" in ready["message"]
        assert _get(kubectl, namespace, "deployment", "shop") is None
        assert _get(kubectl, namespace, "backup", snapshot) is None
        # Work that ends while the deletion waits is in the snapshot.
        loop.run_until_complete(
            session.execute("INSERT INTO customers VALUES (2001, 'last@example.com')")
        )
    finally:
        loop.run_until_complete(session.close())
        loop.close()

    wait_for(lambda: _get(kubectl, namespace, "environment", "shop") is None, timeout=120)
    backup = _get(kubectl, namespace, "backup", snapshot)
    assert backup is not None
    rows = {table["name"]: table["rows"] for table in backup["status"]["manifest"]["tables"]}
    assert rows == {**SEEDED_ROWS, "public.customers": 2001}
    assert not _database_exists(testbed_state, database)


def test_a_backup_made_before_the_deletion_under_the_snapshots_name_never_lets_it_drop(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    """The name is known once the environment exists: a developer's completed Backup under
    it, made beforehand to storage of their choosing, holds the deletion with the database
    kept; once it is deleted, the operator takes its own snapshot and drops the database."""
    _key_secret(kubectl, namespace)
    uid, database = _seeded_environment(kubectl, testbed_state, namespace)
    snapshot = f"shop-final-{uid[:8]}"
    squatter = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": snapshot},
        "spec": {
            "environmentRef": {"name": "shop"},
            "storage": {"filesystem": {"path": str(backup_root / namespace / "mine")}},
            "encryption": {"keySecretRef": {"name": KEY_SECRET, "key": "key"}},
        },
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(squatter))

    def completed() -> dict[str, Any] | None:
        backup = _get(kubectl, namespace, "backup", snapshot) or {}
        return backup if (backup.get("status") or {}).get("phase") == "Completed" else None

    squatted = wait_for(completed, timeout=90)
    assert isinstance(squatted, dict)
    # Written after the squat: the snapshot must hold it.
    _run_sql(
        with_database(testbed_state.managed_postgres_url, database),
        "INSERT INTO customers VALUES (2001, 'late@example.com')",
    )

    kubectl("delete", "env", "shop", "-n", namespace, "--wait=false")

    ready = _held(kubectl, namespace)
    assert f"Backup {snapshot} exists but was not made by this deletion" in ready["message"]
    assert _database_exists(testbed_state, database)
    env = _get(kubectl, namespace, "environment", "shop")
    assert env is not None
    assert "finalSnapshot" not in env["status"]
    _wait_event(kubectl, namespace, "SnapshotFailed", "was not made by this deletion")

    kubectl("delete", "backup", snapshot, "-n", namespace)

    wait_for(lambda: _get(kubectl, namespace, "environment", "shop") is None, timeout=180)
    assert not _database_exists(testbed_state, database)
    backup = _get(kubectl, namespace, "backup", snapshot)
    assert backup is not None
    assert backup["metadata"]["uid"] != squatted["metadata"]["uid"]
    assert backup["spec"]["storage"] != squatter["spec"]["storage"]
    rows = {table["name"]: table["rows"] for table in backup["status"]["manifest"]["tables"]}
    assert rows == {**SEEDED_ROWS, "public.customers": 2001}


@contextmanager
def _uid_not_recorded(kubectl: Kubectl, namespace: str) -> Iterator[None]:
    """While inside: the apiserver refuses, in ``namespace``, every Environment status
    write that records a final snapshot's uid (what a failed write, or an operator stopped
    right after its create, leaves behind)."""
    name = f"test-final-snapshot-unrecorded-{uuid.uuid4().hex[:8]}"
    selector = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": selector,
                "resourceRules": [
                    {
                        "apiGroups": ["dockyard.io"],
                        "apiVersions": ["*"],
                        "operations": ["UPDATE"],
                        "resources": ["environments/status"],
                    }
                ],
            },
            "validations": [
                {
                    "expression": "object.?status.?finalSnapshot.?uid.orValue('') == ''",
                    "message": "test: the final snapshot's uid is not recorded",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all([policy, binding]))
    try:
        probe = json.dumps({"status": {"finalSnapshot": {"name": "probe", "uid": "probe"}}})

        def refused() -> bool:
            result = kubectl(
                "patch", "environment", "shop", "-n", namespace, "--subresource=status",
                "--type=merge", "-p", probe, "--dry-run=server", check=False,
            )  # fmt: skip
            return result.returncode != 0 and "not recorded" in result.stderr

        wait_for(refused, timeout=30)
        yield
    finally:
        kubectl("delete", "validatingadmissionpolicybinding", name, check=False)
        kubectl("delete", "validatingadmissionpolicy", name, check=False)


def test_a_snapshot_whose_uid_was_not_recorded_is_recognised_and_the_deletion_finishes(
    kubectl: Kubectl, testbed_state: State, namespace: str
) -> None:
    """The operator creates its final snapshot, and the status write recording its uid
    fails (as when the operator stops right there): the Backup stays, Completed, under
    the name. The next pass takes it as the deletion's own (it was recorded as being
    created, it was created after the deletion began and is exactly what the operator
    creates) and drops the database, rather than holding for good on a Backup that only
    someone holding ``destroy`` may delete on production."""
    _key_secret(kubectl, namespace)
    uid, database = _seeded_environment(kubectl, testbed_state, namespace)
    snapshot = f"shop-final-{uid[:8]}"

    with _uid_not_recorded(kubectl, namespace):
        kubectl("delete", "env", "shop", "-n", namespace, "--wait=false")

        def completed() -> dict[str, Any] | None:
            backup = _get(kubectl, namespace, "backup", snapshot) or {}
            return backup if (backup.get("status") or {}).get("phase") == "Completed" else None

        made = wait_for(completed, timeout=90)
        assert isinstance(made, dict)
        env = _get(kubectl, namespace, "environment", "shop")
        assert env is not None, "the deletion went on without recording its snapshot"
        assert env["status"]["finalSnapshot"] == {"name": snapshot, "uid": ""}
        assert _database_exists(testbed_state, database)

    wait_for(lambda: _get(kubectl, namespace, "environment", "shop") is None, timeout=180)
    assert not _database_exists(testbed_state, database)
    backup = _get(kubectl, namespace, "backup", snapshot)
    assert backup is not None
    assert backup["metadata"]["uid"] == made["metadata"]["uid"]  # recognised, not taken again
    _wait_event(kubectl, namespace, "FinalSnapshotRecorded", made["metadata"]["uid"])
    _wait_event(kubectl, namespace, "DatabaseDropped", f"its final snapshot is Backup {snapshot}")
    assert not any(
        "not made by this deletion" in m for m in _events(kubectl, namespace, "SnapshotFailed")
    )


def _completed_snapshot(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    """The final snapshot once the deletion it held has finished."""
    wait_for(lambda: _get(kubectl, namespace, "environment", "shop") is None, timeout=120)
    backup = _get(kubectl, namespace, "backup", name)
    assert backup is not None, "the final snapshot went with the environment"
    assert backup["status"]["phase"] == "Completed", backup["status"]
    return backup


async def test_a_deletion_through_the_api_takes_the_snapshot_before_the_children_go(
    kubectl: Kubectl,
    testbed: Testbed,
    testbed_state: State,
    namespace: str,
    client: ApiClient,
    roles: None,
) -> None:
    user = f"dev-{uuid.uuid4().hex[:6]}"
    kubectl("create", "rolebinding", "dev", "--clusterrole=dockyard-developer",
            f"--user={user}", "-n", namespace)  # fmt: skip
    _key_secret(kubectl, namespace)
    uid, database = await asyncio.to_thread(_seeded_environment, kubectl, testbed_state, namespace)

    response = await client.delete(
        f"/api/v1/namespaces/{namespace}/environments/shop",
        headers={"Authorization": f"Bearer {testbed.user_token(user, [])}"},
    )

    assert response.status == 202, await response.text()
    backup = await asyncio.to_thread(
        _completed_snapshot, kubectl, namespace, f"shop-final-{uid[:8]}"
    )
    rows = {table["name"]: table["rows"] for table in backup["status"]["manifest"]["tables"]}
    assert rows == SEEDED_ROWS
    assert not await asyncio.to_thread(_database_exists, testbed_state, database)


def test_a_foreground_deletion_keeps_the_database_and_says_why_no_snapshot_can_be_taken(
    kubectl: Kubectl, testbed_state: State, namespace: str
) -> None:
    _key_secret(kubectl, namespace)
    uid, database = _seeded_environment(kubectl, testbed_state, namespace)

    kubectl("delete", "env", "shop", "-n", namespace, "--cascade=foreground", "--wait=false")

    ready = _held(kubectl, namespace)
    assert "the database Secret of Environment shop does not exist" in ready["message"]
    assert "--cascade=foreground" in ready["message"]
    assert _database_exists(testbed_state, database)
    # No Backup was made to spend its attempts failing on the missing login.
    assert _get(kubectl, namespace, "backup", f"shop-final-{uid[:8]}") is None

    # Set to Delete, as the condition says, the deletion goes on and drops it.
    kubectl("patch", "env", "shop", "-n", namespace, "--type=merge",
            "-p", '{"spec": {"database": {"deletionPolicy": "Delete"}}}')  # fmt: skip

    wait_for(lambda: _get(kubectl, namespace, "environment", "shop") is None, timeout=120)
    assert not _database_exists(testbed_state, database)
