"""The command line: one-line usage errors with exit status 2, and the drift checks."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import ValidationError

from dockyard import cli
from dockyard.core import crds, migrations
from dockyard.core.db import DatabaseUnreachable
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


@pytest.mark.parametrize(
    ("variable", "value"),
    [("DOCKYARD_TRUSTED_PROXIES", "10.0.0.0/8"), ("DOCKYARD_CORS_ORIGINS", "https://app.example")],
)
def test_a_list_setting_not_in_json_names_the_variable_and_says_lists_are_json(
    variable: str, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """pydantic-settings refuses these before pydantic does: a traceback, before."""
    monkeypatch.setenv(variable, value)

    assert _exit_status(["migrate"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dockyard: invalid setting {variable}: not JSON; ")
    assert '\'["10.0.0.0/8"' in err
    assert err.count("\n") == 1


def test_a_wrong_test_bed_setting_names_the_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DOCKYARD_TESTBED_NODES", "abc")

    assert _exit_status(["testbed", "status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dockyard: invalid setting DOCKYARD_TESTBED_NODES: ")
    assert err.count("\n") == 1


def test_dev_checks_the_test_bed_settings_before_it_starts_anything(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dockyard.testbed import dev

    def started(**_: object) -> int:
        raise AssertionError("dev started with a wrong setting")

    monkeypatch.setattr(dev, "run", started)
    monkeypatch.setenv("DOCKYARD_TESTBED_START_TIMEOUT", "-1")

    assert _exit_status(["dev"]) == 2
    assert capsys.readouterr().err.startswith(
        "dockyard: invalid setting DOCKYARD_TESTBED_START_TIMEOUT: "
    )


# Nothing listens on port 1 here: a connection is refused at once.
UNREACHABLE_DSN = "postgresql://dockyard:hunter2@127.0.0.1:1/dockyard"


def _exit_status(argv: list[str]) -> int | str | None:
    try:
        return cli.main(argv)
    except SystemExit as exc:
        return exc.code


def _no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("DOCKYARD_KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(variable, raising=False)


def test_migrate_says_in_one_line_which_database_took_no_connection(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DOCKYARD_MIGRATION_DATABASE_URL", raising=False)
    monkeypatch.setenv("DOCKYARD_DATABASE_URL", UNREACHABLE_DSN)

    assert cli.main(["migrate"]) == 1

    err = capsys.readouterr().err
    assert err.startswith(
        "dockyard migrate: the database of DOCKYARD_MIGRATION_DATABASE_URL, else "
        "DOCKYARD_DATABASE_URL took no connection: "
    )
    assert "127.0.0.1', 1)" in err  # the address it tried
    assert "hunter2" not in err
    assert err.count("\n") == 1


class _OwnerConnection:
    """What ``dockyard migrate`` asks of its connection, connected as the role owner."""

    closed = False

    def __init__(self) -> None:
        self.executed: list[tuple[str, tuple[Any, ...]]] = []

    async def fetchval(self, query: str) -> str:
        assert query == "SELECT current_user"
        return "owner"

    async def execute(self, query: str, *args: Any) -> str:
        self.executed.append((query, args))
        return "INSERT 0 1"

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    ("refusal", "step"),
    [
        (
            asyncpg.exceptions.InsufficientPrivilegeError("permission denied for schema public"),
            "migrating",
        ),
        (
            asyncpg.exceptions.UndefinedObjectError('role "app" does not exist'),
            "granting the runtime role app (DOCKYARD_DATABASE_URL) its rights",
        ),
    ],
)
def test_migrate_says_in_one_line_what_the_database_refused_after_connecting(
    refusal: asyncpg.PostgresError,
    step: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A runtime role that does not exist, or an owner without rights on the schema:
    a traceback, before."""
    monkeypatch.setenv("DOCKYARD_DATABASE_URL", "postgresql://app:hunter2@db/dockyard")
    monkeypatch.setenv("DOCKYARD_MIGRATION_DATABASE_URL", "postgresql://owner:s3cret@db/dockyard")
    conn = _OwnerConnection()

    async def connect(dsn: str) -> _OwnerConnection:
        return conn

    async def migrate(target: Any) -> list[migrations.AppliedMigration]:
        if step == "migrating":
            raise refusal
        return []

    async def grant_runtime(target: Any, role: str) -> None:
        raise refusal

    monkeypatch.setattr(asyncpg, "connect", connect)
    monkeypatch.setattr(migrations, "migrate", migrate)
    monkeypatch.setattr(migrations, "grant_runtime", grant_runtime)

    assert cli.main(["migrate"]) == 1

    err = capsys.readouterr().err
    assert err == f"dockyard migrate: {step} failed: {refusal}\n"
    assert conn.closed


@pytest.mark.parametrize(
    ("variables", "floors"),
    [({}, (90, 30)), ({"AUDIT": "120", "EVENT": "14"}, (120, 14))],
)
def test_migrate_writes_the_configured_retentions_as_the_purge_floors_before_granting(
    variables: dict[str, str],
    floors: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The purge functions refuse any cutoff younger than these (migration 0013): a
    stolen runtime DSN cannot purge what retention keeps."""
    for kind in ("AUDIT", "EVENT"):
        monkeypatch.delenv(f"DOCKYARD_{kind}_RETENTION_DAYS", raising=False)
    for kind, days in variables.items():
        monkeypatch.setenv(f"DOCKYARD_{kind}_RETENTION_DAYS", days)
    monkeypatch.setenv("DOCKYARD_DATABASE_URL", "postgresql://app:hunter2@db/dockyard")
    monkeypatch.setenv("DOCKYARD_MIGRATION_DATABASE_URL", "postgresql://owner:s3cret@db/dockyard")
    conn = _OwnerConnection()
    granted_after: list[int] = []

    async def connect(dsn: str) -> _OwnerConnection:
        return conn

    async def migrate(target: Any) -> list[migrations.AppliedMigration]:
        return []

    async def grant_runtime(target: Any, role: str) -> None:
        granted_after.append(len(conn.executed))

    monkeypatch.setattr(asyncpg, "connect", connect)
    monkeypatch.setattr(migrations, "migrate", migrate)
    monkeypatch.setattr(migrations, "grant_runtime", grant_runtime)

    assert cli.main(["migrate"]) == 0

    ((query, args),) = conn.executed
    assert "retention_floors" in query
    assert args == floors
    assert granted_after == [1]
    assert "granted the runtime role app" in capsys.readouterr().out


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://dockyard:/Se+cret@db:5432/dockyard",  # the password starts with /
        "postgresql://dockyard:2024/Se+cret@db/dockyard",  # digits, then /
        "postgresql://dockyard:Se+cret@db/dockyard",
    ],
)
def test_a_password_is_not_echoed_by_the_drivers_reason(dsn: str) -> None:
    """A password that is not percent-encoded makes the DSN parse wrong: the driver may
    then name a database that holds it. The one line keeps it out."""
    reason = OSError('database "Se+cret@db:5432/dockyard" does not exist')

    message = str(DatabaseUnreachable("DOCKYARD_DATABASE_URL", reason, dsn=dsn))

    assert "Se+cret" not in message
    assert message.startswith("the database of DOCKYARD_DATABASE_URL took no connection: ")
    assert "@db:5432/dockyard" in message


@pytest.mark.parametrize("command", ["api", "operator"])
def test_a_service_without_a_way_to_the_apiserver_says_so_in_one_line(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _no_cluster(monkeypatch)

    assert _exit_status([command]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"dockyard {command}: no kubeconfig set (DOCKYARD_KUBECONFIG) and not running in a "
        "cluster\n"
    )


def test_a_broken_kubeconfig_is_named_without_quoting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("users:\n- name: me\n  user: {token: sha256~TOPSECRET\n")
    _no_cluster(monkeypatch)
    monkeypatch.setenv("DOCKYARD_KUBECONFIG", str(kubeconfig))

    assert _exit_status(["operator"]) == 2
    err = capsys.readouterr().err
    assert err == f"dockyard operator: kubeconfig {kubeconfig} cannot be used: not YAML (line 4)\n"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncurrent-context: gone\n")
    assert _exit_status(["api"]) == 2
    assert "kubeconfig has no context named 'gone'" in capsys.readouterr().err


def _api_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``dockyard api`` needs to start: a kubeconfig, and a database that takes no
    connection (the tests stop it before or at its pool)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    _no_cluster(monkeypatch)
    monkeypatch.setenv("DOCKYARD_KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("DOCKYARD_DATABASE_URL", UNREACHABLE_DSN)
    monkeypatch.delenv("DOCKYARD_REDIS_URL", raising=False)


def test_the_api_stops_in_one_line_when_its_database_takes_no_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _api_settings(tmp_path, monkeypatch)
    with socket.socket() as probe:  # a free port for /metrics, opened before the pool
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("DOCKYARD_METRICS_PORT", str(probe.getsockname()[1]))

    assert cli.main(["api", "--port", "1"]) == 1

    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("dockyard api: the database of DOCKYARD_DATABASE_URL took no ")
    assert not [line for line in err if "Traceback" in line or "hunter2" in line]


def test_the_api_stops_in_one_line_when_its_port_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Another process on the metrics port (bound first): a traceback, before."""
    _api_settings(tmp_path, monkeypatch)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("DOCKYARD_METRICS_PORT", str(port))

        assert cli.main(["api", "--port", "1"]) == 1

    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("dockyard api: cannot listen: ")
    assert str(port) in err[-1]
    assert not [line for line in err if "Traceback" in line]


def test_the_api_stops_in_one_line_when_its_host_does_not_resolve(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """socket.gaierror is an OSError with a negative errno: a traceback, before."""
    _api_settings(tmp_path, monkeypatch)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        monkeypatch.setenv("DOCKYARD_METRICS_PORT", str(probe.getsockname()[1]))
    resolve = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "api.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    assert cli.main(["api", "--host", "api.invalid", "--port", "1"]) == 1

    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (
        "dockyard api: cannot listen: --host 'api.invalid': Name or service not known"
    )
    assert not [line for line in err if "Traceback" in line]


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
