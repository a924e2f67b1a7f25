"""The pure parts of the Restore life cycle: the safety Backup it creates, the artifact a
Backup names, the row-count comparison that gates the switch-over, which of its databases
a restore leaves to be dropped, and what its completion records."""

from __future__ import annotations

import pytest

from dockyard.core.models.backup import Backup
from dockyard.core.models.restore import Restore, RestorePhase, RestorePlan, RestoreStatus
from dockyard.operator.database import (
    database_identity,
    retired_database_name,
    staging_database_name,
)
from dockyard.operator.restores.leftovers import leftovers
from dockyard.operator.restores.planning import plan_is_fixed
from dockyard.operator.restores.records import completion
from dockyard.operator.restores.safety import safety_backup, safety_backup_name
from dockyard.operator.runs.context import SourceUnavailable
from dockyard.operator.runs.restoring import RowCountCheck, backup_artifact
from tests.unit.test_restore_plan import make_backup

UID = "0f8e2b6c-1d2a-4c3b-9a8f-7e6d5c4b3a21"


def _restore(name: str = "undo") -> Restore:
    return Restore.model_validate(
        {
            "metadata": {"name": name, "namespace": "shop-ns", "uid": UID},
            "spec": {"source": {"backupRef": {"name": "shop-1"}}},
        }
    )


def test_the_safety_backup_goes_where_the_source_is_with_its_key_and_is_not_owned() -> None:
    source = make_backup("shop-1")
    manifest = safety_backup(_restore(), source, "live")

    assert manifest["metadata"]["name"] == "undo-safety"
    assert manifest["metadata"]["namespace"] == "shop-ns"
    assert "ownerReferences" not in manifest["metadata"]
    assert manifest["metadata"]["labels"]["dockyard.io/restore"] == "undo"
    assert manifest["metadata"]["labels"]["dockyard.io/environment"] == "live"
    backup = Backup.model_validate(manifest)
    assert backup.spec.environment_ref.name == "live"
    assert backup.spec.storage == source.spec.storage
    assert backup.spec.encryption == source.spec.encryption


def test_safety_backup_names_fit_an_object_name() -> None:
    name = safety_backup_name("r" * 253)
    assert len(name) <= 253
    assert name.endswith("-safety")


def test_a_completed_backup_names_the_artifact_of_its_last_attempt() -> None:
    backup = make_backup("shop-1").model_copy(deep=True)
    backup.metadata.namespace, backup.metadata.uid = "ns", UID
    backup.status.attempts, backup.status.sha256 = 2, "ab" * 32
    assert backup_artifact(backup) == "ns/shop-1/0f8e2b6c-2.dkbk"


def test_a_backup_without_a_completed_artifact_cannot_be_restored() -> None:
    with pytest.raises(SourceUnavailable, match="no completed artifact"):
        backup_artifact(make_backup("shop-5", phase="Running"))


def test_row_counts_pass_only_when_every_table_matches() -> None:
    same = RowCountCheck({"public.a": 3, "public.b": 0}, {"public.a": 3, "public.b": 0})
    assert same.passed
    assert same.describe() == "all 2 tables hold the rows the manifest recorded"

    off = RowCountCheck({"public.a": 3, "public.b": 1}, {"public.a": 2, "public.c": 5})
    assert not off.passed
    assert off.mismatches == [
        "public.a: 3 rows in the manifest, 2 restored",
        "public.b: 1 rows in the manifest, table missing",
        "public.c: not in the manifest, 5 rows restored",
    ]


def test_a_long_mismatch_list_is_cut_short_and_says_how_many_more() -> None:
    expected = {f"public.t{i}": 1 for i in range(8)}
    described = RowCountCheck(expected, {}).describe()
    assert described.startswith("row counts differ from the manifest: public.t0:")
    assert described.endswith("(and 3 more)")


def test_the_plan_follows_new_backups_only_until_it_waits_for_approval() -> None:
    status = _restore().status
    assert not plan_is_fixed(status)
    assert not plan_is_fixed(status.model_copy(update={"phase": RestorePhase.PENDING}))
    # What the approver sees is what runs.
    assert plan_is_fixed(status.model_copy(update={"phase": RestorePhase.AWAITING_APPROVAL}))
    assert plan_is_fixed(status.model_copy(update={"phase": RestorePhase.BACKING_UP}))
    # A retry, back in Pending, keeps the plan (never its own safety backup as "latest").
    assert plan_is_fixed(status.model_copy(update={"attempts": 1}))
    assert plan_is_fixed(status.model_copy(update={"safety_backup": "undo-safety"}))


# -- the databases a restore leaves ------------------------------------------------------------

OTHER_UID = "0f8e2b6c-1d2a-4c3b-9a8f-000000000002"
STAGING = [staging_database_name("r", UID, n) for n in (1, 2)]
RETIRED = retired_database_name(UID)
# On the server beside them: the target's live database (once a staging database of this
# restore, renamed by its switch-over), another restore's, a drill's of the same uid.
OTHERS = [
    database_identity("shop-ns", "live")[0],
    staging_database_name("r", OTHER_UID, 1),
    retired_database_name(OTHER_UID),
    staging_database_name("d", UID, 1),
    staging_database_name("r", UID),
]


def _status(phase: RestorePhase | None, staging: str | None = None) -> RestoreStatus:
    return RestoreStatus(phase=phase, attempts=2, staging_database=staging)


@pytest.mark.parametrize(
    "phase",
    [RestorePhase.PENDING, RestorePhase.BACKING_UP, RestorePhase.COMPLETED, RestorePhase.FAILED],
)
def test_outside_an_attempt_every_database_of_the_restore_is_left_over(
    phase: RestorePhase,
) -> None:
    on_server = [*STAGING, RETIRED, *OTHERS]

    assert leftovers(UID, _status(phase), on_server) == {*STAGING, RETIRED}


@pytest.mark.parametrize("phase", [RestorePhase.RESTORING, RestorePhase.VERIFYING])
def test_an_attempt_keeps_its_staging_database_and_the_mark_of_its_switch_over(
    phase: RestorePhase,
) -> None:
    # The retired database tells recovery that the switch-over happened, until Completed.
    on_server = [*STAGING, RETIRED, *OTHERS]

    assert leftovers(UID, _status(phase, STAGING[1]), on_server) == {STAGING[0]}


def test_a_deleted_restore_leaves_every_database_of_its_own_and_none_else() -> None:
    assert leftovers(UID, None, [*STAGING, RETIRED, *OTHERS]) == {*STAGING, RETIRED}


# -- what a completion records -----------------------------------------------------------------

PLAN = RestorePlan(
    backup="shop-1",
    source_environment="shop",
    target="live",
    in_place=False,
    estimated_duration_seconds=60,
)


def test_a_completion_records_how_long_the_attempt_took() -> None:
    done, message = completion(
        _status(RestorePhase.VERIFYING, STAGING[1]), PLAN, 12.3456, "rows match", generation=1
    )

    assert done.phase is RestorePhase.COMPLETED
    assert done.duration_seconds == 12.346
    assert done.staging_database is None
    assert message == "Environment live now runs on backup shop-1 (restored in 12.3s; rows match)"


def test_a_restore_completed_by_recovery_records_no_made_up_duration() -> None:
    # The pass that switched over died with its clock: no 0.0 s, which would say it was
    # instant, nor a figure that would reach later restores' estimates.
    done, message = completion(
        _status(RestorePhase.VERIFYING, STAGING[1]),
        PLAN,
        None,
        "the switch-over had completed before the operator restarted",
        generation=1,
    )

    assert done.phase is RestorePhase.COMPLETED
    assert done.duration_seconds is None
    assert "restored in" not in message
    assert message.endswith("restarted; how long it took was not measured)")
