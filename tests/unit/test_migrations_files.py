"""The shipped migration files, and how the runner reads a migrations directory."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from dockyard.core import migrations
from dockyard.core.migrations import (
    DuplicateMigrationVersion,
    MalformedMigrationName,
    discover,
    parse_filename,
)


def test_shipped_migration_names_parse() -> None:
    sql_files = sorted(migrations.DEFAULT_DIRECTORY.glob("*.sql"))

    assert sql_files, "no migration shipped"
    for path in sql_files:
        version, name = parse_filename(path.name)
        assert path.name == f"{version:04d}_{name}.sql"


def test_shipped_versions_are_unique_and_contiguous_from_one() -> None:
    versions = [migration.version for migration in discover()]

    assert versions == list(range(1, len(versions) + 1))


def test_first_migration_is_the_platform_schema() -> None:
    first = discover()[0]

    assert (first.version, first.name) == (1, "platform_schema")


def test_checksum_is_the_sha256_of_the_file_bytes() -> None:
    for migration in discover():
        expected = hashlib.sha256(migration.path.read_bytes()).hexdigest()
        assert migration.checksum == expected


def test_checksums_are_stable_across_reads() -> None:
    first = {m.version: m.checksum for m in discover()}
    second = {m.version: m.checksum for m in discover()}

    assert first == second


def test_checksum_changes_with_a_single_byte() -> None:
    assert migrations.checksum(b"SELECT 1;\n") != migrations.checksum(b"SELECT 1; \n")


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("0001_platform_schema.sql", (1, "platform_schema")),
        ("0042_backup_catalog.sql", (42, "backup_catalog")),
        ("9999_x.sql", (9999, "x")),
    ],
)
def test_well_formed_names_parse(filename: str, expected: tuple[int, str]) -> None:
    assert parse_filename(filename) == expected


@pytest.mark.parametrize(
    "filename",
    [
        "1_platform_schema.sql",
        "00001_platform_schema.sql",
        "0000_platform_schema.sql",
        "0001-platform-schema.sql",
        "0001_Platform_Schema.sql",
        "0001_.sql",
        "0001_platform__schema.sql",
        "0001_platform_schema.SQL",
        "0001_platform_schema.sql.orig",
        "platform_schema.sql",
    ],
)
def test_malformed_names_raise(filename: str) -> None:
    with pytest.raises(MalformedMigrationName, match=re.escape(filename)):
        parse_filename(filename)


def test_discover_refuses_a_malformed_sql_file(tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("SELECT 1;\n")
    (tmp_path / "2_bad.sql").write_text("SELECT 2;\n")

    with pytest.raises(MalformedMigrationName, match=re.escape("2_bad.sql")):
        discover(tmp_path)


def test_discover_ignores_files_that_are_not_sql(tmp_path: Path) -> None:
    (tmp_path / "0001_ok.sql").write_text("SELECT 1;\n")
    (tmp_path / "README.md").write_text("notes\n")

    assert [m.path.name for m in discover(tmp_path)] == ["0001_ok.sql"]


def test_discover_refuses_a_version_used_twice(tmp_path: Path) -> None:
    (tmp_path / "0001_one.sql").write_text("SELECT 1;\n")
    (tmp_path / "0001_other.sql").write_text("SELECT 2;\n")

    with pytest.raises(
        DuplicateMigrationVersion, match=re.escape("0001_one.sql and 0001_other.sql")
    ):
        discover(tmp_path)


def test_discover_orders_by_version(tmp_path: Path) -> None:
    for filename in ("0010_c.sql", "0002_b.sql", "0001_a.sql"):
        (tmp_path / filename).write_text("SELECT 1;\n")

    assert [m.version for m in discover(tmp_path)] == [1, 2, 10]
