"""``dockyard backup-run`` and ``restore-run`` as a Job runs them: processes, env, JSON.

The memory test is here because a separate process is the only honest place to
measure a runner's peak RSS: the same backup is run against a tiny database and a
~200 MB one, and the runner's high-water mark (``VmHWM``) may not grow with the data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import yaml

from dockyard.operator.database import DatabaseCredentials
from dockyard.runner import table_counts
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl
from tests.integration import backup_fixtures
from tests.integration.backup_fixtures import NewDatabase, execute, relations

pytestmark = pytest.mark.integration

admin_dsn = backup_fixtures.admin_dsn
new_database = backup_fixtures.new_database

KEY_HEX = "5a" * 32
MiB = 1024 * 1024


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str
    # The runner's own peak RSS (VmHWM: counted from its exec, so the test process it
    # was forked from does not inflate it), bytes.
    runner_peak: int
    seconds: float

    def json(self) -> dict[str, object]:
        return dict(json.loads(self.out))


def dockyard(args: list[str], env: dict[str, str], tmp_path: Path) -> Run:
    """Run the CLI in its own process, sampling its peak RSS until it exits."""
    out, err = tmp_path / f"out-{time.monotonic_ns()}", tmp_path / f"err-{time.monotonic_ns()}"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKYARD_", "PG"))}
    started = time.monotonic()
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dockyard.cli", *args],
            stdout=stdout,
            stderr=stderr,
            env={**base, **env},
        )
    runner_peak = 0
    while True:
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid:
            break
        runner_peak = max(runner_peak, _vm_hwm(proc.pid))
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(
        code=proc.returncode,
        out=out.read_text(),
        err=err.read_text(),
        runner_peak=runner_peak,
        seconds=time.monotonic() - started,
    )


def _vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


@pytest.fixture(scope="module")
async def big_source(new_database: NewDatabase) -> DatabaseCredentials:
    creds = await new_database()
    await execute(
        creds.uri(),
        "CREATE TABLE readings (id bigint PRIMARY KEY, taken_at timestamptz, payload text);"
        " INSERT INTO readings SELECT g, timestamptz '2025-01-01' + g * interval '1 second',"
        " md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) || md5((g * 31)::text)"
        " FROM generate_series(1, 1000000) g;"
        " CREATE TABLE sites (id int PRIMARY KEY, name text);"
        " INSERT INTO sites SELECT g, 'site ' || g FROM generate_series(1, 500) g;",
    )
    return creds


@pytest.fixture(scope="module")
async def tiny_source(new_database: NewDatabase) -> DatabaseCredentials:
    creds = await new_database()
    await execute(creds.uri(), "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2), (3)")
    return creds


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "backup.key"
    path.write_text(KEY_HEX + "\n")
    path.chmod(0o600)
    return path


def backup_args(storage: Path, name: str, key_file: Path) -> list[str]:
    return [
        "backup-run",
        "--storage",
        storage.as_uri(),
        "--name",
        name,
        "--key-id",
        "cli-key",
        "--key-file",
        str(key_file),
    ]


async def test_backup_and_restore_through_the_cli_with_bounded_memory(
    big_source: DatabaseCredentials,
    tiny_source: DatabaseCredentials,
    new_database: NewDatabase,
    key_file: Path,
    tmp_path: Path,
) -> None:
    storage = tmp_path / "store"
    tiny = dockyard(
        backup_args(storage, "tiny.dkbk", key_file),
        {"DOCKYARD_BACKUP_SOURCE_DSN": tiny_source.uri()},
        tmp_path,
    )
    big = dockyard(
        backup_args(storage, "big.dkbk", key_file),
        {"DOCKYARD_BACKUP_SOURCE_DSN": big_source.uri()},
        tmp_path,
    )
    assert (tiny.code, big.code) == (0, 0), big.err
    result = big.json()
    conn = await asyncpg.connect(big_source.uri())
    try:
        db_size = int(await conn.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await conn.close()
    assert db_size > 190 * MiB
    assert result["manifest"] == {"public.readings": 1_000_000, "public.sites": 500}
    assert int(str(result["size"])) > 50 * MiB
    # Memory: the same runner, 200 MB more data, at most 24 MiB more peak RSS.
    assert big.runner_peak - tiny.runner_peak < 24 * MiB, (big.runner_peak, tiny.runner_peak)
    assert big.runner_peak < 100 * MiB, big.runner_peak
    # No secret in what a Job's log would keep.
    assert big_source.password not in big.out + big.err
    assert KEY_HEX not in big.out + big.err

    target = await new_database()
    restored = dockyard(
        [
            "restore-run",
            "--storage",
            storage.as_uri(),
            "--name",
            "big.dkbk",
            "--sha256",
            str(result["sha256"]),
            "--key-id",
            "cli-key",
            "--role",
            target.user,
        ],
        {"DOCKYARD_RESTORE_TARGET_DSN": target.uri(), "DOCKYARD_BACKUP_KEY": KEY_HEX},
        tmp_path,
    )
    assert restored.code == 0, restored.err
    assert restored.json()["database"] == target.database
    assert await table_counts(target.uri()) == result["manifest"]
    assert restored.runner_peak - tiny.runner_peak < 24 * MiB, restored.runner_peak
    assert target.password not in restored.out + restored.err


async def test_restore_run_reports_a_checksum_mismatch_as_json_and_exit_1(
    tiny_source: DatabaseCredentials, new_database: NewDatabase, key_file: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "store"
    backup = dockyard(
        backup_args(storage, "t.dkbk", key_file),
        {"DOCKYARD_BACKUP_SOURCE_DSN": tiny_source.uri()},
        tmp_path,
    )
    assert backup.code == 0, backup.err
    artifact = storage / "t.dkbk"
    data = bytearray(artifact.read_bytes())
    data[-5] ^= 0xFF
    artifact.write_bytes(bytes(data))
    target = await new_database()
    args = [
        "restore-run",
        "--storage",
        storage.as_uri(),
        "--name",
        "t.dkbk",
        "--sha256",
        str(backup.json()["sha256"]),
        "--key-id",
        "cli-key",
        "--key-file",
        str(key_file),
    ]

    failed = dockyard(args, {"DOCKYARD_RESTORE_TARGET_DSN": target.uri()}, tmp_path)
    verified = dockyard([*args, "--verify-only"], {}, tmp_path)

    for run in (failed, verified):
        assert run.code == 1
        error = run.json()["error"]
        assert isinstance(error, dict)
        assert error["reason"] == "ChecksumMismatch"
        assert str(error["message"]).startswith("checksum mismatch")
        last = run.err.splitlines()[-1]
        assert last.startswith("dockyard restore-run: ChecksumMismatch"), run.err
    assert await relations(target.uri()) == []


async def test_verify_only_needs_no_database(
    tiny_source: DatabaseCredentials, key_file: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "store"
    backup = dockyard(
        backup_args(storage, "t.dkbk", key_file),
        {"DOCKYARD_BACKUP_SOURCE_DSN": tiny_source.uri()},
        tmp_path,
    )
    verified = dockyard(
        [
            "restore-run",
            "--verify-only",
            "--storage",
            storage.as_uri(),
            "--name",
            "t.dkbk",
            "--sha256",
            str(backup.json()["sha256"]),
            "--key-id",
            "cli-key",
            "--key-file",
            str(key_file),
        ],
        {},
        tmp_path,
    )
    assert verified.code == 0, verified.err
    assert verified.json()["archive_checked"] is True


async def test_an_unreachable_source_fails_in_one_line_without_its_password(
    key_file: Path, tmp_path: Path
) -> None:
    run = dockyard(
        backup_args(tmp_path / "store", "x.dkbk", key_file),
        {"DOCKYARD_BACKUP_SOURCE_DSN": "postgresql://u:hunter2-secret@127.0.0.1:1/db"},
        tmp_path,
    )
    assert run.code == 1
    assert run.json()["error"]["reason"] == "DatabaseUnavailable"  # type: ignore[index]
    assert "hunter2" not in run.out + run.err
    assert not list((tmp_path / "store").rglob("*")) if (tmp_path / "store").exists() else True


@pytest.mark.usefixtures("crds_installed")
def test_an_artifact_stored_for_a_backup_deleted_meanwhile_is_removed(
    tiny_source: DatabaseCredentials,
    key_file: Path,
    tmp_path: Path,
    kubectl: Kubectl,
    testbed_state: State,
    unwatched_namespace: str,
) -> None:
    """A runner Job outlives its Backup for a while: the Backup's finalizer may list its
    artifacts before the runner stores one, which nobody would then ever delete."""
    namespace, storage = unwatched_namespace, tmp_path / "store"
    doomed = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Backup",
        # Held by a finalizer of the test's, as the operator's would while it deletes.
        "metadata": {"name": "doomed", "namespace": namespace,
                     "finalizers": ["test.dockyard.io/hold"]},
        "spec": {"environmentRef": {"name": "shop"},
                 "storage": {"filesystem": {"path": str(storage)}},
                 "encryption": {"keySecretRef": {"name": "backup-key", "key": "key"}}},
    }  # fmt: skip
    kubectl("apply", "-f", "-", input=json.dumps(doomed))
    kubectl("patch", "backup", "doomed", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", '{"status": {"phase": "Running", "attempts": 1}}')  # fmt: skip
    kubectl("delete", "backup", "doomed", "-n", namespace, "--wait=false")
    env = {
        "DOCKYARD_BACKUP_SOURCE_DSN": tiny_source.uri(),
        "DOCKYARD_KUBECONFIG": testbed_state.kubeconfig,
    }
    # A runner whose identity went with its Backup: its token is refused (401).
    config = yaml.safe_load(Path(testbed_state.kubeconfig).read_text())
    for user in config["users"]:
        user["user"] = {"token": "the-token-of-a-deleted-account"}
    orphan = tmp_path / "orphan.kubeconfig"
    orphan.write_text(yaml.safe_dump(config))
    try:
        runs = {}
        for name, kubeconfig in (("doomed", None), ("never-was", None), ("orphaned", orphan)):
            report = ["--report-backup", f"{namespace}/{name}"]
            runs[name] = dockyard(
                [*backup_args(storage, f"{name}.dkbk", key_file), *report],
                {**env, "DOCKYARD_KUBECONFIG": str(kubeconfig)} if kubeconfig else env,
                tmp_path,
            )
    finally:
        kubectl("patch", "backup", "doomed", "-n", namespace, "--type=merge",
                "-p", '{"metadata": {"finalizers": null}}')  # fmt: skip
    for name, run in runs.items():
        assert run.code == 1, (name, run.out, run.err)
        error = run.json()["error"]
        assert error["reason"] == ("ReportFailed" if name == "orphaned" else "BackupDeleted")
        assert f"{name}.dkbk was removed" in error["message"]
    assert sorted(p.name for p in storage.rglob("*") if p.is_file()) == []


def test_a_report_that_cannot_reach_the_apiserver_is_one_json_error_not_a_traceback(
    tiny_source: DatabaseCredentials, key_file: Path, tmp_path: Path, testbed_state: State
) -> None:
    """The apiserver away when the runner reports its artifact: the run ended with a
    traceback and no JSON result, which the operator reads the runner's answer from."""
    config = yaml.safe_load(Path(testbed_state.kubeconfig).read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = "https://127.0.0.1:1"  # nothing listens there
    away = tmp_path / "away.kubeconfig"
    away.write_text(yaml.safe_dump(config))
    storage = tmp_path / "store"

    run = dockyard(
        [*backup_args(storage, "away.dkbk", key_file), "--report-backup", "shop/away"],
        {"DOCKYARD_BACKUP_SOURCE_DSN": tiny_source.uri(), "DOCKYARD_KUBECONFIG": str(away)},
        tmp_path,
    )

    assert run.code == 1, (run.out, run.err)
    error = run.json()["error"]
    assert error["reason"] == "ReportFailed"  # type: ignore[index]
    assert "cannot reach the apiserver" in error["message"]  # type: ignore[index]
    assert "after 3 attempts" in error["message"]  # type: ignore[index]
    assert "Traceback" not in run.err
    assert run.err.strip().splitlines()[-1].startswith("dockyard backup-run: ReportFailed: ")
    # Kept for the Backup's finalizer, which deletes every attempt's artifact.
    assert [p.name for p in storage.rglob("*.dkbk")] == ["away.dkbk"]
