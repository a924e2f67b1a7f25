"""A steady state costs nothing: environments with nothing to change cause no apiserver
write, no new PostgreSQL session and no INFO log line, however often they are looked at.

An operator of its own watches one namespace and reaches the managed server as an admin
of its own, through a maintenance database of its own, so that the apiserver's audit
log (by namespace and user agent) and ``pg_stat_database.sessions`` (by database) count
only what this operator does.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import yaml

from dockyard.operator.database import database_identity
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl, start_operator, stop_operator, wait_for

# The platform database is migrated: the operator logs its events there.
pytestmark = pytest.mark.usefixtures("crds_installed", "platform_migrated")

INTERVAL = 3.0
"""The operator's drift interval in this test, in seconds."""
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})
WITHOUT_DATABASE = ("web", "worker", "docs")
WITH_DATABASE = ("shop", "billing")


def _sql(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


def _dsn(base: str, *, user: str, password: str, database: str) -> str:
    parts = urlsplit(base)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}", path=f"/{database}"))


@pytest.fixture
def own_admin(testbed_state: State) -> Iterator[str]:
    """An admin role and maintenance database of this test's own; its admin DSN."""
    admin = testbed_state.managed_postgres_url
    name = f"steady_{uuid.uuid4().hex[:8]}"
    password = uuid.uuid4().hex
    _sql(admin, f"CREATE ROLE {name} LOGIN CREATEDB CREATEROLE PASSWORD '{password}'")
    _sql(admin, f"CREATE DATABASE {name} OWNER {name}")
    yield _dsn(admin, user=name, password=password, database=name)
    _sql(admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    for (role,) in _sql(admin, "SELECT rolname FROM pg_roles WHERE rolname = $1", name):
        _sql(admin, f"DROP OWNED BY {role}")
        _sql(admin, f"DROP ROLE {role}")


@pytest.fixture
def own_operator(
    kubectl: Kubectl,
    unwatched_namespace: str,
    own_admin: str,
    testbed_env: dict[str, str],
    tmp_path: Path,
) -> Iterator[Path]:
    """An operator of its own for ``unwatched_namespace``; the path of its log."""
    log = tmp_path / "operator.log"
    env = {
        **testbed_env,
        "DOCKYARD_MANAGED_POSTGRES_URL": own_admin,
        "DOCKYARD_RECONCILE_INTERVAL": str(INTERVAL),
        "DOCKYARD_LOG_FORMAT": "json",
        "DOCKYARD_LOG_LEVEL": "INFO",
    }
    proc = start_operator(unwatched_namespace, env, log)
    yield log
    # Its environments (and their databases) go while it runs.
    kubectl(
        "delete", "environments", "--all", "-n", unwatched_namespace, "--timeout=90s", check=False
    )
    stop_operator(proc)


def _apply(kubectl: Kubectl, namespace: str, name: str, *, database: bool) -> None:
    manifest = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": name},
        "spec": {
            "tier": "development",
            "image": "registry.example.com/shop/api:1.4.2",
            "database": {"enabled": database},
        },
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def _all_ready(kubectl: Kubectl, namespace: str) -> bool:
    listing = json.loads(kubectl("get", "environments", "-n", namespace, "-o", "json").stdout)
    phases = [(item.get("status") or {}).get("phase") for item in listing["items"]]
    return len(phases) == len(WITHOUT_DATABASE) + len(WITH_DATABASE) and set(phases) == {"Ready"}


class AuditLog:
    """The test bed apiserver's audit log, read from a mark onwards."""

    def __init__(self, state: State) -> None:
        self.path = Path(state.directory) / "logs" / "audit.log"
        self.mark = 0
        self.inode = 0

    def set_mark(self) -> None:
        stat = self.path.stat()
        self.mark, self.inode = stat.st_size, stat.st_ino

    def since_mark(self, namespace: str) -> list[dict[str, Any]]:
        lines: list[str] = []
        if self.path.stat().st_ino != self.inode:
            # Rotated meanwhile (--audit-log-maxsize): the rest of the marked file is the
            # newest backup the apiserver kept, and the current file follows it.
            rotated = max(self.path.parent.glob("audit-*.log"), key=lambda p: p.stat().st_mtime)
            with rotated.open("rb") as old:
                old.seek(self.mark)
                lines += old.read().decode().splitlines()
            self.mark = 0
        with self.path.open("rb") as log:
            log.seek(self.mark)
            lines += log.read().decode().splitlines()
        events = [json.loads(line) for line in lines if line.strip()]
        return [
            e
            for e in events
            if (e.get("objectRef") or {}).get("namespace") == namespace
            and e.get("userAgent", "").startswith(("dockyard", "kopf"))
        ]


def _sessions(dsn: str, databases: list[str]) -> int:
    """Sessions ever established to ``databases`` (PostgreSQL 14+)."""
    rows = _sql(
        dsn,
        "SELECT COALESCE(sum(sessions), 0)::bigint AS n"
        " FROM pg_stat_database WHERE datname = ANY($1::text[])",
        databases,
    )
    return int(rows[0]["n"])


def _log_lines(log: Path, start: int) -> list[dict[str, Any]]:
    with log.open("rb") as out:
        out.seek(start)
        lines = out.read().decode(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def test_environments_with_nothing_to_change_cost_no_write_no_session_and_no_log_line(
    kubectl: Kubectl,
    unwatched_namespace: str,
    own_operator: Path,
    own_admin: str,
    testbed_state: State,
) -> None:
    for name in WITHOUT_DATABASE:
        _apply(kubectl, unwatched_namespace, name, database=False)
    for name in WITH_DATABASE:
        _apply(kubectl, unwatched_namespace, name, database=True)
    wait_for(lambda: _all_ready(kubectl, unwatched_namespace), timeout=120)
    # Past the passes that follow becoming Ready (the Deployments' status events, the
    # first drift-repair tick one interval after creation) and Kopf's bookkeeping.
    time.sleep(2 * INTERVAL)

    maintenance = urlsplit(own_admin).path.lstrip("/")
    databases = [
        maintenance,
        *(database_identity(unwatched_namespace, name)[0] for name in WITH_DATABASE),
    ]
    audit = AuditLog(testbed_state)
    audit.set_mark()
    sessions_before = _sessions(testbed_state.managed_postgres_url, databases)
    log_start = own_operator.stat().st_size

    time.sleep(2 * INTERVAL + 1)

    # pg_stat_database is flushed by each backend within a second of its activity.
    time.sleep(1.5)
    sessions_after = _sessions(testbed_state.managed_postgres_url, databases)
    events = audit.since_mark(unwatched_namespace)
    writes = [e for e in events if e["verb"] in WRITE_VERBS]
    assert writes == [], [
        (e["verb"], e["objectRef"].get("resource"), e["objectRef"].get("name"), e["userAgent"])
        for e in writes
    ]
    assert sessions_after == sessions_before
    # The passes did run: every environment was read by each drift-repair tick.
    reads = [
        e for e in events if e["verb"] == "get" and e["objectRef"].get("resource") == "environments"
    ]
    assert {e["objectRef"]["name"] for e in reads} == {*WITHOUT_DATABASE, *WITH_DATABASE}
    assert len(reads) >= 2 * len({*WITHOUT_DATABASE, *WITH_DATABASE})
    # An idle operator is quiet: nothing at INFO or above.
    loud = [
        line
        for line in _log_lines(own_operator, log_start)
        if line.get("level", "").upper() not in ("DEBUG", "")
    ]
    assert loud == []
