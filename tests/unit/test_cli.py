"""The command line: one-line usage errors with exit status 2, and the drift checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from dockyard import cli
from dockyard.core import crds
from dockyard.core.settings import Settings


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["launch"], "invalid choice: 'launch'"),
        (["api", "--port", "eighty"], "port must be a number"),
        (["api", "--port", "70000"], "port must be between 1 and 65535"),
        (["testbed"], "the following arguments are required: ACTION"),
        (["testbed", "user"], "the following arguments are required: name"),
        (["crds", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_wrong_usage_prints_one_line_and_exits_2(
    argv: list[str], hint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert hint in err
    assert "--help" in err


def test_invalid_setting_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKYARD_LOG_LEVEL", "LOUD")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["migrate"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("dockyard: invalid setting DOCKYARD_LOG_LEVEL")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DOCKYARD_DATABASE_URL", "postgresql://dockyard:s3cr#et@db.internal/dockyard"),
        ("DOCKYARD_MIGRATION_DATABASE_URL", "postgres://owner:s3cr#et@[db/dockyard"),
        ("DOCKYARD_REDIS_URL", "redis://:s3cr#et@redis:notaport/0"),
    ],
)
def test_a_malformed_dsn_is_refused_at_start_without_quoting_its_password(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A password with an unescaped '#' is an ordinary mistake; the error that says so
    must not print it into the pod's log."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["migrate"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dockyard: invalid setting {variable}: ")
    assert "s3cr" not in err
    assert err.count("\n") == 1
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert "s3cr" not in str(refused.value)


def test_crds_check_passes_on_fresh_output_and_fails_on_drift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["crds", "--out", str(tmp_path)]) == 0
    assert cli.main(["crds", "--check", "--out", str(tmp_path)]) == 0
    target = tmp_path / "environments.dockyard.io.yaml"
    target.write_text(target.read_text().replace("tier is immutable", "tier may change"))
    assert cli.main(["crds", "--check", "--out", str(tmp_path)]) == 1
    assert "environments.dockyard.io.yaml" in capsys.readouterr().err


def test_committed_crds_match_the_models() -> None:
    assert crds.check_all(Path(__file__).resolve().parents[2] / "crds") == []


def test_openapi_check_fails_on_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "openapi.yaml"
    assert cli.main(["openapi", "--out", str(spec)]) == 0
    assert cli.main(["openapi", "--check", "--out", str(spec)]) == 0
    spec.write_text(spec.read_text().replace("getReadiness", "getReady"))
    assert cli.main(["openapi", "--check", "--out", str(spec)]) == 1
    assert "differs from the code" in capsys.readouterr().err
