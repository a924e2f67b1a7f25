"""The databases of Restores and drills that went unseen are dropped, and no other.

A Restore has no finalizer: deleted while no operator runs, its databases were left
until its environment went. On the real apiserver and PostgreSQL: a pass of
``runs.strays`` drops a gone Restore's staging and retired databases and a gone drill's
scratch one, keeps those of a Restore still there and those of an environment it does
not watch, and records each drop in the audit trail; then a real operator, started
after a Restore was deleted while it was down, drops its database at start-up, and a
later stray at its next pass.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dockyard.core.kube import KubeClient, load_config
from dockyard.core.settings import Settings
from dockyard.operator.database import (
    ManagedPostgres,
    database_identity,
    generate_password,
    staging_database_name,
)
from dockyard.operator.runs.audit import OperatorAudit
from dockyard.operator.runs.context import RunContext
from dockyard.operator.runs.strays import DROPPED, Scope, sweep_strays
from dockyard.testbed.cluster import State
from tests.conftest import SESSION_ID, Kubectl, get_json, start_operator, stop_operator, wait_for
from tests.integration import test_managed_database, test_restore_switch_failures
from tests.integration.test_backup_operator import PINNED, _fetch, _owner_dsn, _run_sql
from tests.integration.test_managed_database import _ensure, _exec, _rows
from tests.integration.test_restore_switch_failures import _restored, _verifying_restore

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("crds_installed")]

admin_dsn = test_managed_database.admin_dsn
server = test_managed_database.server
platform = test_restore_switch_failures.platform  # the platform database, migrated


@pytest.fixture
def other_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A second namespace no operator watches, outside the pass's scope."""
    name = f"unwatched-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def _environment_object(kubectl: Kubectl, namespace: str, name: str) -> None:
    """The Environment ``name``, only stored (no operator watches ``namespace``)."""
    env = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"tier": "development", "image": PINNED},
    }
    kubectl("apply", "-f", "-", input=json.dumps(env))


def _restore_object(kubectl: Kubectl, namespace: str, name: str) -> str:
    """A Restore ``name`` into "copy", only stored; its uid."""
    restore = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Restore",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "source": {"backupRef": {"name": "nightly"}},
            "target": {"environmentRef": {"name": "copy"}},
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(restore))
    return str(get_json(kubectl, "restore", name, "-n", namespace)["metadata"]["uid"])  # type: ignore[index]


async def _owned_database(admin_dsn: str, name: str, owner: str) -> None:
    await _exec(admin_dsn, "postgres", f'CREATE DATABASE "{name}" OWNER "{owner}"')


async def _present(admin_dsn: str, names: list[str]) -> list[str]:
    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname = any($1::text[]) ORDER BY 1", names
        )
    finally:
        await conn.close()
    return [row["datname"] for row in rows]


async def test_a_pass_drops_the_databases_of_gone_restores_and_drills_and_no_other(
    kubectl: Kubectl,
    unwatched_namespace: str,
    other_namespace: str,
    testbed_state: State,
    server: ManagedPostgres,
    admin_dsn: str,
    platform: asyncpg.Pool,
) -> None:
    namespace = unwatched_namespace
    role = database_identity(namespace, "copy")[1]
    _environment_object(kubectl, namespace, "copy")
    _environment_object(kubectl, other_namespace, "copy")
    gone = _verifying_restore(kubectl, namespace, "copy")  # the Restore "swap"
    live, staging, retired = await _restored(server, admin_dsn, (namespace, "copy"), gone)
    await _owned_database(admin_dsn, retired, role)
    kept = _restore_object(kubectl, namespace, "kept")
    kept_staging = staging_database_name("r", kept, 1)
    await _owned_database(admin_dsn, kept_staging, role)
    drill_scratch = staging_database_name("d", str(uuid.uuid4()), 1)  # no such drill
    await _owned_database(admin_dsn, drill_scratch, role)
    # Another namespace's environment, whose Restore is gone too: not this scope's.
    await _ensure(server, (other_namespace, "copy"), generate_password())
    elsewhere = staging_database_name("r", str(uuid.uuid4()), 1)
    await _owned_database(admin_dsn, elsewhere, database_identity(other_namespace, "copy")[1])
    made = sorted([staging, retired, kept_staging, drill_scratch, elsewhere])
    kube = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
    try:
        kubectl("delete", "restore", "swap", "-n", namespace)  # no operator sees it go
        context = RunContext.create(
            kube, Settings(), None, postgres=server, audit=OperatorAudit(platform, "test-operator")
        )

        dropped = await sweep_strays(context, Scope((namespace,)))

        assert sorted(s.database for s in dropped) == sorted([staging, retired, drill_scratch])
        assert {(s.kind, s.namespace, s.environment) for s in dropped} == {
            ("Restore", namespace, "copy"),
            ("RestoreDrill", namespace, "copy"),
        }
        assert await _present(admin_dsn, made) == sorted([kept_staging, elsewhere])
        assert await _rows(admin_dsn, live) == [1]  # the environment's own database
        rows = await platform.fetch(
            "SELECT actor, resource, name, diff FROM audit_events"
            " WHERE source = 'operator' AND action = $1 AND namespace = $2",
            DROPPED,
            namespace,
        )
        assert sorted(r["diff"]["database"] for r in rows) == sorted(
            [staging, retired, drill_scratch]
        )
        assert {(r["actor"], r["resource"], r["name"]) for r in rows} == {
            ("test-operator", "environments", "copy")
        }

        # A pattern (listed across the cluster, then matched): the other namespace's
        # stray goes once it is in scope, the kept Restore's still stays.
        pattern = other_namespace[:-1] + "?"
        again = await sweep_strays(context, Scope((namespace, pattern)))
        assert [s.database for s in again] == [elsewhere]
        assert await _present(admin_dsn, made) == [kept_staging]
    finally:
        await kube.close()
        await server.drop(namespace=namespace, environment="copy")
        await server.drop(namespace=other_namespace, environment="copy")
        for name in made:
            await server.drop_database(name)


async def _allows_connections(admin_dsn: str, name: str) -> bool:
    conn = await asyncpg.connect(admin_dsn)
    try:
        value = await conn.fetchval("SELECT datallowconn FROM pg_database WHERE datname = $1", name)
    finally:
        await conn.close()
    return bool(value)


async def test_a_pass_opens_a_database_a_switch_over_cut_short_left_closed(
    kubectl: Kubectl,
    unwatched_namespace: str,
    other_namespace: str,
    testbed_state: State,
    server: ManagedPostgres,
    admin_dsn: str,
) -> None:
    """The operator killed after the switch-over refused connections, and the Restore
    deleted before the next operator recovered it: no pass of that Restore is left to
    let the application connect again, so the stray pass does."""
    namespace = unwatched_namespace
    _environment_object(kubectl, namespace, "copy")
    _environment_object(kubectl, other_namespace, "copy")
    await _ensure(server, (namespace, "copy"), generate_password())
    await _ensure(server, (other_namespace, "copy"), generate_password())
    live = database_identity(namespace, "copy")[0]
    elsewhere = database_identity(other_namespace, "copy")[0]
    for name in (live, elsewhere):
        await _exec(admin_dsn, "postgres", f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    kube = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
    try:
        context = RunContext.create(kube, Settings(), None, postgres=server)

        assert await sweep_strays(context, Scope((namespace,))) == []

        assert await _allows_connections(admin_dsn, live)
        # Another operator's environment (out of this pass's scope) is its to recover.
        assert not await _allows_connections(admin_dsn, elsewhere)
    finally:
        await kube.close()
        await _exec(admin_dsn, "postgres", f'ALTER DATABASE "{elsewhere}" ALLOW_CONNECTIONS true')
        await server.drop(namespace=namespace, environment="copy")
        await server.drop(namespace=other_namespace, environment="copy")


def _operator_database(kubectl: Kubectl, namespace: str, name: str) -> str:
    """The Environment ``name`` with a database, once the operator made it; its owner's
    DSN, with one table of two rows written through it."""
    env = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"tier": "development", "image": PINNED, "database": {"deletionPolicy": "Delete"}},
    }
    kubectl("apply", "-f", "-", input=json.dumps(env))

    def ready() -> bool | None:
        status: Any = get_json(kubectl, "environment", name, "-n", namespace).get("status")
        return bool(((status or {}).get("database") or {}).get("ready")) or None

    wait_for(ready, timeout=90)
    dsn = _owner_dsn(kubectl, namespace, name)
    _run_sql(dsn, "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)")
    return dsn


def _databases(dsn: str, names: list[str]) -> list[str]:
    return asyncio.run(_present(dsn, names))


def test_an_operator_drops_a_restore_deleted_while_it_was_down_and_later_strays(
    kubectl: Kubectl,
    testbed_env: dict[str, str],
    testbed_state: State,
    tmp_path: Path,
) -> None:
    namespace = f"strays-{SESSION_ID}-{uuid.uuid4().hex[:4]}"
    kubectl("create", "namespace", namespace)
    admin = testbed_state.managed_postgres_url
    role = database_identity(namespace, "shop")[1]
    log = tmp_path / "operator.log"
    env = {**testbed_env, "DOCKYARD_STRAY_DATABASE_INTERVAL": "2"}
    proc = start_operator(namespace, env, log)
    made: list[str] = []
    try:
        owner_dsn = _operator_database(kubectl, namespace, "shop")
        stop_operator(proc)

        # While it is down: a Restore's attempt makes its database, and the Restore goes.
        restore = {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Restore",
            "metadata": {"name": "unseen", "namespace": namespace},
            "spec": {"source": {"backupRef": {"name": "nightly"}}},
        }
        kubectl("apply", "-f", "-", input=json.dumps(restore))
        uid = str(get_json(kubectl, "restore", "unseen", "-n", namespace)["metadata"]["uid"])  # type: ignore[index]
        made.append(staging_database_name("r", uid, 1))
        _run_sql(admin, f'CREATE DATABASE "{made[0]}" OWNER "{role}"')
        kubectl("delete", "restore", "unseen", "-n", namespace)
        assert _databases(admin, made) == made

        proc = start_operator(namespace, env, log, append=True)
        assert wait_for(lambda: _databases(admin, made) == [] or None, timeout=60)

        made.append(staging_database_name("d", str(uuid.uuid4()), 1))  # a later stray
        _run_sql(admin, f'CREATE DATABASE "{made[1]}" OWNER "{role}"')
        assert wait_for(lambda: _databases(admin, made) == [] or None, timeout=30)
        live = database_identity(namespace, "shop")[0]
        assert _databases(admin, [live]) == [live]
        assert [r["x"] for r in _fetch(owner_dsn, "SELECT x FROM t ORDER BY x")] == [1, 2]
        assert "stray database dropped" in log.read_text()
    finally:
        kubectl("delete", "environments", "--all", "-n", namespace, "--timeout=60s", check=False)
        stop_operator(proc)
        for name in made:
            _run_sql(admin, f'DROP DATABASE IF EXISTS "{name}"')
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
