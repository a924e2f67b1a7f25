"""The database step of an Environment whose database was just disabled: its role is
locked out once, and a lock-out that fails keeps the step not ready, so it is retried;
one disabled before this process is locked out once per process (the real server's side
is tests/integration/test_managed_database.py)."""

from __future__ import annotations

from typing import Any, cast

from dockyard.core.kube import KubeClient
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.environment import Environment
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.database import ManagedDatabaseError, ManagedPostgres
from dockyard.operator.environments.children import ChildMemory
from dockyard.operator.environments.provisioning import DatabaseProvisioner

NAMESPACE_UID = "ns-uid-1"


class _Kube:
    """The apiserver as far as the step reads it: the namespace, for its uid."""

    async def get(self, path: str, **_: Any) -> dict[str, Any]:
        assert path == "/api/v1/namespaces/team-a", path
        return {"metadata": {"name": "team-a", "uid": NAMESPACE_UID}}


class _Server:
    """The managed server's ``lock_out``, recorded; it fails while ``busy``."""

    def __init__(self, busy: bool = False) -> None:
        self.busy = busy
        self.locked_out: list[dict[str, str]] = []

    async def lock_out(self, **names: str) -> bool:
        if self.busy:
            raise ManagedDatabaseError("DatabaseBusy", "another operation held it")
        self.locked_out.append(names)
        return True


def _env(*, named_in_status: bool) -> Environment:
    status = {"database": {"secretName": "shop-database", "name": "env_db", "ready": True}}
    return Environment.model_validate(
        {
            "metadata": {"name": "shop", "namespace": "team-a", "uid": "uid-1", "generation": 2},
            "spec": {"tier": "development", "image": "shop:1.0", "database": {"enabled": False}},
            "status": status if named_in_status else {},
        }
    )


def _provisioner(server: _Server) -> DatabaseProvisioner:
    return DatabaseProvisioner(
        kube=cast(KubeClient, _Kube()),
        postgres=cast(ManagedPostgres, server),
        children=ChildMemory(),
    )


async def test_the_first_pass_after_disabling_locks_the_role_out() -> None:
    server = _Server()
    env = _env(named_in_status=True)

    step = await _provisioner(server).step(env, Owner.of(env))

    assert step is None
    assert server.locked_out == [
        {"namespace": "team-a", "namespace_uid": NAMESPACE_UID, "environment": "shop"}
    ]


async def test_a_database_disabled_earlier_is_locked_out_once_per_process() -> None:
    """Disabled before this operator ran (by one that did not lock roles out, say): the
    status no longer names it, and the role may still log in with the old password."""
    server = _Server()
    env = _env(named_in_status=False)
    provisioner = _provisioner(server)

    assert await provisioner.step(env, Owner.of(env)) is None
    assert await provisioner.step(env, Owner.of(env)) is None
    assert server.locked_out == [
        {"namespace": "team-a", "namespace_uid": NAMESPACE_UID, "environment": "shop"}
    ]
    # A process of its own (a restarted operator) does it once again.
    assert await _provisioner(server).step(env, Owner.of(env)) is None
    assert len(server.locked_out) == 2


async def test_an_earlier_lock_out_that_fails_reports_nothing_and_is_tried_again() -> None:
    server = _Server(busy=True)
    env = _env(named_in_status=False)
    provisioner = _provisioner(server)

    assert await provisioner.step(env, Owner.of(env)) is None  # the status is not touched
    server.busy = False
    assert await provisioner.step(env, Owner.of(env)) is None
    assert len(server.locked_out) == 1


async def test_after_the_first_pass_locked_it_out_no_pass_does_again() -> None:
    server = _Server()
    provisioner = _provisioner(server)
    just_disabled = _env(named_in_status=True)
    await provisioner.step(just_disabled, Owner.of(just_disabled))
    # The next pass: the status no longer names the database.
    later = _env(named_in_status=False)
    assert await provisioner.step(later, Owner.of(later)) is None
    assert len(server.locked_out) == 1


async def test_a_failed_lock_out_keeps_the_step_not_ready_and_retried() -> None:
    env = _env(named_in_status=True)

    step = await _provisioner(_Server(busy=True)).step(env, Owner.of(env))

    assert step is not None
    assert step.retryable
    verdict = step.report.verdict
    assert (verdict.status, verdict.reason) == (ConditionStatus.FALSE, "DatabaseBusy")
    assert verdict.message == (
        "The database is disabled, but its role is not locked out yet: another operation held it"
    )
    assert step.secret is None
