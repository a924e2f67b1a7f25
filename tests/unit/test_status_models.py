"""The base status models: shared fields, worded per kind, and their transitions."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import pytest
from pydantic import Field

from dockyard.core.crds import ALL_KINDS, structural_schema
from dockyard.core.models.backup import BackupConditionType, BackupPhase, BackupStatus
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.restore import RestoreConditionType, RestorePhase, RestoreStatus
from dockyard.core.models.status import MESSAGE_MAX_LENGTH, RunStatus, Status

T0 = datetime(2024, 5, 1, 3, 0, tzinfo=UTC)


def _status_model(kind: type) -> type[Status]:
    annotation = kind.model_fields["status"].annotation
    assert isinstance(annotation, type)
    assert issubclass(annotation, Status)
    return annotation


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda kind: kind.__name__)
def test_every_kind_status_is_a_status_that_names_its_own_conditions(kind: type) -> None:
    model = _status_model(kind)
    generic = Status.model_fields["conditions"].description
    assert model.model_fields["conditions"].description != generic
    schema = structural_schema(model)
    assert schema["properties"]["conditions"]["description"].startswith(("Current", "Accepted"))


def test_a_kind_words_an_inherited_field_without_changing_its_parent() -> None:
    backup = BackupStatus.model_fields["message"].description
    restore = RestoreStatus.model_fields["message"].description
    assert backup == "Human-readable detail of the phase, such as why the backup failed."
    assert restore == "Human-readable detail of the phase, such as why the restore failed."
    assert RunStatus.model_fields["message"].description == "Human-readable detail of the phase."


def test_an_inherited_field_keeps_its_validation() -> None:
    with pytest.raises(ValueError, match="greater than or equal to 0"):
        BackupStatus.model_validate({"observedGeneration": -1})


def test_with_condition_returns_a_copy_and_leaves_the_status_as_it_was() -> None:
    status = BackupStatus()
    ready = status.with_condition("Ready", True, "Completed", "stored", generation=2, now=T0)
    assert status.conditions == []
    assert ready.is_true("Ready")
    condition = ready.condition("Ready")
    assert condition is not None
    assert (condition.observed_generation, condition.last_transition_time) == (2, T0)


def test_with_condition_keeps_the_transition_time_while_the_status_holds() -> None:
    first = BackupStatus().with_condition("Ready", False, "Running", "a", generation=1, now=T0)
    later = T0 + timedelta(minutes=5)
    same = first.with_condition("Ready", False, "Running", "b", generation=1, now=later)
    flipped = first.with_condition("Ready", True, "Completed", "c", generation=1, now=later)
    unknown = first.with_condition("Ready", ConditionStatus.UNKNOWN, "Lost", "d", generation=1)
    assert same.conditions[0].last_transition_time == T0
    assert flipped.conditions[0].last_transition_time == later
    assert unknown.conditions[0].status is ConditionStatus.UNKNOWN


def test_observed_records_the_generation_acted_on() -> None:
    assert BackupStatus().observed(4).observed_generation == 4


def test_running_starts_an_attempt_in_the_kinds_running_phase() -> None:
    status = BackupStatus(completed_at=T0).running("Attempt 2 running", attempt=2, at=T0)
    assert status.phase is BackupPhase.RUNNING
    assert (status.attempts, status.started_at, status.completed_at) == (2, T0, None)
    assert status.message == "Attempt 2 running"
    assert not status.is_done


def test_a_kind_without_a_running_phase_names_the_phase_it_runs_in() -> None:
    status = RestoreStatus().running("restoring", attempt=1, phase=RestorePhase.RESTORING)
    assert status.phase is RestorePhase.RESTORING


def test_completed_ends_the_run_with_the_outcome_condition_true() -> None:
    running = BackupStatus().running("go", attempt=1)
    done = running.completed("Stored 10 bytes", generation=3, detail="stored", at=T0)
    assert done.phase is BackupPhase.COMPLETED
    assert (done.message, done.completed_at) == ("Stored 10 bytes", T0)
    ready = done.condition(BackupConditionType.READY)
    assert ready is not None
    assert (ready.status, ready.reason, ready.message) == (
        ConditionStatus.TRUE,
        "Completed",
        "stored",
    )
    assert ready.observed_generation == 3
    assert done.is_done
    assert running.phase is BackupPhase.RUNNING


def test_failed_ends_the_run_with_the_reason_on_the_outcome_condition() -> None:
    failed = RestoreStatus().failed("SourceGone", "the backup is gone", generation=1)
    assert failed.phase is RestorePhase.FAILED
    assert failed.completed_at is not None
    completed = failed.condition(RestoreConditionType.COMPLETED)
    assert completed is not None
    assert (completed.status, completed.reason) == (ConditionStatus.FALSE, "SourceGone")
    assert failed.is_done


def test_retrying_waits_for_the_next_attempt_with_or_without_a_condition() -> None:
    running = BackupStatus().running("go", attempt=1)
    quiet = running.retrying("retry in 10s")
    loud = running.retrying("retry in 10s", reason="Interrupted", generation=1)
    assert (quiet.phase, quiet.completed_at, quiet.conditions) == (BackupPhase.PENDING, None, [])
    ready = loud.condition(BackupConditionType.READY)
    assert ready is not None
    assert ready.reason == "Interrupted"


def test_messages_are_cut_to_what_the_api_server_accepts() -> None:
    failed = BackupStatus().failed("Failed", "x" * (MESSAGE_MAX_LENGTH + 10), generation=None)
    assert failed.message is not None
    assert len(failed.message) == MESSAGE_MAX_LENGTH
    BackupStatus.model_validate(failed.model_dump())


def test_body_is_the_status_of_a_merge_patch() -> None:
    status = BackupStatus(size=10, key_id="k1")
    body = status.body(include={"size", "key_id", "location"})
    assert body == {"size": 10, "keyId": "k1", "location": None}
    assert "keyId" not in status.body(exclude={"key_id"})


def test_a_run_phase_enum_must_have_the_phases_the_transitions_use() -> None:
    class Half(StrEnum):
        PENDING = "Pending"

    with pytest.raises(TypeError, match="COMPLETED, FAILED"):

        class _Broken(RunStatus):
            phases = Half
            outcome_condition = "Ready"
            phase: Half | None = Field(default=None, description="Phase.")


def test_the_conditions_module_can_be_imported_first() -> None:
    # dockyard.core.models.status imports dockyard.core.conditions, which imports the
    # models package: either may come first.
    code = "import dockyard.core.conditions, dockyard.core.models.status"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_runner_reports_exactly_its_artifact() -> None:
    stored = BackupStatus(phase=BackupPhase.RUNNING, attempts=1).with_artifact(
        location="file:///backups/team/bk.dkbk",
        size=10,
        sha256="a" * 64,
        key_id="k1",
        tables={"public.b": 3, "public.a": 1},
        completed_at=T0,
    )
    assert stored.phase is BackupPhase.RUNNING
    assert stored.body(include=BackupStatus.ARTIFACT_FIELDS) == {
        "location": "file:///backups/team/bk.dkbk",
        "size": 10,
        "sha256": "a" * 64,
        "keyId": "k1",
        "manifest": {"tables": [{"name": "public.a", "rows": 1}, {"name": "public.b", "rows": 3}]},
        "completedAt": "2024-05-01T03:00:00Z",
    }
