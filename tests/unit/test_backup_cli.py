"""``dockyard backup-run`` / ``restore-run``: wrong usage is one line and exit status 2.

These stop before any database or storage is touched; the runs themselves are in
``tests/integration/test_backup_cli_runs.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockyard import cli

SHA = "ab" * 32


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "DOCKYARD_BACKUP_SOURCE_DSN",
        "DOCKYARD_RESTORE_TARGET_DSN",
        "DOCKYARD_BACKUP_KEY",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "key"
    path.write_text("11" * 32 + "\n")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = cli.main(argv)
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_a_missing_argument_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["backup-run", "--name", "a"], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "--storage" in err
    assert out == ""


def test_the_source_dsn_must_come_from_the_environment(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "backup-run",
        "--storage",
        "/var/lib/dockyard/backups",
        "--name",
        "a.dkbk",
        "--key-id",
        "k1",
    ]
    code, out, err = run([*argv, "--key-file", str(key_file)], capsys)
    assert code == 2
    assert err.count("\n") == 1
    assert "DOCKYARD_BACKUP_SOURCE_DSN" in err
    assert out == ""


def test_a_key_is_required(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKYARD_BACKUP_SOURCE_DSN", "postgresql://u:hunter2@h/db")
    code, _, err = run(
        [
            "backup-run",
            "--storage",
            "/var/lib/dockyard/backups",
            "--name",
            "a.dkbk",
            "--key-id",
            "k1",
        ],
        capsys,
    )
    assert code == 2
    assert "--key-file or DOCKYARD_BACKUP_KEY" in err
    assert "hunter2" not in err


def test_a_key_of_the_wrong_shape_is_refused_without_showing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKYARD_BACKUP_SOURCE_DSN", "postgresql://u@h/db")
    bad = tmp_path / "key"
    bad.write_text("not-a-key-but-a-secret-anyway")
    code, _, err = run(
        [
            "backup-run",
            "--storage",
            "/var/lib/dockyard/backups",
            "--name",
            "a.dkbk",
            "--key-id",
            "k1",
            "--key-file",
            str(bad),
        ],
        capsys,
    )
    assert code == 2
    assert "32 bytes" in err
    assert "secret-anyway" not in err


@pytest.mark.parametrize("name", ["../escape", "/abs", "a//b", ".hidden", "a b"])
def test_an_artifact_name_that_could_escape_or_hide_is_refused(
    name: str, key_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKYARD_BACKUP_SOURCE_DSN", "postgresql://u@h/db")
    code, _, err = run(
        [
            "backup-run",
            "--storage",
            "/var/lib/dockyard/backups",
            "--name",
            name,
            "--key-id",
            "k1",
            "--key-file",
            str(key_file),
        ],
        capsys,
    )
    assert code == 2
    assert "invalid artifact name" in err
    assert err.count("\n") == 1


def test_restore_needs_a_well_formed_sha256(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        [
            "restore-run",
            "--storage",
            "/var/lib/dockyard/backups",
            "--name",
            "a.dkbk",
            "--key-id",
            "k1",
            "--key-file",
            str(key_file),
            "--sha256",
            "abc",
        ],
        capsys,
    )
    assert code == 2
    assert "64 hexadecimal digits" in err


def test_restore_needs_the_target_dsn_unless_it_only_verifies(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "restore-run",
        "--storage",
        "/var/lib/dockyard/backups",
        "--name",
        "a.dkbk",
        "--key-id",
        "k1",
        "--key-file",
        str(key_file),
        "--sha256",
        SHA,
    ]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert "DOCKYARD_RESTORE_TARGET_DSN" in err


def test_s3_credentials_in_the_storage_url_are_refused(
    key_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "restore-run",
        "--storage",
        "s3://AKIA:secret@bucket/prefix",
        "--name",
        "a.dkbk",
        "--key-id",
        "k1",
        "--key-file",
        str(key_file),
        "--sha256",
        SHA,
        "--verify-only",
    ]
    code, out, err = run(argv, capsys)
    assert code == 2
    assert "without credentials" in err
    assert "secret" not in err.replace("without credentials", "")
    assert out == ""


def test_restore_into_a_database_that_is_not_a_plain_name_is_refused(
    key_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKYARD_RESTORE_TARGET_DSN", "postgresql://shop:pw@db/env_shop")
    argv = [
        "restore-run",
        "--storage=/var/lib/dockyard/backups",
        "--name=a.dkbk",
        "--key-id=k1",
        f"--key-file={key_file}",
        f"--sha256={SHA}",
        "--database=x; DROP DATABASE y",
    ]
    code, out, err = run(argv, capsys)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1
    assert "is not a database name" in err
    assert "pw" not in err


def test_a_failed_run_writes_its_error_to_the_result_file_too(
    key_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    result = tmp_path / "termination-log"
    argv = [
        "restore-run",
        f"--storage={store.as_uri()}",
        "--name=team/missing.dkbk",
        "--key-id=k1",
        f"--key-file={key_file}",
        f"--sha256={SHA}",
        "--verify-only",
        f"--result-file={result}",
    ]
    code, out, _ = run(argv, capsys)
    assert code == 1
    written = json.loads(result.read_text())
    assert written == json.loads(out)
    assert written["error"]["reason"] == "ArtifactNotFound"
