"""A switch-over that fails partway, on the test bed's real PostgreSQL server.

The renames of a switch-over commit in one transaction, but what follows them (allowing
connections again) can fail, and a connection lost at COMMIT leaves the client unsure.
A failure counted as "the target was not changed" would make the restore run again over
what the application wrote to the restored database since: ``replace`` asks the server
what happened. Each server below is the real one; only the failure is injected, after
(or instead of) the real statements.

The last tests run a Restore's passes as the operator runs them, against the real
apiserver (in a namespace no operator watches): its recovery, recorded once in the
platform database's audit trail, and what becomes of the databases a restore made once
a drop of one failed or the Restore is gone.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
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
from dockyard.operator.outcomes import Outcome
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


class _DropFailsOnce(_Injecting):
    """The server restarts as the first of a restore's databases is dropped: that drop
    fails, the later ones do not."""

    def __init__(self, admin_dsn: str) -> None:
        super().__init__(admin_dsn)
        self.failed: list[str] = []

    async def drop_database(self, name: str) -> None:
        if name.startswith("dkr_") and not self.failed:
            self.failed.append(name)
            raise DatabaseUnavailable("ServerUnavailable", "the database system is shutting down")
        await super().drop_database(name)


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


async def _restore_databases(admin_dsn: str, uid: str) -> list[str]:
    """Every database on the server named for the restore ``uid``."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1",
            staging_database_name("r", uid) + "%",
        )
    finally:
        await conn.close()
    return [row["datname"] for row in rows]


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
        # Nobody measured how long it took: no duration rather than a made-up 0.0 s.
        assert "durationSeconds" not in status, status  # type: ignore[operator]
        assert "not measured" in status["message"]  # type: ignore[index]
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


# -- the databases a restore leaves ------------------------------------------------------------


@asynccontextmanager
async def _passes(state: State, postgres: ManagedPostgres) -> AsyncIterator[RestoreRuns]:
    """The operator's Restore life cycle on ``postgres``, posting no Events."""
    kube = KubeClient.connect(load_config(Path(state.kubeconfig), {}))
    try:
        with _no_events():
            yield RestoreRuns(RunContext.create(kube, Settings(), None, postgres=postgres))
    finally:
        await kube.close()


def _record(kubectl: Kubectl, namespace: str, status: dict[str, object]) -> None:
    """The Restore "swap"'s status, as the operator would have written it."""
    kubectl("patch", "restore", "swap", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}))  # fmt: skip


@pytest.mark.usefixtures("crds_installed")
async def test_a_retired_database_whose_drop_failed_is_dropped_by_the_restores_next_pass(
    kubectl: Kubectl,
    unwatched_namespace: str,
    testbed_state: State,
    server: ManagedPostgres,
    admin_dsn: str,
) -> None:
    namespace = unwatched_namespace
    uid = _verifying_restore(kubectl, namespace, "copy")
    live, staging, retired = await _restored(server, admin_dsn, (namespace, "copy"), uid)
    failing = _DropFailsOnce(admin_dsn)
    try:
        _verifying(kubectl, namespace, "copy", staging, await server.database_oid(staging))
        await server.switch_over(live=live, staging=staging, retired=retired)  # then a crash
        async with _passes(testbed_state, failing) as restores:
            # Recovery completes it; dropping the target's old database fails.
            first = await restores.drive(namespace, "swap")
            status = get_json(kubectl, "restore", "swap", "-n", namespace)["status"]
            assert status["phase"] == "Completed", status  # type: ignore[index]
            assert "stagingDatabase" not in status  # type: ignore[operator]
            assert failing.failed == [retired]
            assert first.retry is not None  # looked at again, though Completed
            assert await _restore_databases(admin_dsn, uid) == [retired]

            again = await restores.drive(namespace, "swap")

        assert again == Outcome.done()
        assert await _restore_databases(admin_dsn, uid) == []
        assert await _rows(admin_dsn, live) == [2, 3]  # the restored data, live
    finally:
        await server.drop(namespace=namespace, environment="copy")
        await server.drop_database(retired)


@pytest.mark.parametrize("phase", ["Completed", "Failed"])
@pytest.mark.usefixtures("crds_installed")
async def test_a_finished_restores_databases_left_behind_go_on_its_next_pass(
    phase: str,
    kubectl: Kubectl,
    unwatched_namespace: str,
    testbed_state: State,
    server: ManagedPostgres,
    admin_dsn: str,
) -> None:
    # As a failed drop (or a crash before it) leaves them: no longer named in status.
    namespace = unwatched_namespace
    uid = _verifying_restore(kubectl, namespace, "copy")
    live, staging, retired = await _restored(server, admin_dsn, (namespace, "copy"), uid)
    try:
        if phase == "Completed":
            await server.switch_over(live=live, staging=staging, retired=retired)
        _record(kubectl, namespace, {"phase": phase, "attempts": 1, "message": "ended"})
        assert await _restore_databases(admin_dsn, uid)

        async with _passes(testbed_state, server) as restores:
            outcome = await restores.drive(namespace, "swap")  # a resume, after a restart

        assert outcome == Outcome.done()
        assert await _restore_databases(admin_dsn, uid) == []
        assert await _rows(admin_dsn, live) == ([2, 3] if phase == "Completed" else [1])
    finally:
        await server.drop(namespace=namespace, environment="copy")
        for name in (staging, retired):
            await server.drop_database(name)


@pytest.mark.usefixtures("crds_installed")
async def test_a_restore_deleted_while_nothing_runs_it_leaves_none_of_its_databases(
    kubectl: Kubectl,
    unwatched_namespace: str,
    testbed_state: State,
    server: ManagedPostgres,
    admin_dsn: str,
) -> None:
    # Pending again after an attempt whose staging database could not be dropped.
    namespace = unwatched_namespace
    uid = _verifying_restore(kubectl, namespace, "copy")
    live, staging, _ = await _restored(server, admin_dsn, (namespace, "copy"), uid)
    try:
        _record(kubectl, namespace, {"phase": "Pending", "attempts": 1, "message": "retrying"})
        body = get_json(kubectl, "restore", "swap", "-n", namespace)
        kubectl("delete", "restore", "swap", "-n", namespace)

        async with _passes(testbed_state, server) as restores:
            await restores.forget(body)  # what the watch's DELETED event calls

        assert await _restore_databases(admin_dsn, uid) == []
        assert await _rows(admin_dsn, live) == [1]  # the target as it was
    finally:
        await server.drop(namespace=namespace, environment="copy")
        await server.drop_database(staging)
