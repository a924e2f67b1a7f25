"""scripts/kind-up.sh's Secret dockyard-platform: which DSNs it holds, and the loopback
DSNs it refuses because the pods cannot reach them.

The script, sourced, only defines its steps; these run one of them with a stub
``kubectl`` first on PATH (it knows no Secret, and takes every apply), and read the
values from the files the script hands to ``kubectl create secret --from-file``.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KIND_UP = ROOT / "scripts" / "kind-up.sh"
URL_SETTINGS = (
    "DOCKYARD_DATABASE_URL",
    "DOCKYARD_MIGRATION_DATABASE_URL",
    "DOCKYARD_REDIS_URL",
    "DOCKYARD_MANAGED_POSTGRES_URL",
)
STUB_KUBECTL = """#!/bin/sh
echo "$*" >>"$STUB_LOG"
case "$*" in *" apply "*) cat >/dev/null ;; esac
"""
EXTERNAL = "postgresql://app:pw@db.example.internal:5432/dockyard"


def _run_step(step: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    kubectl = stubs / "kubectl"
    kubectl.write_text(STUB_KUBECTL)
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IXUSR)
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return subprocess.run(
        ["bash", "-c", f'source "$1"; workdir="$2"; {step}', "bash", str(KIND_UP), str(work)],
        cwd=tmp_path,
        # Only what is given here: the test bed's exports of the running tests stay out.
        env={
            "PATH": f"{stubs}:{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "STUB_LOG": str(tmp_path / "kubectl.log"),
            **env,
        },
        capture_output=True,
        text=True,
        check=False,
    )


def _platform_secret(tmp_path: Path, **env: str) -> dict[str, str]:
    result = _run_step("apply_secrets", tmp_path, **env)
    assert result.returncode == 0, result.stderr
    secret = tmp_path / "work" / "dockyard-platform"
    return {path.name: path.read_text() for path in secret.iterdir()}


def test_migrations_go_to_dockyard_database_url_when_only_it_is_set(tmp_path: Path) -> None:
    """Before, migration-database-url fell back to the dev PostgreSQL: the migrations ran
    against another database than the one the API uses."""
    secret = _platform_secret(tmp_path, DOCKYARD_DATABASE_URL=EXTERNAL)

    assert secret["database-url"] == EXTERNAL
    assert secret["migration-database-url"] == EXTERNAL


def test_without_settings_both_dsns_name_the_dev_postgres(tmp_path: Path) -> None:
    secret = _platform_secret(tmp_path)

    dev = "@dockyard-dev-postgres.dockyard-system.svc.cluster.local:5432/dockyard"
    assert secret["database-url"].endswith(dev)
    assert secret["migration-database-url"] == secret["database-url"]


def test_the_owners_dsn_goes_to_migration_database_url(tmp_path: Path) -> None:
    owner = "postgresql://owner:pw@db.example.internal:5432/dockyard"
    secret = _platform_secret(
        tmp_path, DOCKYARD_DATABASE_URL=EXTERNAL, DOCKYARD_MIGRATION_DATABASE_URL=owner
    )

    assert secret["database-url"] == EXTERNAL
    assert secret["migration-database-url"] == owner


@pytest.mark.parametrize(
    ("variable", "dsn", "host"),
    [
        ("DOCKYARD_DATABASE_URL", "postgresql://dockyard:s3cr/et@127.0.0.1:5432/d", "127.0.0.1"),
        ("DOCKYARD_MIGRATION_DATABASE_URL", "postgresql://o:s3cret@localhost/d", "localhost"),
        ("DOCKYARD_REDIS_URL", "redis://:s3cret@[::1]:6379/0", "::1"),
        ("DOCKYARD_MANAGED_POSTGRES_URL", "postgresql://u:s3cret@db,LocalHost:5/p", "LocalHost"),
    ],
)
def test_a_loopback_dsn_is_refused_in_one_line_without_quoting_it(
    variable: str, dsn: str, host: str, tmp_path: Path
) -> None:
    """`eval "$(dockyard testbed env)"` exports such DSNs; in a pod they name the pod."""
    result = _run_step("refuse_loopback_urls", tmp_path, **{variable: dsn})

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"kind-up: {variable} points at {host}, ")
    assert "s3cr" not in result.stderr


def test_dsns_the_cluster_reaches_pass(tmp_path: Path) -> None:
    result = _run_step(
        "refuse_loopback_urls",
        tmp_path,
        **dict.fromkeys(URL_SETTINGS, "postgresql://u:127.0.0.1@db.example.internal/d"),
    )

    assert result.returncode == 0, result.stderr


def test_a_loopback_dsn_stops_the_script_before_it_builds_anything(tmp_path: Path) -> None:
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for tool in ("docker", "kind", "kubectl"):  # each records that it ran
        (stubs / tool).write_text(f'#!/bin/sh\necho {tool} >>"{tmp_path}/ran"\nexit 1\n')
        (stubs / tool).chmod(0o755)

    result = subprocess.run(
        ["bash", str(KIND_UP)],
        env={
            "PATH": f"{stubs}:{os.environ['PATH']}",
            "HOME": str(tmp_path),
            "DOCKYARD_DATABASE_URL": "postgresql://dockyard:pw@127.0.0.1:5432/dockyard",
        },
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 2
    assert "DOCKYARD_DATABASE_URL points at 127.0.0.1" in result.stderr
    assert not (tmp_path / "ran").exists()
