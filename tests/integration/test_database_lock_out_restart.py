"""A database disabled before the operator locked roles out is locked out by the next
operator process: its status no longer names it, yet its old password still worked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest

from dockyard.operator.database import database_identity
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl, release_and_stop, stop_operator, wait_for
from tests.integration.test_backup_operator import (
    _environment,
    _get,
    _owner_dsn,
    _run_sql,
    _start_operator,
    own_namespace,
)

pytestmark = pytest.mark.usefixtures("crds_installed")
__all__ = ["own_namespace"]


def _logs_in(dsn: str) -> bool:
    async def attempt() -> bool:
        try:
            conn = await asyncpg.connect(dsn, timeout=10)
        except asyncpg.InvalidAuthorizationSpecificationError:
            return False
        await conn.close()
        return True

    return asyncio.run(attempt())


def test_a_role_left_able_to_log_in_is_locked_out_when_the_operator_starts_again(
    kubectl: Kubectl,
    testbed_state: State,
    testbed_env: dict[str, str],
    own_namespace: str,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    log = tmp_path / "operator.log"
    operator = _start_operator(testbed_env, own_namespace, log, backup_root)
    try:
        _environment(kubectl, testbed_state, own_namespace)
        dsn = _owner_dsn(kubectl, own_namespace, "shop")
        password = unquote(urlsplit(dsn).password or "")
        assert password
        disable = json.dumps({"spec": {"database": {"enabled": False}}})
        kubectl("patch", "environment", "shop", "-n", own_namespace, "--type=merge", "-p", disable)

        def released() -> bool:
            env = _get(kubectl, own_namespace, "environment", "shop") or {}
            return "database" not in (env.get("status") or {})

        assert wait_for(released, timeout=60)
        assert not _logs_in(dsn)

        # What an operator that did not lock roles out left behind: the role logs in
        # with its old password, and the status names no database.
        stop_operator(operator)
        _, role = database_identity(own_namespace, "shop")
        literal = password.replace("'", "''")
        relogin = f"ALTER ROLE \"{role}\" WITH LOGIN PASSWORD '{literal}'"
        _run_sql(testbed_state.managed_postgres_url, relogin)
        assert _logs_in(dsn)

        operator = _start_operator(testbed_env, own_namespace, log, backup_root)
        assert wait_for(lambda: not _logs_in(dsn) or None, timeout=60)
        env = _get(kubectl, own_namespace, "environment", "shop") or {}
        assert "database" not in (env.get("status") or {})
    finally:
        release_and_stop(kubectl, own_namespace, "environments", operator)
