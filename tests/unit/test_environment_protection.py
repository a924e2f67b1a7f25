"""BackupsHealthy and DrillPassing: what an environment's backups and drills say about it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dockyard.core.models.backup import Backup
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.restore_drill import RestoreDrill
from dockyard.operator.environments import status as report
from dockyard.operator.environments.protection import protection_report
from tests.unit.test_environment_status import READY_DB, _deployment, _env

T0 = datetime(2026, 11, 26, 3, 0, tzinfo=UTC)


def _backup(name: str, phase: str, hours: int, env: str = "shop", **status: Any) -> Backup:
    return Backup.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": "team-a",
                "creationTimestamp": (T0 + timedelta(hours=hours)).isoformat(),
            },
            "spec": {
                "environmentRef": {"name": env},
                "storage": {"filesystem": {"path": "/backups"}},
                "encryption": {"keySecretRef": {"name": "k", "key": "key"}},
            },
            "status": {
                "phase": phase,
                **(
                    {"completedAt": (T0 + timedelta(hours=hours, minutes=5)).isoformat()}
                    if phase == "Completed"
                    else {}
                ),
                **status,
            },
        }
    )


def _drill(name: str, run: dict[str, Any] | None, env: str = "shop") -> RestoreDrill:
    return RestoreDrill.model_validate(
        {
            "metadata": {"name": name, "namespace": "team-a"},
            "spec": {"environmentRef": {"name": env}, "schedule": "@daily"},
            "status": {"lastRun": run} if run else {},
        }
    )


def _run(backup: str, result: str, hours: int, **extra: Any) -> dict[str, Any]:
    at = T0 + timedelta(hours=hours)
    return {
        "backup": backup,
        "result": result,
        "startedAt": at.isoformat(),
        "finishedAt": (at + timedelta(minutes=2)).isoformat(),
        **extra,
    }


def test_the_newest_completed_backup_makes_backups_healthy() -> None:
    verified: dict[str, Any] = {"drill": "weekly", "at": T0.isoformat()}
    found = protection_report(
        "shop",
        [
            _backup("old", "Completed", 1, size=10, verified=verified),
            _backup("new", "Completed", 5, size=20),
            _backup("other-env", "Completed", 9, env="cart"),
            _backup("running", "Running", 6),
        ],
        [],
    )
    assert found.backups.status is ConditionStatus.TRUE
    assert found.backups.reason == "Completed"
    assert found.last_backup is not None
    assert (found.last_backup.name, found.last_backup.size) == ("new", 20)
    assert found.last_backup.verified_by is None


def test_a_backup_a_later_drill_failed_on_is_not_said_to_be_restored_by_a_drill() -> None:
    verified: dict[str, Any] = {"drill": "weekly", "at": T0.isoformat()}
    failed = {
        "type": "Verified",
        "status": "False",
        "reason": "DrillFailed",
        "message": "RestoreDrill weekly failed: checksum: mismatch",
        "lastTransitionTime": (T0 + timedelta(hours=8)).isoformat(),
    }
    proven = _backup("new", "Completed", 5, verified=verified)
    undone = _backup("new", "Completed", 5, verified=verified, conditions=[failed])

    assert "drill weekly restored it" in protection_report("shop", [proven], []).backups.message
    found = protection_report("shop", [undone], [])

    assert found.last_backup is not None
    assert found.last_backup.verified_by is None
    assert "drill" not in found.backups.message


def test_a_newest_backup_that_failed_is_unhealthy_and_says_why() -> None:
    found = protection_report(
        "shop",
        [
            _backup("good", "Completed", 1),
            _backup("bad", "Failed", 4, message="pg_dump: connection refused"),
        ],
        [],
    )
    assert (found.backups.status, found.backups.reason) == (ConditionStatus.FALSE, "BackupFailed")
    assert "bad" in found.backups.message
    assert "connection refused" in found.backups.message
    assert found.last_backup is not None
    assert found.last_backup.name == "good"


def test_no_backup_and_no_drill_are_said_plainly() -> None:
    found = protection_report("shop", [_backup("x", "Completed", 1, env="cart")], [])
    assert (found.backups.status, found.backups.reason) == (ConditionStatus.FALSE, "NoBackups")
    assert (found.drill.status, found.drill.reason) == (ConditionStatus.FALSE, "NoDrill")
    assert found.last_backup is None
    assert found.last_drill is None


def test_drill_passing_follows_the_newest_run_of_any_of_its_drills() -> None:
    failed = _run(
        "b1",
        "Failed",
        8,
        failedChecks=[{"check": "restore", "reason": "checksum mismatch: expected x"}],
    )
    drills = [
        _drill("weekly", _run("b0", "Passed", 2, restoreSeconds=3.5)),
        _drill("nightly", failed),
    ]
    found = protection_report("shop", [], drills)
    assert (found.drill.status, found.drill.reason) == (ConditionStatus.FALSE, "Failed")
    assert "nightly" in found.drill.message
    assert "checksum mismatch" in found.drill.message
    assert found.last_drill is not None
    assert found.last_drill.drill == "nightly"

    drills.append(_drill("again", _run("b2", "Passed", 9, restoreSeconds=4.0)))
    found = protection_report("shop", [], drills)
    assert (found.drill.status, found.drill.reason) == (ConditionStatus.TRUE, "Passed")
    assert found.last_drill is not None
    assert (found.last_drill.drill, found.last_drill.backup) == ("again", "b2")
    assert found.last_drill.restore_seconds == 4.0


def test_drills_that_have_not_run_leave_it_unknown() -> None:
    found = protection_report("shop", [], [_drill("weekly", None), _drill("x", None, env="cart")])
    assert (found.drill.status, found.drill.reason) == (ConditionStatus.UNKNOWN, "NotRunYet")
    assert "weekly" in found.drill.message
    assert "x" not in found.drill.message.split()


def test_the_status_carries_both_conditions_only_for_an_environment_with_a_database() -> None:
    workload = report.WorkloadReport.from_deployment(_deployment(ready=1), desired=1)
    protection = protection_report(
        "shop", [_backup("new", "Completed", 5)], [_drill("weekly", _run("new", "Passed", 6))]
    )
    status = report.summarize(_env(), database=READY_DB, workload=workload, protection=protection)
    kinds = {c.type: c.status for c in status.conditions}
    assert kinds["BackupsHealthy"] is ConditionStatus.TRUE
    assert kinds["DrillPassing"] is ConditionStatus.TRUE
    assert status.last_backup is not None
    assert status.last_drill is not None

    # Without a listing (protection None) the previous verdicts stay.
    kept = report.summarize(
        _env(status=status.model_dump(mode="json", by_alias=True)),
        database=READY_DB,
        workload=workload,
    )
    assert {c.type for c in kept.conditions} >= {"BackupsHealthy", "DrillPassing"}
    assert kept.last_backup == status.last_backup

    # No database: neither applies.
    bare = report.summarize(
        _env(status=status.model_dump(mode="json", by_alias=True)),
        database=None,
        workload=workload,
        protection=protection,
    )
    assert {c.type for c in bare.conditions} == {"Ready", "DatabaseReady", "WorkloadAvailable"}
    assert bare.last_backup is None
    assert bare.last_drill is None
