"""Which events a persisted object announces, with ids that repeat only for the same
occurrence, and bodies that the committed JSON Schemas (specs/events/) accept."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from dockyard.core import events
from dockyard.core.events import EventType
from dockyard.core.transitions import announced, approved, happened_at, rejected

SPECS = Path(__file__).resolve().parents[2] / "specs" / "events"


def _body(kind: str, status: dict[str, Any], spec: dict[str, Any] | None = None, **meta: Any):
    return {
        "kind": kind,
        "metadata": {"namespace": "shop", "name": "x", "uid": "u-1", "generation": 2, **meta},
        "spec": spec or {},
        "status": status,
    }


def _validate(event: events.Event) -> None:
    schema = json.loads((SPECS / f"{event.type.value}.json").read_text())
    jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    ).validate(json.loads(event.encoded()))


def _types(found: list[events.Event]) -> list[str]:
    return [e.type.value for e in found]


def test_every_event_type_has_a_committed_schema() -> None:
    assert events.check_schemas(SPECS) == []
    assert {p.stem for p in SPECS.glob("*.json")} == {t.value for t in EventType}


def test_an_environment_announces_ready_degraded_and_deletion() -> None:
    ready = announced("MODIFIED", _body("Environment", {"phase": "Ready"}))
    degraded = announced("MODIFIED", _body("Environment", {"phase": "Degraded", "message": "m"}))
    deleted = announced("DELETED", _body("Environment", {"phase": "Ready"}))
    assert (_types(ready), _types(degraded), _types(deleted)) == (
        ["environment.ready"],
        ["environment.degraded"],
        ["environment.deleted"],
    )
    assert announced("MODIFIED", _body("Environment", {"phase": "Provisioning"})) == []
    for event in ready + degraded + deleted:
        _validate(event)


def test_the_same_state_gives_the_same_id_and_a_new_generation_a_new_one() -> None:
    first = announced(None, _body("Environment", {"phase": "Ready"}))[0]
    again = announced("MODIFIED", _body("Environment", {"phase": "Ready", "message": "x"}))[0]
    later = announced("MODIFIED", _body("Environment", {"phase": "Ready"}, generation=3))[0]
    other = announced("MODIFIED", _body("Environment", {"phase": "Ready"}, uid="u-2"))[0]
    assert first.id == again.id
    assert len({first.id, later.id, other.id}) == 3


def _environment(phase: str, since: str) -> dict[str, Any]:
    ready = "True" if phase == "Ready" else "False"
    condition = {"type": "Ready", "status": ready, "lastTransitionTime": since}
    return _body("Environment", {"phase": phase, "conditions": [condition]})


def test_each_outage_and_recovery_at_one_generation_is_its_own_event() -> None:
    ready, degraded, recovered = (
        announced("MODIFIED", _environment(phase, since))[0]
        for phase, since in [
            ("Ready", "2026-12-04T10:00:00Z"),
            ("Degraded", "2026-12-04T11:00:00Z"),
            ("Ready", "2026-12-04T12:00:00Z"),
        ]
    )
    assert _types([ready, degraded, recovered]) == [
        "environment.ready",
        "environment.degraded",
        "environment.ready",
    ]
    assert len({ready.id, degraded.id, recovered.id}) == 3
    # The same stored state, seen again (a resync, a restart's listing): the same id.
    again = announced(None, _environment("Ready", "2026-12-04T12:00:00Z"))[0]
    assert again.id == recovered.id


def test_a_transition_says_when_it_happened_as_its_status_records_it() -> None:
    at = datetime(2026, 12, 4, 10, 0, tzinfo=UTC)
    ready = _environment("Ready", "2026-12-04T10:00:00Z")
    backup = _body("Backup", {"phase": "Failed", "completedAt": "2026-12-04T10:00:00Z"})
    drill_run = {"startedAt": "2026-12-04T09:00:00Z", "finishedAt": "2026-12-04T10:00:00Z",
                 "result": "Passed", "backup": "b"}  # fmt: skip
    drill = _body("RestoreDrill", {"lastRun": drill_run})
    approval = {"approvedBy": "carol", "approvedAt": "2026-12-04T10:00:00Z"}
    restore = _body("Restore", {"phase": "Restoring", "approval": approval})
    for body in (ready, backup, drill, restore):
        (found,) = announced("MODIFIED", body)
        assert happened_at(found, body) == at
    (deleted,) = announced("DELETED", ready)
    assert happened_at(deleted, ready) is None
    (untimed,) = announced("MODIFIED", _body("Backup", {"phase": "Completed"}))
    assert happened_at(untimed, _body("Backup", {"phase": "Completed"})) is None


def test_a_backup_announces_its_outcome_with_its_environment_and_size() -> None:
    spec = {"environmentRef": {"name": "shop-prod"}}
    done = announced("MODIFIED", _body("Backup", {"phase": "Completed", "size": 42}, spec))
    failed_status = {
        "phase": "Failed",
        "message": "pg_dump failed",
        "conditions": [
            {"type": "Completed", "status": "False", "reason": "DumpFailed",
             "lastTransitionTime": "2026-12-04T10:00:00Z"},
        ],
    }  # fmt: skip
    failed = announced("MODIFIED", _body("Backup", failed_status, spec))
    assert _types(done) == ["backup.completed"]
    assert _types(failed) == ["backup.failed"]
    assert done[0].body()["data"]["environment"] == "shop-prod"
    assert done[0].body()["data"]["sizeBytes"] == 42
    assert failed[0].body()["data"]["reason"] == "DumpFailed"
    assert announced("MODIFIED", _body("Backup", {"phase": "Running"}, spec)) == []
    for event in done + failed:
        _validate(event)


def test_a_restore_announces_approval_once_whichever_door_saw_it() -> None:
    spec = {"source": {"backupRef": {"name": "b"}}, "target": {"name": "shop-prod"}}
    waiting = announced("MODIFIED", _body("Restore", {"phase": "AwaitingApproval"}, spec))
    status = {"phase": "Restoring", "approval": {"approvedBy": "carol"}}
    body = _body("Restore", status, spec)
    seen = announced("MODIFIED", body)
    assert _types(waiting) == ["restore.awaiting_approval"]
    assert _types(seen) == ["restore.approved"]
    # The API announces the same approval from the object it patched: the same id.
    from_api = approved(_body("Restore", {"phase": "AwaitingApproval"}, spec), "carol")
    assert from_api.id == seen[0].id
    assert seen[0].body()["data"]["actor"] == "carol"
    done = announced("MODIFIED", _body("Restore", {**status, "phase": "Completed"}, spec))
    assert _types(done) == ["restore.approved", "restore.completed"]
    for event in waiting + done:
        _validate(event)


def test_a_restore_announces_its_rejection_once_whichever_door_saw_it() -> None:
    spec = {"source": {"backupRef": {"name": "b"}}, "target": {"name": "shop-prod"}}
    approval = {"rejectedBy": "dave", "rejectionReason": "wrong backup"}
    body = _body("Restore", {"phase": "Failed", "approval": approval}, spec)
    seen = announced("MODIFIED", body)
    assert _types(seen) == ["restore.rejected", "restore.failed"]
    data = seen[0].body()["data"]
    assert (data["actor"], data["reason"], data["message"]) == ("dave", "Rejected", "wrong backup")
    # The API announces it from the object it patched, still AwaitingApproval: the same id.
    waiting = _body("Restore", {"phase": "AwaitingApproval"}, spec)
    assert rejected(waiting, "dave", "wrong backup").id == seen[0].id
    assert rejected(waiting, "dave", None).body()["data"].get("message") is None
    for event in seen:
        _validate(event)


def test_each_drill_run_is_its_own_event() -> None:
    def run(started: str, result: str) -> dict[str, Any]:
        return {"lastRun": {"backup": "b", "startedAt": started, "result": result,
                            "restoreSeconds": 3.5, "backupAgeSeconds": 60,
                            "failedChecks": [{"name": "rows", "reason": "0 rows"}]}}  # fmt: skip

    spec = {"environmentRef": {"name": "shop-prod"}}

    def drill(started: str, result: str) -> list[events.Event]:
        return announced("MODIFIED", _body("RestoreDrill", run(started, result), spec))

    one = drill("2026-12-04T10:00:00Z", "Passed")
    two = drill("2026-12-04T11:00:00Z", "Failed")
    three = drill("2026-12-04T12:00:00Z", "Passed")
    assert _types(one + two + three) == ["drill.passed", "drill.failed", "drill.passed"]
    assert one[0].id != three[0].id
    assert two[0].body()["data"]["failedChecks"] == 1
    for event in one + two:
        _validate(event)


def test_a_scaling_policy_announces_each_pause_and_resume() -> None:
    def paused(status: str, reason: str, since: str) -> dict[str, Any]:
        return {"conditions": [{"type": "Paused", "status": status, "reason": reason,
                                "lastTransitionTime": since}]}  # fmt: skip

    spec = {"environmentRef": {"name": "shop-prod"}}

    def policy(status: str, reason: str, since: str) -> list[events.Event]:
        return announced("MODIFIED", _body("ScalingPolicy", paused(status, reason, since), spec))

    on = policy("True", "PausedBySpec", "t1")
    off = policy("False", "NotPaused", "t2")
    again = policy("True", "PausedBySpec", "t3")
    assert _types(on + off + again) == ["scaling.paused", "scaling.resumed", "scaling.paused"]
    assert on[0].id != again[0].id
    for event in on + off:
        _validate(event)


def test_unknown_kinds_and_deletions_of_runs_announce_nothing() -> None:
    assert announced("MODIFIED", _body("BackupSchedule", {"phase": "Ready"})) == []
    assert announced("DELETED", _body("Backup", {"phase": "Completed"})) == []


def test_an_event_carries_the_data_of_its_family_only() -> None:
    ref = events.ObjectRef(kind="Backup", namespace="n", name="b", uid="u", generation=1)
    with pytest.raises(TypeError):
        events.make(EventType.BACKUP_COMPLETED, events.EnvironmentEventData(object=ref))
