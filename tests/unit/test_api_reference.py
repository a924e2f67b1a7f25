"""docs/api-operations.md: generated from the operation registry, and held to it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dockyard import cli
from dockyard.api import app
from dockyard.api.openapi import Operation
from dockyard.contract import reference

ROOT = Path(__file__).resolve().parents[2]


def operation(operation_id: str) -> Operation:
    return next(op for op in app.registry().operations if op.operation_id == operation_id)


def test_the_committed_reference_matches_the_registry() -> None:
    assert reference.check(ROOT / reference.PATH, app.registry().operations) == []


def test_every_operation_has_one_row_with_its_method_and_path() -> None:
    text = reference.render(app.registry().operations)
    for op in app.registry().operations:
        rows = [line for line in text.splitlines() if line.startswith(f"| `{op.operation_id}` |")]
        assert len(rows) == 1, op.operation_id
        assert f"`{op.method.upper()} {op.path}`" in rows[0]


def test_a_permission_names_its_verb_resource_and_scope() -> None:
    assert reference.caller_needs(operation("patchBackup")) == (
        "`patch` `backups` in the namespace"
    )
    assert reference.caller_needs(operation("deleteBackupStore")) == (
        "`delete` `backupstores` cluster-wide"
    )


def test_an_approval_names_the_verb_and_the_patch_that_records_it() -> None:
    needs = reference.caller_needs(operation("approveRestore"))
    assert needs.startswith("`approve` `restores` in the namespace; also patch on restores")


def test_operations_without_one_permission_say_who_may_call_them() -> None:
    assert reference.caller_needs(operation("getLiveness")) == "nothing: no token"
    assert reference.caller_needs(operation("getMe")) == "any authenticated user"
    assert "may list environments" in reference.caller_needs(operation("listEnvironments"))
    assert "DOCKYARD_AUDIT_SINK_TOKEN" in reference.caller_needs(operation("ingestKubernetesAudit"))


def test_the_audit_trail_exceptions_come_from_the_registry() -> None:
    ops = [dataclasses.replace(operation("getMe"), audited=False), operation("getLiveness")]
    text = reference.render(ops)
    assert "except the requests of `getMe`." in text
    assert "except" not in reference.render([operation("getLiveness")])


def test_a_pipe_in_a_summary_does_not_break_the_table() -> None:
    op = dataclasses.replace(operation("getMe"), summary="one | two")
    assert "| one \\| two |" in reference.render([op])


def test_reference_check_fails_on_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "api-operations.md"
    assert cli.main(["reference", "--check", "--out", str(out)]) == 1
    assert "is missing" in capsys.readouterr().err
    assert cli.main(["reference", "--out", str(out)]) == 0
    assert cli.main(["reference", "--check", "--out", str(out)]) == 0
    out.write_text(out.read_text().replace("`approve` `restores`", "`patch` `restores`"))
    assert cli.main(["reference", "--check", "--out", str(out)]) == 1
    assert "differs from the code" in capsys.readouterr().err
