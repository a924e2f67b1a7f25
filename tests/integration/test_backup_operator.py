"""The operator runs Backups and BackupSchedules on the real control plane and PostgreSQL:
inline backups of a seeded environment database, the catalog, schedules (strict cron,
run-now, retention that keeps the newest verified backup), crash safety, the artifact
finalizer, and the Job a Job-mode backup creates."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import secrets
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg
import pytest
import yaml

from dockyard.core import migrations
from dockyard.core.names import label_value
from dockyard.operator.database import database_identity
from dockyard.operator.runs import jobs
from dockyard.operator.runs.context import with_database
from dockyard.testbed import faults
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import (
    SESSION_ID,
    Kubectl,
    backup_settings,
    get_json,
    release_and_stop,
    start_operator,
    stop_operator,
    wait_for,
)

pytestmark = pytest.mark.usefixtures("operator_process")

PINNED = "registry.example.com/shop/api:1.4.2"
# An environment whose database is empty: its artifact is a few KiB.
TINY = {
    "apiVersion": "dockyard.io/v1alpha1",
    "kind": "Environment",
    "metadata": {"name": "tiny"},
    "spec": {"tier": "development", "image": PINNED, "database": {}},
}
# Four tables, 30k + 120k + 40k + 0 rows.
SEED_SQL = """
CREATE TABLE customers (id bigint PRIMARY KEY, email text NOT NULL);
INSERT INTO customers SELECT g, 'c' || g || '@example.com' FROM generate_series(1, 30000) g;
CREATE TABLE orders (id bigint PRIMARY KEY, customer_id bigint REFERENCES customers,
                     total numeric(12, 2));
INSERT INTO orders SELECT g, 1 + g % 30000, (g % 10000) / 100.0
FROM generate_series(1, 120000) g;
CREATE SCHEMA audit;
CREATE TABLE audit.log (at timestamptz NOT NULL, line text);
INSERT INTO audit.log SELECT now() - g * interval '1 s', md5(g::text)
FROM generate_series(1, 40000) g;
CREATE TABLE empty_one (id int);
"""
EXPECTED_ROWS = {
    "public.customers": 30000,
    "public.orders": 120000,
    "audit.log": 40000,
    "public.empty_one": 0,
}


def _run_sql(dsn: str, sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def _fetch(dsn: str, query: str, *args: object) -> list[Any]:
    async def go() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(go())


@pytest.fixture(scope="module", autouse=True)
def migrated(testbed_state: State) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(testbed_state.database_url)
        try:
            await migrations.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(go())


def _get(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    return dict(json.loads(result.stdout))


def _apply(kubectl: Kubectl, namespace: str, manifest: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def _environment(
    kubectl: Kubectl, state: State, namespace: str, name: str = "shop", *, owner_seeds: bool = True
) -> str:
    """A development environment with a seeded database; returns the database's admin DSN.

    Its own role seeds it, through its database Secret, as its workload would (and so
    owns the tables); with ``owner_seeds=False`` the admin does, and owns them."""
    _apply(
        kubectl,
        namespace,
        {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": name},
            "spec": {
                "tier": "development",
                "image": PINNED,
                "database": {"deletionPolicy": "Delete"},
            },
        },
    )

    def ready() -> bool:
        env = _get(kubectl, namespace, "environment", name) or {}
        return bool(((env.get("status") or {}).get("database") or {}).get("ready"))

    wait_for(ready, timeout=90)
    database, _ = database_identity(namespace, name)
    dsn = with_database(state.managed_postgres_url, database)
    _run_sql(_owner_dsn(kubectl, namespace, name) if owner_seeds else dsn, SEED_SQL)
    return dsn


def _owner_dsn(kubectl: Kubectl, namespace: str, environment: str) -> str:
    secret = _get(kubectl, namespace, "secret", f"{environment}-database") or {}
    return base64.b64decode(secret["data"]["uri"]).decode()


def _key_secret(kubectl: Kubectl, namespace: str, name: str = "backup-key") -> None:
    kubectl(
        "create",
        "secret",
        "generic",
        name,
        "-n",
        namespace,
        f"--from-literal=key={secrets.token_hex(32)}",
    )


def _storage(root: Path, namespace: str) -> dict[str, Any]:
    return {"filesystem": {"path": str(root / namespace)}}


def _backup(
    namespace: str, name: str, root: Path, environment: str = "shop", **extra: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "environmentRef": {"name": environment},
            "storage": _storage(root, namespace),
            "encryption": {"keySecretRef": {"name": "backup-key", "key": "key"}},
            **extra,
        },
    }


def _wait_phase(
    kubectl: Kubectl, namespace: str, name: str, phase: str, timeout: float = 90
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = ((_get(kubectl, namespace, "backup", name) or {}).get("status")) or {}
        return status if status.get("phase") == phase else None

    found = wait_for(reached, timeout=timeout)
    assert isinstance(found, dict)
    return found


def _artifact_path(location: str) -> Path:
    return Path(unquote(urlsplit(location).path))


def _events(kubectl: Kubectl, namespace: str, reason: str) -> list[str]:
    events = json.loads(
        kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"reason={reason}", "-o", "json"
        ).stdout
    )
    return [str(e.get("message", "")) for e in events["items"]]


def test_a_backup_of_a_seeded_database_completes_with_checksum_manifest_and_catalog_row(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    _apply(kubectl, namespace, _backup(namespace, "first", backup_root))

    status = _wait_phase(kubectl, namespace, "first", "Completed")

    artifact = _artifact_path(status["location"])
    assert artifact.is_relative_to(backup_root / namespace)
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == status["sha256"]
    assert artifact.stat().st_size == status["size"]
    rows = {t["name"]: t["rows"] for t in status["manifest"]["tables"]}
    assert rows == EXPECTED_ROWS
    assert status["attempts"] == 1
    assert status["keyId"].startswith("k-")
    # Recorded by the operator: the production guard reads it (production-guard-policy).
    assert status["environmentTier"] == "development"
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("True", "Completed")
    assert _events(kubectl, namespace, "Completed")
    [row] = _fetch(
        testbed_state.database_url,
        "SELECT phase, sha256, size, manifest FROM backup_catalog WHERE namespace = $1"
        " AND name = $2",
        namespace,
        "first",
    )
    assert (row["phase"], row["sha256"], row["size"]) == (
        "Completed",
        status["sha256"],
        status["size"],
    )
    assert json.loads(row["manifest"]) == EXPECTED_ROWS
    # Its event, once the Completed status was stored: the same uid and size.
    [event] = wait_for(lambda: _logged(testbed_state, namespace, "backups", "first"), timeout=30)  # type: ignore[misc]
    backup: Any = get_json(kubectl, "backup", "first", "-n", namespace)
    uid = backup["metadata"]["uid"]
    assert event["type"] == "backup.completed"
    assert event["data"]["object"]["uid"] == uid
    assert event["data"]["sizeBytes"] == status["size"]


def _logged(state: State, namespace: str, resource: str, name: str) -> list[dict[str, Any]]:
    """The bodies of the logged events about one object, in log order."""
    rows = _fetch(
        state.database_url,
        "SELECT body::text FROM events WHERE resource = $1 AND namespace = $2 AND name = $3"
        " ORDER BY seq",
        resource,
        namespace,
        name,
    )
    return [json.loads(row["body"]) for row in rows]


def test_storage_outside_the_backup_root_fails_without_retrying(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _key_secret(kubectl, namespace)
    manifest = _backup(namespace, "escape", backup_root)
    manifest["spec"]["storage"] = {"filesystem": {"path": "/etc/dockyard-escape"}}
    _apply(kubectl, namespace, manifest)

    status = _wait_phase(kubectl, namespace, "escape", "Failed", timeout=30)

    assert "outside the operator's backup root" in status["message"]
    assert status["attempts"] == 1
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "StorageRefused"


def test_deleting_a_backup_deletes_its_artifact(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    _apply(kubectl, namespace, _backup(namespace, "doomed", backup_root))
    artifact = _artifact_path(_wait_phase(kubectl, namespace, "doomed", "Completed")["location"])
    assert artifact.exists()

    kubectl("delete", "backup", "doomed", "-n", namespace, "--timeout=60s")

    assert not artifact.exists()
    [row] = _fetch(
        testbed_state.database_url,
        "SELECT deleted_at FROM backup_catalog WHERE namespace = $1 AND name = $2",
        namespace,
        "doomed",
    )
    assert row["deleted_at"] is not None


def _large_environment(kubectl: Kubectl, state: State, namespace: str) -> str:
    """The environment "shop" with 1.5 million orders, so that a run of it (a dump, a
    restore) lasts long enough to be held, deleted or killed mid-way, and the namespace's
    backup key; the environment's DSN."""
    source = _environment(kubectl, state, namespace)
    _run_sql(source, "INSERT INTO orders SELECT g, 1, 1 FROM generate_series(120001, 1500000) g")
    _key_secret(kubectl, namespace)
    return source


def _tool_pids(tool: str, database: str) -> list[int]:
    """The pids of the ``tool`` processes (pg_dump, pg_restore) connected to ``database``
    (on this machine: the session's operator runs inline runs as its own children)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0") if entry.name.isdigit() else []
        except OSError:
            continue  # gone meanwhile
        if argv and argv[0].endswith(tool.encode()) and any(database.encode() in a for a in argv):
            found.append(int(entry.name))
    return sorted(found)


@contextlib.contextmanager
def held(tool: str, database: str) -> Iterator[list[int]]:
    """The ``tool`` processes of ``database`` stopped (SIGSTOP) once one has started, so
    that the run is surely still going; let go (SIGCONT) at the end of the block."""
    stopped: list[int] = []
    try:
        wait_for(lambda: _tool_pids(tool, database), timeout=60, interval=0.02)
        for _ in range(2):  # the workers a parallel pg_restore forked meanwhile, too
            for pid in _tool_pids(tool, database):
                with contextlib.suppress(ProcessLookupError):  # a worker that just exited
                    os.kill(pid, signal.SIGSTOP)
                    stopped.append(pid)
        yield stopped
    finally:
        for pid in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@contextlib.contextmanager
def _held_backup(
    kubectl: Kubectl, state: State, namespace: str, root: Path, name: str, **extra: Any
) -> Iterator[list[int]]:
    """A Backup ``name`` of the large environment (``_large_environment``), made with
    ``extra`` and held mid-dump (``held``) for the block."""
    _large_environment(kubectl, state, namespace)
    database, _ = database_identity(namespace, "shop")
    _apply(kubectl, namespace, _backup(namespace, name, root, **extra))
    with held("pg_dump", database) as dumps:
        yield dumps


def test_a_backup_deleted_mid_run_is_stopped_and_leaves_no_artifact(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    # Kopf hands the deletion to the Backup's finalizer only once the run holding its
    # handler has ended; the run itself sees the Backup being deleted and stops.
    with _held_backup(kubectl, testbed_state, namespace, backup_root, "doomed") as dumps:
        kubectl("delete", "backup", "doomed", "-n", namespace, "--wait=false")
        # Gone while its pg_dump is still held: the run did not wait for it.
        wait_for(lambda: _get(kubectl, namespace, "backup", "doomed") is None, timeout=45)
        assert not any(Path(f"/proc/{pid}").exists() for pid in dumps), "pg_dump left running"

    left = [p for p in (backup_root / namespace).rglob("*") if p.is_file()]
    assert left == []


def _reviewed_plan(backup: str) -> dict[str, Any]:
    """A Restore of ``backup`` left as a dry run: a reviewed plan not carried out yet."""
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Restore",
        "metadata": {"name": "reviewed"},
        "spec": {"source": {"backupRef": {"name": backup}}, "dryRun": True},
    }


def test_a_ttl_deletes_the_backup_and_its_artifact_but_keeps_the_newest_verified_one(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    _apply(kubectl, namespace, _backup(namespace, "proven", backup_root, ttl="3s"))
    proven = _wait_phase(kubectl, namespace, "proven", "Completed")
    # What a passing restore drill writes.
    verified = {"drill": "nightly", "at": proven["completedAt"]}
    kubectl(
        "patch",
        "backup",
        "proven",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"verified": verified}}),
    )
    # Past its ttl before "brief", but a reviewed restore plan (a dry run) takes it.
    _apply(kubectl, namespace, _backup(namespace, "planned", backup_root, ttl="3s"))
    _wait_phase(kubectl, namespace, "planned", "Completed")
    _apply(
        kubectl,
        namespace,
        _reviewed_plan("planned"),
    )
    _apply(kubectl, namespace, _backup(namespace, "brief", backup_root, ttl="3s"))
    brief = _wait_phase(kubectl, namespace, "brief", "Completed")
    artifact = _artifact_path(brief["location"])

    def expires_at() -> str | None:
        status = (_get(kubectl, namespace, "backup", "brief") or {}).get("status") or {}
        return status.get("expiresAt")

    wait_for(expires_at, timeout=30)
    wait_for(lambda: _get(kubectl, namespace, "backup", "brief") is None, timeout=60)
    assert not artifact.exists()
    assert any("ttl passed" in m for m in _events(kubectl, namespace, "Expired"))
    # The operator's decision is in the audit trail, with its reason.
    [audited] = _fetch(
        testbed_state.database_url,
        "SELECT actor, action, diff::text FROM audit_events WHERE source = 'operator'"
        " AND namespace = $1 AND name = $2",
        namespace,
        "brief",
    )
    assert audited["action"] == "DELETE backups (ttl)"
    assert "ttl passed" in json.loads(audited["diff"])["reason"]
    assert audited["actor"]  # the operator's identity, from its SelfSubjectReview
    # Past its ttl too, but the one backup a drill proved restorable stays.
    kept = _get(kubectl, namespace, "backup", "proven")
    assert kept is not None
    assert kept["status"]["expiresAt"]
    assert _artifact_path(proven["location"]).exists()
    # The planned one stays while its Restore is there, and goes once it is not.
    assert _get(kubectl, namespace, "backup", "planned") is not None
    kubectl("delete", "restore", "reviewed", "-n", namespace)
    wait_for(lambda: _get(kubectl, namespace, "backup", "planned") is None, timeout=60)


def _schedule(namespace: str, root: Path, schedule: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "BackupSchedule",
        "metadata": {"name": "nightly", "namespace": namespace},
        "spec": {
            "environmentRef": {"name": "shop"},
            "schedule": schedule,
            "template": {
                "storage": _storage(root, namespace),
                "encryption": {"keySecretRef": {"name": "backup-key", "key": "key"}},
            },
            **extra,
        },
    }


def _ready_condition(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    schedule = _get(kubectl, namespace, "backupschedule", "nightly") or {}
    conditions = (schedule.get("status") or {}).get("conditions") or ()
    return next((c for c in conditions if c["type"] == "Ready"), None)


def test_a_six_field_cron_is_refused_and_an_impossible_one_reported_in_ready(
    kubectl: Kubectl, namespace: str, backup_root: Path
) -> None:
    refused = kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=yaml.safe_dump(_schedule(namespace, backup_root, "0 0 2 * * *")),
        check=False,
    )
    assert refused.returncode != 0
    assert "expected 5 fields" in refused.stderr

    _apply(kubectl, namespace, _schedule(namespace, backup_root, "0 0 30 2 *"))

    condition = wait_for(lambda: _ready_condition(kubectl, namespace), timeout=30)
    assert isinstance(condition, dict)
    assert (condition["status"], condition["reason"]) == ("False", "InvalidSchedule")
    assert "never happens" in condition["message"]
    schedule = _get(kubectl, namespace, "backupschedule", "nightly") or {}
    assert "nextScheduleTime" not in (schedule.get("status") or {})


def _run_now(kubectl: Kubectl, namespace: str, *earlier: str) -> str:
    """Run the schedule now and wait for the new Completed backup (not a count: retention
    may delete an earlier one as soon as this one completes)."""
    kubectl("annotate", "backupschedule", "nightly", "-n", namespace, "dockyard.io/run-now=1")

    def completed() -> list[str] | None:
        items = json.loads(
            kubectl(
                "get",
                "backups",
                "-n",
                namespace,
                "-l",
                "dockyard.io/backup-schedule=nightly",
                "-o",
                "json",
            ).stdout
        )["items"]
        names = sorted(
            b["metadata"]["name"]
            for b in items
            if (b.get("status") or {}).get("phase") == "Completed"
            and b["metadata"]["name"] not in earlier
        )
        return names or None

    names = wait_for(completed, timeout=180)
    assert isinstance(names, list)
    annotations = (_get(kubectl, namespace, "backupschedule", "nightly") or {})["metadata"].get(
        "annotations", {}
    )
    assert "dockyard.io/run-now" not in annotations
    return str(names[-1])


def test_run_now_creates_a_backup_and_retention_keeps_the_newest_verified(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    # A Backup made by hand that carries the schedule's label (as anyone who may edit
    # Backups can make one): the schedule did not make it, so its retention keeps it.
    by_hand = _backup(namespace, "by-hand", backup_root)
    by_hand["metadata"]["labels"] = {"dockyard.io/backup-schedule": "nightly"}
    _apply(kubectl, namespace, by_hand)
    _wait_phase(kubectl, namespace, "by-hand", "Completed")
    # Yearly, so only run-now runs; keep the newest one.
    _apply(
        kubectl,
        namespace,
        _schedule(namespace, backup_root, "@yearly", retention={"keepLast": 1}),
    )
    condition = wait_for(lambda: _ready_condition(kubectl, namespace), timeout=30)
    assert isinstance(condition, dict)
    assert condition["status"] == "True"
    schedule = _get(kubectl, namespace, "backupschedule", "nightly") or {}
    assert schedule["status"]["nextScheduleTime"]

    first = _run_now(kubectl, namespace, "by-hand")
    first_artifact = _artifact_path(
        ((_get(kubectl, namespace, "backup", first) or {})["status"])["location"]
    )
    kubectl(
        "patch",
        "backup",
        first,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {"status": {"verified": {"drill": "weekly-drill", "at": "2030-01-01T00:00:00Z"}}}
        ),
    )
    time.sleep(1.1)  # run-now names have one-second resolution
    second = _run_now(kubectl, namespace, "by-hand", first)
    time.sleep(1.1)
    third = _run_now(kubectl, namespace, "by-hand", first, second)

    # keepLast 1 keeps the third; the first stays as the newest verified; the second goes.
    wait_for(lambda: _get(kubectl, namespace, "backup", second) is None, timeout=60)
    assert _get(kubectl, namespace, "backup", first) is not None
    assert _get(kubectl, namespace, "backup", third) is not None
    assert _get(kubectl, namespace, "backup", "by-hand") is not None
    assert first_artifact.exists()
    assert _events(kubectl, namespace, "RetentionApplied")


def test_retention_keeps_the_backup_a_restore_not_finished_takes(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    _apply(
        kubectl,
        namespace,
        _schedule(namespace, backup_root, "@yearly", retention={"keepLast": 1}),
    )
    first = _run_now(kubectl, namespace)
    # A reviewed plan not carried out yet: a dry run of the first backup.
    _apply(
        kubectl,
        namespace,
        _reviewed_plan(first),
    )

    def planned() -> bool:
        restore = _get(kubectl, namespace, "restore", "reviewed") or {}
        return bool(((restore.get("status") or {}).get("plan") or {}).get("backup") == first)

    wait_for(planned, timeout=60)
    time.sleep(1.1)  # run-now names have one-second resolution
    second = _run_now(kubectl, namespace, first)
    time.sleep(1.1)
    third = _run_now(kubectl, namespace, first, second)

    # keepLast 1 keeps the third, and retention deletes the second; the first stays, as
    # the plan's backup, until the Restore is gone.
    wait_for(lambda: _get(kubectl, namespace, "backup", second) is None, timeout=60)
    assert _get(kubectl, namespace, "backup", first) is not None
    assert _get(kubectl, namespace, "backup", third) is not None
    kubectl("delete", "restore", "reviewed", "-n", namespace)
    kubectl("annotate", "backupschedule", "nightly", "-n", namespace, "dockyard.io/touch=1")
    wait_for(lambda: _get(kubectl, namespace, "backup", first) is None, timeout=60)


def test_a_job_mode_backup_and_a_schedule_named_past_63_characters_complete(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    """Names go into label values, which hold 63 characters: a Backup's runner Job carries
    its Backup's name, a schedule's Backups their schedule's, which the schedule finds
    them by. A longer name made those writes, and that list, invalid."""
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    name = "a-name-longer-than-any-label-value-may-be-" + "x" * 40
    _apply(kubectl, namespace, _backup(namespace, name, backup_root, runner="Job"))
    schedule = _schedule(namespace, backup_root, "@yearly")
    schedule["metadata"]["name"] = name  # another kind: the same name is free

    _apply(kubectl, namespace, schedule)

    status = _wait_phase(kubectl, namespace, name, "Completed", timeout=120)
    assert status["attempts"] == 1
    selector = f"dockyard.io/backup={label_value(name)}"
    [job] = json.loads(
        kubectl("get", "jobs", "-n", namespace, "-l", selector, "-o", "json").stdout
    )["items"]
    assert job["metadata"]["name"] == jobs.job_name(name, 1)
    assert len(job["metadata"]["name"]) <= 63

    def ready() -> bool:
        found = _get(kubectl, namespace, "backupschedule", name) or {}
        conditions = (found.get("status") or {}).get("conditions") or ()
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for(ready, timeout=30)
    kubectl("annotate", "backupschedule", name, "-n", namespace, "dockyard.io/run-now=1")
    selector = f"dockyard.io/backup-schedule={label_value(name)}"

    def completed() -> list[str] | None:
        listing = kubectl("get", "backups", "-n", namespace, "-l", selector, "-o", "json")
        items = json.loads(listing.stdout)["items"]
        done = [b for b in items if (b.get("status") or {}).get("phase") == "Completed"]
        return [b["metadata"]["name"] for b in done] or None

    [made] = wait_for(completed, timeout=120)  # type: ignore[misc]
    assert made.startswith(f"{name}-")


def test_a_job_mode_backup_creates_a_least_privilege_runner_job(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _key_secret(kubectl, namespace)
    _apply(kubectl, namespace, _backup(namespace, "in-job", backup_root, runner="Job"))

    job = wait_for(lambda: _get(kubectl, namespace, "job", "backup-in-job-1"), timeout=30)
    assert isinstance(job, dict)
    pod = job["spec"]["template"]["spec"]
    uid = (_get(kubectl, namespace, "backup", "in-job") or {})["metadata"]["uid"]
    account = f"backup-runner-{uid}"
    assert pod["serviceAccountName"] == account
    [container] = pod["containers"]
    assert container["args"][0] == "backup-run"
    dsn = next(e for e in container["env"] if e["name"] == "DOCKYARD_BACKUP_SOURCE_DSN")
    assert dsn["valueFrom"]["secretKeyRef"] == {"name": "shop-database", "key": "uri"}
    # Secrets by reference only; in plain text, the log format and the tracing.
    assert all("value" not in e or e["name"] in jobs.PLAIN_VARIABLES for e in container["env"])
    key_volume = next(v for v in pod["volumes"] if v["name"] == "backup-key")
    assert key_volume["secret"]["secretName"] == "backup-key"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Backup"
    role = _get(kubectl, namespace, "role", account)
    assert role is not None
    assert role["rules"] == [
        {
            "apiGroups": ["dockyard.io"],
            "resources": ["backups/status"],
            "resourceNames": ["in-job"],
            "verbs": ["patch"],
        }
    ]
    assert role["metadata"]["ownerReferences"][0]["uid"] == uid
    status = _wait_phase(kubectl, namespace, "in-job", "Running", timeout=30)
    assert status["attempts"] == 1


def _runner_may(kubectl: Kubectl, namespace: str, account: str, backup: str) -> bool:
    """Whether ``account`` may patch the status of Backup ``backup`` (asked as it)."""
    answer = kubectl(
        "auth", "can-i", "patch", f"backups.dockyard.io/{backup}", "--subresource=status",
        "-n", namespace, f"--as=system:serviceaccount:{namespace}:{account}", check=False,
    )  # fmt: skip
    return answer.stdout.strip() == "yes"


def test_a_backup_runner_may_report_to_its_own_backup_and_to_no_other(
    kubectl: Kubectl, namespace: str, backup_root: Path
) -> None:
    """The attack: a compromised runner of one Backup writes another Backup's status
    (say, a forged sha256 and table manifest). Also the grant earlier operators made
    to the shared runner account, on every Backup, is withdrawn."""
    rbac = "rbac.authorization.k8s.io/v1"
    shared = "dockyard-backup-runner"
    meta = {"name": shared, "namespace": namespace}
    old_grant = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {
            "apiVersion": rbac,
            "kind": "Role",
            "metadata": meta,
            "rules": [
                {"apiGroups": ["dockyard.io"], "resources": ["backups/status"], "verbs": ["patch"]}
            ],
        },
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": shared},
            "subjects": [{"kind": "ServiceAccount", "name": shared, "namespace": namespace}],
        },
    ]
    for manifest in old_grant:
        kubectl("apply", "-f", "-", input=json.dumps(manifest))
    assert _runner_may(kubectl, namespace, shared, "other")
    _key_secret(kubectl, namespace)

    # Its Job is started (the identity is applied first); it reporting through that
    # identity is test_a_job_mode_backup_is_dumped_by_its_runner_job_and_completes.
    _apply(kubectl, namespace, _backup(namespace, "by-job", backup_root, runner="Job"))
    _wait_phase(kubectl, namespace, "by-job", "Running", timeout=30)

    uid = (_get(kubectl, namespace, "backup", "by-job") or {})["metadata"]["uid"]
    account = f"backup-runner-{uid}"
    assert _runner_may(kubectl, namespace, account, "by-job")
    assert not _runner_may(kubectl, namespace, account, "other")
    assert not _runner_may(kubectl, namespace, shared, "other")
    assert (_get(kubectl, namespace, "role", shared) or {}).get("rules") in (None, [])


def test_a_runner_job_the_cluster_refuses_costs_no_attempt(
    kubectl: Kubectl, namespace: str, backup_root: Path
) -> None:
    """The Backup is Running before its Job is made (its runner may report only then).
    When the Job is refused (here a quota of no Jobs), it is not left Running without a
    Job, where the next pass would count a failed attempt ("runner Job is gone") and
    three such passes would fail it."""
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-jobs", "namespace": namespace},
        "spec": {"hard": {"count/jobs.batch": "0"}},
    }
    _apply(kubectl, namespace, quota)
    _key_secret(kubectl, namespace)
    _apply(kubectl, namespace, _backup(namespace, "refused", backup_root, runner="Job"))

    def refused() -> bool:
        # Kopf keeps the handler's last error (the quota's refusal) in its progress.
        backup = _get(kubectl, namespace, "backup", "refused") or {}
        progress = (backup["metadata"].get("annotations") or {}).get("operator.dockyard.io/run")
        return "exceeded quota: no-jobs" in (progress or "")

    assert wait_for(refused, timeout=60)
    status = (_get(kubectl, namespace, "backup", "refused") or {}).get("status") or {}
    assert status.get("phase") != "Running"
    assert not status.get("attempts")
    assert _get(kubectl, namespace, "job", "backup-refused-1") is None


def _job_condition(kubectl: Kubectl, namespace: str, name: str) -> str | None:
    job = _get(kubectl, namespace, "job", name) or {}
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition["type"] in ("Complete", "Failed") and condition["status"] == "True":
            return str(condition["type"])
    return None


def test_a_job_mode_backup_is_dumped_by_its_runner_job_and_completes(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    # The runner connects as the environment's own role, so that role owns the tables.
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    _apply(kubectl, namespace, _backup(namespace, "by-job", backup_root, runner="Job"))

    status = _wait_phase(kubectl, namespace, "by-job", "Completed", timeout=120)

    artifact = _artifact_path(status["location"])
    assert artifact.is_relative_to(backup_root / namespace)
    assert hashlib.sha256(artifact.read_bytes()).hexdigest() == status["sha256"]
    assert {t["name"]: t["rows"] for t in status["manifest"]["tables"]} == EXPECTED_ROWS
    assert status["attempts"] == 1
    assert _job_condition(kubectl, namespace, "backup-by-job-1") == "Complete"


def test_a_runner_reporting_another_key_than_it_was_given_fails_the_backup(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    # The runner reports its artifact itself, key id included; the operator completes
    # the Backup only if that is the key the Backup names. Here the key Secret changes
    # while the runner dumps, so the runner reports the key it was given before.
    with _held_backup(kubectl, testbed_state, namespace, backup_root, "rekeyed", runner="Job"):
        kubectl("delete", "secret", "backup-key", "-n", namespace)
        _key_secret(kubectl, namespace)

    status = _wait_phase(kubectl, namespace, "rekeyed", "Failed", timeout=120)
    assert "reported key" in status["message"], status
    assert "not trusted" in status["message"]
    assert status["attempts"] == 1  # not retried


def test_a_runner_whose_key_secret_went_meanwhile_fails_the_backup_rather_than_hang(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    with _held_backup(kubectl, testbed_state, namespace, backup_root, "keyless", runner="Job"):
        kubectl("delete", "secret", "backup-key", "-n", namespace)

    status = _wait_phase(kubectl, namespace, "keyless", "Failed", timeout=180)
    assert "backup-key" in status["message"], status


def test_a_job_mode_backup_whose_runner_fails_retries_and_fails_with_its_reason(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    # Seeded by the admin: the environment's role, which the runner dumps as, may not
    # read those tables, so every attempt's dump fails.
    _environment(kubectl, testbed_state, namespace, owner_seeds=False)
    _key_secret(kubectl, namespace)
    _apply(kubectl, namespace, _backup(namespace, "denied", backup_root, runner="Job"))

    status = _wait_phase(kubectl, namespace, "denied", "Failed", timeout=150)

    assert status["attempts"] == 3
    # The runner's own reason, from its pod's termination message.
    assert "runner Job backup-denied-3 failed: DumpFailed: " in status["message"]
    assert "permission denied for" in status["message"]  # its schema or table
    assert "gave up after 3 attempts" in status["message"]
    assert [_job_condition(kubectl, namespace, f"backup-denied-{n}") for n in (1, 2, 3)] == [
        "Failed"
    ] * 3
    assert any("DumpFailed" in m for m in _events(kubectl, namespace, "AttemptFailed"))


# -- crash safety: an operator of this test's own, killed mid-backup ----------------------


@pytest.fixture
def own_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A namespace the session's operator does not watch (it is not t-*-<session>-*)."""
    name = f"crash-{SESSION_ID}-{uuid.uuid4().hex[:4]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "environments,backups", "--all", "-n", name, "--timeout=60s", check=False)
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def _start_operator(
    env: dict[str, str], namespace: str, log: Path, root: Path
) -> subprocess.Popen[bytes]:
    settings = {**env, "DOCKYARD_RECONCILE_INTERVAL": "3", **backup_settings(root)}
    return start_operator(namespace, settings, log, append=True)


def test_an_operator_killed_mid_backup_retries_it_and_counts_the_attempt(
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
        dsn = _environment(kubectl, testbed_state, own_namespace)
        _key_secret(kubectl, own_namespace)

        async def hold_lock_and_back_up() -> None:
            # pg_dump waits for this lock (up to its lock timeout), so the backup is
            # Running, with pg_dump started, when the operator is killed.
            conn = await asyncpg.connect(dsn)
            try:
                async with conn.transaction():
                    await conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
                    _apply(kubectl, own_namespace, _backup(own_namespace, "slow", backup_root))
                    await asyncio.to_thread(
                        _wait_phase, kubectl, own_namespace, "slow", "Running", 60
                    )
                    await asyncio.sleep(1)
                    os.kill(operator.pid, signal.SIGKILL)
                    operator.wait(timeout=10)
            finally:
                await conn.close()

        asyncio.run(hold_lock_and_back_up())
        assert _wait_phase(kubectl, own_namespace, "slow", "Running", timeout=5)

        operator = _start_operator(testbed_env, own_namespace, log, backup_root)
        status = _wait_phase(kubectl, own_namespace, "slow", "Completed", timeout=120)

        assert status["attempts"] == 2
        assert {t["name"]: t["rows"] for t in status["manifest"]["tables"]} == EXPECTED_ROWS
        interrupted = _events(kubectl, own_namespace, "AttemptFailed")
        assert any("interrupted" in message for message in interrupted), interrupted
    finally:
        release_and_stop(kubectl, own_namespace, "environments,backups", operator)


def _database_condition(status: dict[str, Any]) -> dict[str, Any] | None:
    conditions = status.get("conditions") or []
    return next((c for c in conditions if c["type"] == "DatabaseUnavailable"), None)


def _paused(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    """The Backup's status while it is paused for its database server (else None)."""
    status = ((_get(kubectl, namespace, "backup", name) or {}).get("status")) or {}
    condition = _database_condition(status)
    return status if condition and condition["status"] == "True" else None


@pytest.mark.alone  # it kills the shared test bed's PostgreSQL
def test_a_backup_pauses_while_postgres_is_down_and_completes_on_its_first_attempt_after(
    kubectl: Kubectl,
    testbed: Testbed,
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
        _key_secret(kubectl, own_namespace)
        killed = faults.killed(testbed, "postgres")
        try:
            _apply(kubectl, own_namespace, _backup(own_namespace, "patient", backup_root))

            def paused() -> dict[str, Any] | None:
                return _paused(kubectl, own_namespace, "patient")

            status = wait_for(paused, timeout=60)
            assert isinstance(status, dict)
            assert status["phase"] == "Pending"
            assert status.get("attempts", 0) == 0
            assert _database_condition(status)["reason"] == "ServerUnreachable"  # type: ignore[index]
            assert _events(kubectl, own_namespace, "DatabaseUnavailable")

            # An operator (re)started during the outage starts, and stays up.
            operator.terminate()
            operator.wait(timeout=15)
            operator = _start_operator(testbed_env, own_namespace, log, backup_root)
            time.sleep(12)  # past a poll: the backup is asked about again
            assert operator.poll() is None, log.read_text()[-3000:]
            status = paused()  # type: ignore[assignment]
            assert status is not None
            assert status.get("attempts", 0) == 0
        finally:
            faults.restart(testbed, killed)

        status = _wait_phase(kubectl, own_namespace, "patient", "Completed", timeout=120)
        assert status["attempts"] == 1  # the outage used up no attempt
        condition = _database_condition(status)
        assert condition is not None
        assert (condition["status"], condition["reason"]) == ("False", "ServerAnswers")
        rows = wait_for(
            lambda: _fetch(
                testbed_state.database_url,
                "SELECT phase FROM backup_catalog WHERE namespace = $1 AND name = $2",
                own_namespace,
                "patient",
            ),
            timeout=60,
        )
        assert [r["phase"] for r in rows] == ["Completed"]  # type: ignore[union-attr]
    finally:
        release_and_stop(kubectl, own_namespace, "environments,backups", operator)


@pytest.fixture
def small_backup_root(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs as the operator's backup root: the seeded database's artifact
    (about 1 MiB) does not fit, an empty database's does."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    root = tmp_path / "small-root"
    root.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs", str(root)]
    subprocess.run(mount, check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def test_a_full_backup_root_fails_the_backup_as_storage_full_and_a_small_one_still_completes(
    kubectl: Kubectl,
    testbed_state: State,
    testbed_env: dict[str, str],
    own_namespace: str,
    small_backup_root: Path,
    tmp_path: Path,
) -> None:
    root = small_backup_root
    operator = _start_operator(testbed_env, own_namespace, tmp_path / "operator.log", root)
    try:
        _environment(kubectl, testbed_state, own_namespace)  # seeded: about 1 MiB dumped
        _apply(kubectl, own_namespace, TINY)
        _key_secret(kubectl, own_namespace)
        _apply(kubectl, own_namespace, _backup(own_namespace, "big", root))
        _apply(kubectl, own_namespace, _backup(own_namespace, "small", root, environment="tiny"))

        small = _wait_phase(kubectl, own_namespace, "small", "Completed", timeout=120)
        big = _wait_phase(kubectl, own_namespace, "big", "Failed", timeout=120)

        ready = next(c for c in big["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "StorageFull"
        assert "the backup volume is full" in big["message"], big["message"]
        assert big["attempts"] == 3  # retried, as space may be freed meanwhile
        # Nothing of the big one's attempts is left: no partial file, no artifact.
        _assert_only_artifact(root, small)
    finally:
        release_and_stop(kubectl, own_namespace, "environments,backups", operator)


def _assert_only_artifact(root: Path, status: dict[str, Any]) -> None:
    """The one file under ``root`` is the artifact ``status`` records, as recorded."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert files == [_artifact_path(status["location"])]
    assert hashlib.sha256(files[0].read_bytes()).hexdigest() == status["sha256"]


def test_a_namespaces_backups_are_held_to_its_quota_on_the_shared_volume(
    kubectl: Kubectl,
    testbed_state: State,
    testbed_env: dict[str, str],
    own_namespace: str,
    tmp_path: Path,
) -> None:
    """With DOCKYARD_BACKUP_NAMESPACE_QUOTA, what a namespace already keeps on the volume
    (its catalogued artifacts) and what a run writes count together."""
    log, backup_root = tmp_path / "operator.log", tmp_path / "root"
    backup_root.mkdir()
    operator = _start_operator(testbed_env, own_namespace, log, backup_root)
    try:
        _environment(kubectl, testbed_state, own_namespace)  # seeded: about 1 MiB dumped
        _apply(kubectl, own_namespace, TINY)
        _key_secret(kubectl, own_namespace)
        _apply(kubectl, own_namespace, _backup(own_namespace, "small-1", backup_root, "tiny"))
        first = _wait_phase(kubectl, own_namespace, "small-1", "Completed", timeout=120)
    finally:
        stop_operator(operator)
    # Room for the first small artifact and half of another.
    quota = {"DOCKYARD_BACKUP_NAMESPACE_QUOTA": str(first["size"] * 3 // 2)}
    operator = _start_operator({**testbed_env, **quota}, own_namespace, log, backup_root)
    try:
        _apply(kubectl, own_namespace, _backup(own_namespace, "small-2", backup_root, "tiny"))
        _apply(kubectl, own_namespace, _backup(own_namespace, "big", backup_root))
        for name in ("small-2", "big"):
            failed = _wait_phase(kubectl, own_namespace, name, "Failed", timeout=180)
            ready = next(c for c in failed["conditions"] if c["type"] == "Ready")
            assert ready["reason"] == "StorageQuotaExceeded", failed
            assert "over its quota" in failed["message"], failed["message"]
            assert "DOCKYARD_BACKUP_NAMESPACE_QUOTA" in failed["message"]
        # Nothing of their attempts is left: no partial file, no artifact.
        _assert_only_artifact(backup_root, first)
    finally:
        release_and_stop(kubectl, own_namespace, "environments,backups", operator)


def test_production_environments_get_a_default_schedule_unless_they_opt_out(
    kubectl: Kubectl, namespace: str
) -> None:
    def production(name: str, annotations: dict[str, str]) -> dict[str, Any]:
        return {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": name, "annotations": annotations},
            "spec": {
                "tier": "production",
                "image": PINNED,
                "replicas": 2,
                "database": {"enabled": False},
            },
        }

    _apply(kubectl, namespace, production("opted-out", {"dockyard.io/default-backups": "false"}))
    _apply(kubectl, namespace, production("shop", {}))

    schedule = wait_for(lambda: _get(kubectl, namespace, "backupschedule", "shop-backups"))
    assert isinstance(schedule, dict)
    assert schedule["spec"]["environmentRef"] == {"name": "shop"}
    assert schedule["metadata"]["ownerReferences"][0]["kind"] == "Environment"
    assert _get(kubectl, namespace, "backupschedule", "opted-out-backups") is None
