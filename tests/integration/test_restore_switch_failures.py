"""A switch-over that fails partway, on the test bed's real PostgreSQL server.

The renames of a switch-over commit in one transaction, but what follows them (allowing
connections again) can fail, and a connection lost at COMMIT leaves the client unsure.
A failure counted as "the target was not changed" would make the restore run again over
what the application wrote to the restored database since: ``replace`` asks the server
what happened. Each server below is the real one; only the failure is injected, after
(or instead of) the real statements.

The last test runs a Restore's recovery as the operator runs it, against the real
apiserver (in a namespace no operator watches) and the platform database's audit trail.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import kopf
import pytest
from kopf._core.engines import posting

from dockyard.core import db, migrations
from dockyard.core.kube import KubeClient, load_config
from dockyard.core.settings import Settings
from dockyard.operator.database import (
    DatabaseUnavailable,
    ManagedPostgres,
    TenantLogin,
    generate_password,
    retired_database_name,
    staging_database_name,
)
from dockyard.operator.database.errors import DatabaseOperationFailed
from dockyard.operator.restores.lifecycle import RestoreRuns
from dockyard.operator.restores.switch_over import (
    SWITCHED,
    SwitchOverUnsure,
    audit_switch_over,
    replace,
    switched_over,
)
from dockyard.operator.runs.audit import OperatorAudit
from dockyard.operator.runs.context import RunContext
from dockyard.operator.runs.restoring import DatabaseFailed
from dockyard.runner import BackupError
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl, get_json
from tests.integration import test_managed_database
from tests.integration.test_managed_database import Environment, _ensure, _exec, _rows

pytestmark = pytest.mark.integration


# The managed server and environments made (and dropped) per test, as there.
admin_dsn = test_managed_database.admin_dsn
server = test_managed_database.server
new_environment = test_managed_database.new_environment


_LOST = DatabaseOperationFailed("ConnectionLost", "the connection was closed in the middle")


class _Injecting(ManagedPostgres):
    def __init__(self, admin_dsn: str) -> None:
        super().__init__(admin_dsn)
        self.admin_dsn = admin_dsn


class _FailsAfterTheRenames(_Injecting):
    """The renames commit; then re-allowing connections fails, as a dropped connection
    would make it: the live database is left refusing them."""

    async def switch_over(self, *, live: str, staging: str, retired: str) -> None:
        await super().switch_over(live=live, staging=staging, retired=retired)
        await _exec(self.admin_dsn, "postgres", f'ALTER DATABASE "{live}" ALLOW_CONNECTIONS false')
        raise _LOST


class _FailsBeforeTheRenames(_Injecting):
    """Connections are refused, then the renames fail (their transaction rolls back)."""

    async def switch_over(self, *, live: str, staging: str, retired: str) -> None:
        await _exec(self.admin_dsn, "postgres", f'ALTER DATABASE "{live}" ALLOW_CONNECTIONS false')
        raise _LOST


class _GoneAfterTheRenames(_FailsAfterTheRenames):
    """The renames commit, and then the server stops answering altogether."""

    async def reopen(self, name: str) -> None:
        raise DatabaseUnavailable("ServerUnavailable", "the server does not answer")


async def _restored(
    server: ManagedPostgres, admin_dsn: str, env: Environment, uid: str | None = None
) -> tuple[str, str, str]:
    """A live database holding 1, and a staging one (as the restore ``uid`` leaves it)
    holding 2, 3."""
    password = generate_password()
    credentials = await _ensure(server, env, password)
    live, role = credentials.database, credentials.user
    await _exec(admin_dsn, live, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
    uid = uid or str(uuid.uuid4())
    staging, retired = staging_database_name("r", uid, 1), retired_database_name(uid)
    await server.create_database(staging, owner=TenantLogin(role, password))
    await _exec(
        admin_dsn,
        staging,
        f'SET ROLE "{role}"; CREATE TABLE t (x int); INSERT INTO t VALUES (2), (3)',
    )
    return live, staging, retired


async def _allows_connections(admin_dsn: str, database: str) -> bool:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return bool(
            await conn.fetchval("SELECT datallowconn FROM pg_database WHERE datname = $1", database)
        )
    finally:
        await conn.close()


async def test_a_failure_after_the_renames_committed_counts_as_switched_over(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    live, staging, retired = await _restored(server, admin_dsn, new_environment())
    failing = _FailsAfterTheRenames(admin_dsn)

    await replace(failing, live=live, staging=staging, retired=retired)  # no DatabaseFailed

    assert await _rows(admin_dsn, live) == [2, 3]
    assert await _allows_connections(admin_dsn, live)
    assert await server.database_exists(retired)  # what recovery would look for, kept
    await server.drop_database(retired)


async def test_a_failure_before_the_renames_leaves_the_target_as_it_was_and_open(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    live, staging, retired = await _restored(server, admin_dsn, new_environment())
    failing = _FailsBeforeTheRenames(admin_dsn)

    with pytest.raises(DatabaseFailed, match="closed in the middle"):
        await replace(failing, live=live, staging=staging, retired=retired)

    assert await _rows(admin_dsn, live) == [1]
    assert await _allows_connections(admin_dsn, live)
    assert await server.database_exists(staging)  # the attempt's to drop, as it abandons
    assert not await server.database_exists(retired)
    await server.drop_database(staging)


async def test_a_failure_the_server_cannot_explain_is_not_a_failed_attempt(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    live, staging, retired = await _restored(server, admin_dsn, new_environment())
    failing = _GoneAfterTheRenames(admin_dsn)

    with pytest.raises(SwitchOverUnsure, match="cannot say whether it happened") as caught:
        await replace(failing, live=live, staging=staging, retired=retired)

    # Not an attempt's error: nothing abandons it (dropping what is now live data's
    # staging name, then restoring again); the next pass recovers it instead.
    assert not isinstance(caught.value, BackupError)
    assert await server.database_exists(retired)
    await server.reopen(live)
    await server.drop_database(retired)


async def test_a_failure_after_the_renames_into_a_target_without_a_database_is_switched_over(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    # The target's database was gone: the switch-over only renames the restored one,
    # and nothing is retired to tell that it happened.
    live, staging, retired = await _restored(server, admin_dsn, new_environment())
    await server.drop_database(live)
    failing = _FailsAfterTheRenames(admin_dsn)

    await replace(failing, live=live, staging=staging, retired=retired)  # no DatabaseFailed

    assert await _rows(admin_dsn, live) == [2, 3]
    assert await _allows_connections(admin_dsn, live)
    assert not await server.database_exists(retired)


async def test_recovery_finds_a_switch_over_into_a_target_without_a_database_done(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    live, staging, retired = await _restored(server, admin_dsn, new_environment())
    await server.drop_database(live)
    oid = await server.database_oid(staging)  # recorded while Verifying
    assert not await switched_over(server, live, staging, retired, oid)

    await server.switch_over(live=live, staging=staging, retired=retired)  # then a crash

    assert await switched_over(server, live, staging, retired, oid)
    # By the rule of before the oid was recorded, it looked as if nothing had happened.
    assert not await switched_over(server, live, staging, retired, None)


# -- recovery, as the operator runs it ---------------------------------------------------------


@pytest.fixture
async def platform(testbed_state: State) -> AsyncIterator[asyncpg.Pool]:
    """The platform database (its audit trail), migrated, as the operator's pool sees it."""
    async with db.pool_context(Settings(database_url=testbed_state.database_url)) as pool:
        await migrations.migrate(pool)
        yield pool


@pytest.fixture
async def restores(
    testbed_state: State, server: ManagedPostgres, platform: asyncpg.Pool
) -> AsyncIterator[RestoreRuns]:
    """The operator's Restore life cycle, on the real server, recording to the trail."""
    kube = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
    audit = OperatorAudit(platform, "test-operator")
    try:
        yield RestoreRuns(RunContext.create(kube, Settings(), None, postgres=server, audit=audit))
    finally:
        await kube.close()


@contextmanager
def _no_events() -> Iterator[None]:
    """Outside an operator, Kopf has no settings to post Events with: none are posted."""
    quiet = kopf.OperatorSettings()
    quiet.posting.enabled = False
    token = posting.settings_var.set(quiet)
    try:
        yield
    finally:
        posting.settings_var.reset(token)


def _verifying_restore(kubectl: Kubectl, namespace: str, environment: str) -> str:
    """A Restore into ``environment``, and its uid: its staging database is named for it,
    so the status (``_verifying``) is written once that database is made."""
    restore = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Restore",
        "metadata": {"name": "swap", "namespace": namespace},
        "spec": {
            "source": {"backupRef": {"name": "nightly"}},
            "target": {"environmentRef": {"name": environment}},
            "safetyBackup": False,
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(restore))
    return str(get_json(kubectl, "restore", "swap", "-n", namespace)["metadata"]["uid"])  # type: ignore[index]


def _verifying(
    kubectl: Kubectl, namespace: str, environment: str, staging: str, oid: int | None
) -> None:
    """The status a pass leaves just before the switch-over: Verifying, with the staging
    database and its oid recorded."""
    plan = {"backup": "nightly", "sourceEnvironment": environment, "target": environment,
            "inPlace": True, "estimatedDurationSeconds": 1}  # fmt: skip
    status = {"phase": "Verifying", "attempts": 1, "plan": plan,
              "stagingDatabase": staging, "stagingDatabaseOid": oid}  # fmt: skip
    kubectl("patch", "restore", "swap", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}))  # fmt: skip


@pytest.mark.parametrize(
    ("failing", "recorded_before_the_crash"),
    [
        # The renames committed and the server went away: the pass could not say, so
        # recovery completes it, and records it.
        (_GoneAfterTheRenames, False),
        # The pass saw the switch-over through and recorded it, then died before the
        # Restore was Completed: recovery completes it, and records nothing more.
        (_FailsAfterTheRenames, True),
    ],
    ids=["unsure", "recorded-then-cut-short"],
)
@pytest.mark.usefixtures("crds_installed")
async def test_a_switch_over_completed_by_recovery_is_in_the_audit_trail_once(
    failing: type[_Injecting],
    recorded_before_the_crash: bool,
    kubectl: Kubectl,
    unwatched_namespace: str,
    server: ManagedPostgres,
    admin_dsn: str,
    restores: RestoreRuns,
    platform: asyncpg.Pool,
) -> None:
    namespace = unwatched_namespace
    uid = _verifying_restore(kubectl, namespace, "copy")
    live, staging, retired = await _restored(server, admin_dsn, (namespace, "copy"), uid)
    try:
        _verifying(kubectl, namespace, "copy", staging, await server.database_oid(staging))
        loaded = await restores.records.load(namespace, "swap")
        assert loaded is not None
        assert loaded.status.plan is not None

        if recorded_before_the_crash:
            await replace(failing(admin_dsn), live=live, staging=staging, retired=retired)
            await audit_switch_over(restores.context, loaded, loaded.status.plan)
        else:
            with pytest.raises(SwitchOverUnsure):
                await replace(failing(admin_dsn), live=live, staging=staging, retired=retired)
        with _no_events():
            await restores.drive(namespace, "swap")  # the next pass: recovery
            await restores.drive(namespace, "swap")  # and one more, which finds it done

        status = get_json(kubectl, "restore", "swap", "-n", namespace)["status"]
        assert status["phase"] == "Completed", status  # type: ignore[index]
        assert await _rows(admin_dsn, live) == [2, 3]
        rows = await platform.fetch(
            "SELECT actor, diff FROM audit_events"
            " WHERE source = 'operator' AND action = $1 AND namespace = $2 AND name = 'swap'",
            SWITCHED,
            namespace,
        )
        assert [(r["actor"], r["diff"]["uid"], r["diff"]["environment"]) for r in rows] == [
            ("test-operator", uid, "copy")
        ]
    finally:
        await server.drop(namespace=namespace, environment="copy")
        await server.drop_database(retired)
