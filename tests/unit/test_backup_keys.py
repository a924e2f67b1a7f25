"""Encryption keys as they come out of Secrets, and the ways tools see a database."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from dockyard.core.redaction import redact
from dockyard.runner import EncryptionKey, Keyring, WrongKey
from dockyard.runner.errors import DatabaseError
from dockyard.runner.libpq import tool_connection
from dockyard.runner.processes import Exit, first_failure, tool_version

RAW = bytes(range(100, 132))


@pytest.mark.parametrize(
    "value",
    [
        RAW,
        RAW.hex(),
        RAW.hex().upper() + "\n",
        base64.b64encode(RAW).decode(),
        base64.b64encode(RAW).decode().rstrip("=") + "\n",
        base64.urlsafe_b64encode(RAW).decode(),
    ],
    ids=["raw", "hex", "HEX-newline", "base64", "base64-unpadded", "base64-urlsafe"],
)
def test_a_key_is_read_from_any_shape_a_secret_holds(value: bytes | str) -> None:
    assert EncryptionKey.from_secret_value("k", value).key == RAW


@pytest.mark.parametrize(
    "value", [b"", b"short", "zz" * 32, base64.b64encode(b"x" * 31), b"\xff" * 40]
)
def test_a_key_of_the_wrong_size_or_shape_is_refused(value: bytes | str) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        EncryptionKey.from_secret_value("k", value)


@pytest.mark.parametrize("key_id", ["", "-lead", "has space", "x" * 129, "é"])
def test_a_key_id_must_be_plain_ascii(key_id: str) -> None:
    with pytest.raises(ValueError, match="key id"):
        EncryptionKey(key_id, RAW)


def test_a_key_never_shows_its_bytes() -> None:
    key = EncryptionKey("prod-2025", RAW)
    assert RAW.hex() not in repr(key)
    assert str(list(RAW)) not in repr(key)
    assert "prod-2025" in repr(Keyring([key]))


def test_a_keyring_refuses_two_keys_under_one_id() -> None:
    with pytest.raises(ValueError, match="share the id"):
        Keyring([EncryptionKey("k", RAW), EncryptionKey("k", bytes(32))])


def test_a_keyring_names_a_missing_id() -> None:
    with pytest.raises(WrongKey, match="'gone'"):
        Keyring([EncryptionKey("k", RAW)]).get("gone")


def test_the_password_goes_to_the_environment_not_the_command_line() -> None:
    conn = tool_connection(
        "postgresql://alice:s3cr%40t@db.example:5433/shop?sslmode=require",
        application_name="dockyard-backup",
    )
    assert "s3cr" not in conn.uri
    assert conn.uri == "postgresql://alice@db.example:5433/shop?sslmode=require"
    assert conn.env["PGPASSWORD"] == "s3cr@t"
    assert conn.env["PGAPPNAME"] == "dockyard-backup"
    assert conn.database == "shop"
    assert "s3cr" not in repr(conn)


def test_a_password_in_the_query_string_is_moved_too() -> None:
    conn = tool_connection(
        "postgresql://bob@h/db?password=p%26w&sslmode=disable", application_name="x"
    )
    assert "p&w" not in conn.uri
    assert "password" not in conn.uri
    assert conn.env["PGPASSWORD"] == "p&w"


def test_inherited_libpq_variables_never_reach_the_tools(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "elsewhere")
    monkeypatch.setenv("PGPASSWORD", "stray")
    conn = tool_connection("postgresql://u@h/db", application_name="x")
    assert "PGHOST" not in conn.env
    assert "PGPASSWORD" not in conn.env


def test_a_client_key_passphrase_is_refused_not_put_on_the_command_line() -> None:
    """libpq reads no sslpassword from the environment: the URI is all the tools get."""
    with pytest.raises(DatabaseError, match="sslpassword") as refused:
        tool_connection(
            "postgresql://u:pw@h/db?sslkey=/keys/client.key&sslpassword=k3y-phrase",
            application_name="x",
        )
    assert "k3y-phrase" not in refused.value.message


def test_a_passfile_is_a_path_and_stays_in_the_uri() -> None:
    conn = tool_connection("postgresql://u@h/db?passfile=/run/pgpass", application_name="x")
    assert conn.uri == "postgresql://u@h/db?passfile=%2Frun%2Fpgpass"


async def test_asking_a_tools_version_shows_it_none_of_the_runners_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = tmp_path / "pg_dump"
    tool.write_text('#!/bin/sh\necho "pg_dump (PostgreSQL) ${SECRET_MARKER:-15.4}"\n')
    tool.chmod(0o755)
    monkeypatch.setenv("SECRET_MARKER", "9.9")
    assert await tool_version(str(tool)) == "15.4"


def test_only_postgresql_uris_are_accepted() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        tool_connection("host=h password=p", application_name="x")


def test_redact_hides_plain_and_quoted_secrets() -> None:
    assert redact("failed for p@ss and p%40ss", "p@ss") == "failed for *** and ***"


def test_the_cause_of_a_chain_failure_is_reported_not_its_broken_pipe() -> None:
    exits = [
        Exit("zstd", -13, ""),
        Exit("pg_restore", 1, 'pg_restore: error: relation "x" already exists'),
    ]
    assert first_failure(exits, cause_first="pg_restore") == exits[1]
    dump = [Exit("pg_dump", 1, "pg_dump: error: connection refused"), Exit("zstd", 0, "")]
    assert first_failure(dump, cause_first="pg_dump") == dump[0]
    only_pipe = [Exit("zstd", 1, "zstd: error 70 : Write error : Broken pipe")]
    assert first_failure(only_pipe, cause_first="pg_restore") == only_pipe[0]
    assert first_failure([Exit("zstd", 0, "")], cause_first="zstd") is None


def test_a_failure_reads_as_one_line() -> None:
    exit = Exit("pg_dump", 1, "pg_dump: error: one\npg_dump: detail: two\n")
    assert (
        exit.describe() == "pg_dump exited with status 1: pg_dump: error: one pg_dump: detail: two"
    )
    assert Exit("zstd", -9, "").describe() == "zstd was killed by signal 9"
