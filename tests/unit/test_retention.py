"""Grandfather-father-son retention: what is kept, why, and what is never deleted."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dockyard.core.models.backup import Backup, BackupPhase
from dockyard.core.models.backup_schedule import BackupRetention
from dockyard.core.models.restore import Restore
from dockyard.core.models.restore_drill import RestoreDrill
from dockyard.core.retention import (
    BackupRecord,
    KeepReason,
    apply_retention,
    backups_in_use,
    newest_verified,
    ttl_expiry,
)

UTC_ZONE = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")
COMPLETED = BackupPhase.COMPLETED


def done(name: str, at: str, verified: str | None = None) -> BackupRecord:
    return BackupRecord(
        name=name,
        phase=COMPLETED,
        completed_at=datetime.fromisoformat(at),
        verified_at=datetime.fromisoformat(verified) if verified else None,
    )


def policy(**counts: int) -> BackupRetention:
    return BackupRetention.model_validate(counts)


def test_keep_last_keeps_the_newest_n() -> None:
    backups = [done(f"b{day}", f"2024-01-0{day}T03:00:00+00:00") for day in range(1, 6)]

    decision = apply_retention(backups, policy(keepLast=3), UTC_ZONE)

    assert [k.name for k in decision.keep] == ["b3", "b4", "b5"]
    assert decision.delete == ("b1", "b2")
    assert decision.reasons("b5") == (KeepReason.LAST,)


def test_keep_daily_keeps_the_newest_backup_of_each_recent_day() -> None:
    backups = [
        done("mon-early", "2024-01-01T01:00:00+00:00"),
        done("mon-late", "2024-01-01T13:00:00+00:00"),
        done("tue-early", "2024-01-02T01:00:00+00:00"),
        done("tue-late", "2024-01-02T13:00:00+00:00"),
        done("wed", "2024-01-03T01:00:00+00:00"),
    ]

    decision = apply_retention(backups, policy(keepDaily=2), UTC_ZONE)

    assert [k.name for k in decision.keep] == ["tue-late", "wed"]
    assert decision.delete == ("mon-early", "mon-late", "tue-early")


def test_days_without_a_backup_do_not_count() -> None:
    backups = [
        done("jan1", "2024-01-01T03:00:00+00:00"),
        done("jan5", "2024-01-05T03:00:00+00:00"),
        done("jan10", "2024-01-10T03:00:00+00:00"),
    ]

    decision = apply_retention(backups, policy(keepDaily=2), UTC_ZONE)

    assert decision.delete == ("jan1",)


def test_days_are_days_in_the_schedules_time_zone() -> None:
    backups = [
        done("dec31", "2023-12-31T12:00:00+00:00"),
        done("jan1-berlin", "2024-01-01T22:30:00+00:00"),  # 23:30 in Berlin, January 1st
        done("jan2-berlin", "2024-01-01T23:30:00+00:00"),  # 00:30 in Berlin, January 2nd
    ]

    in_utc = apply_retention(backups, policy(keepDaily=2), UTC_ZONE)
    in_berlin = apply_retention(backups, policy(keepDaily=2), BERLIN)

    assert in_utc.delete == ("jan1-berlin",)
    assert in_berlin.delete == ("dec31",)


def test_keep_weekly_uses_iso_weeks() -> None:
    backups = [
        done("week1-mon", "2024-01-01T03:00:00+00:00"),
        done("week1-sun", "2024-01-07T03:00:00+00:00"),
        done("week2-mon", "2024-01-08T03:00:00+00:00"),
        done("week3-wed", "2024-01-17T03:00:00+00:00"),
    ]

    decision = apply_retention(backups, policy(keepWeekly=2), UTC_ZONE)

    assert [k.name for k in decision.keep] == ["week2-mon", "week3-wed"]


def test_keep_monthly_keeps_the_newest_of_each_recent_month() -> None:
    backups = [
        done("jan", "2024-01-31T03:00:00+00:00"),
        done("feb-1", "2024-02-01T03:00:00+00:00"),
        done("feb-29", "2024-02-29T03:00:00+00:00"),
        done("mar", "2024-03-15T03:00:00+00:00"),
    ]

    decision = apply_retention(backups, policy(keepMonthly=2), UTC_ZONE)

    assert [k.name for k in decision.keep] == ["feb-29", "mar"]


def test_rules_apply_independently_and_every_reason_is_reported() -> None:
    backups = [
        done("old", "2023-11-15T03:00:00+00:00"),
        done("dec", "2023-12-20T03:00:00+00:00"),
        done("jan-a", "2024-01-10T03:00:00+00:00"),
        done("jan-b", "2024-01-11T03:00:00+00:00"),
    ]

    decision = apply_retention(
        backups, policy(keepLast=1, keepDaily=2, keepWeekly=1, keepMonthly=2), UTC_ZONE
    )

    assert decision.reasons("jan-b") == (
        KeepReason.LAST,
        KeepReason.DAILY,
        KeepReason.WEEKLY,
        KeepReason.MONTHLY,
    )
    assert decision.reasons("jan-a") == (KeepReason.DAILY,)
    assert decision.reasons("dec") == (KeepReason.MONTHLY,)
    assert decision.delete == ("old",)


def test_the_newest_verified_backup_is_kept_whatever_the_counts() -> None:
    backups = [
        done("verified-old", "2024-01-01T03:00:00+00:00", verified="2024-01-01T04:00:00+00:00"),
        done("verified", "2024-01-02T03:00:00+00:00", verified="2024-01-02T04:00:00+00:00"),
        done("b3", "2024-01-03T03:00:00+00:00"),
        done("b4", "2024-01-04T03:00:00+00:00"),
    ]

    decision = apply_retention(backups, policy(keepLast=1), UTC_ZONE)

    assert decision.reasons("verified") == (KeepReason.NEWEST_VERIFIED,)
    assert decision.delete == ("verified-old", "b3")


def test_the_newest_verified_backup_is_the_newest_backup_not_the_latest_verification() -> None:
    backups = [
        # Verified last, but an older backup than the other verified one.
        done("older", "2024-01-01T03:00:00+00:00", verified="2024-01-05T04:00:00+00:00"),
        done("newer", "2024-01-02T03:00:00+00:00", verified="2024-01-02T04:00:00+00:00"),
    ]

    protected = newest_verified(backups)

    assert protected is not None
    assert protected.name == "newer"


@pytest.mark.parametrize("phase", [BackupPhase.PENDING, BackupPhase.RUNNING, None])
def test_backups_in_flight_are_never_deleted(phase: BackupPhase | None) -> None:
    backups = [
        BackupRecord("in-flight", phase),
        done("b1", "2024-01-01T03:00:00+00:00"),
        done("b2", "2024-01-02T03:00:00+00:00"),
    ]

    decision = apply_retention(backups, policy(keepLast=1), UTC_ZONE)

    assert decision.reasons("in-flight") == (KeepReason.NOT_COMPLETED,)
    assert decision.delete == ("b1",)


def test_a_failure_stays_until_a_backup_succeeds_after_it() -> None:
    backups = [
        BackupRecord("failed-old", BackupPhase.FAILED, datetime(2024, 1, 1, tzinfo=UTC)),
        done("ok", "2024-01-02T03:00:00+00:00"),
        BackupRecord("failed-new", BackupPhase.FAILED, datetime(2024, 1, 3, tzinfo=UTC)),
    ]

    decision = apply_retention(backups, policy(keepLast=5), UTC_ZONE)

    assert decision.reasons("failed-new") == (KeepReason.NOT_COMPLETED,)
    assert decision.delete == ("failed-old",)


def test_failures_stay_while_nothing_ever_succeeded() -> None:
    backups = [BackupRecord("failed", BackupPhase.FAILED, datetime(2024, 1, 1, tzinfo=UTC))]

    assert apply_retention(backups, policy(keepLast=1), UTC_ZONE).delete == ()


def test_equal_completion_times_are_ordered_by_name() -> None:
    backups = [done(name, "2024-01-01T03:00:00+00:00") for name in ("c", "a", "b")]

    decision = apply_retention(backups, policy(keepLast=1), UTC_ZONE)

    assert [k.name for k in decision.keep] == ["c"]
    assert decision.delete == ("a", "b")


def test_nothing_at_all_is_nothing_to_do() -> None:
    decision = apply_retention([], policy(keepLast=1), UTC_ZONE)

    assert (decision.keep, decision.delete) == ((), ())


def test_a_record_is_read_from_a_backup_object() -> None:
    backup = Backup.model_validate(
        {
            "metadata": {"name": "nightly-1"},
            "spec": {
                "environmentRef": {"name": "shop"},
                "storage": {"filesystem": {"path": "/backups"}},
                "encryption": {"keySecretRef": {"name": "k", "key": "key"}},
            },
            "status": {
                "phase": "Completed",
                "completedAt": "2024-01-01T03:00:00Z",
                "verified": {"drill": "nightly", "at": "2024-01-01T04:00:00Z"},
            },
        }
    )

    assert BackupRecord.of(backup) == BackupRecord(
        "nightly-1",
        COMPLETED,
        datetime(2024, 1, 1, 3, tzinfo=UTC),
        datetime(2024, 1, 1, 4, tzinfo=UTC),
    )


def test_a_record_does_not_count_a_verification_a_later_drill_failure_undid() -> None:
    backup = Backup.model_validate(
        {
            "metadata": {"name": "nightly-2", "deletionTimestamp": "2024-01-03T00:00:00Z"},
            "spec": {
                "environmentRef": {"name": "shop"},
                "storage": {"filesystem": {"path": "/backups"}},
                "encryption": {"keySecretRef": {"name": "k", "key": "key"}},
            },
            "status": {
                "phase": "Completed",
                "completedAt": "2024-01-02T03:00:00Z",
                "verified": {"drill": "nightly", "at": "2024-01-02T04:00:00Z"},
                "conditions": [
                    {
                        "type": "Verified",
                        "status": "False",
                        "reason": "DrillFailed",
                        "message": "RestoreDrill nightly failed: checksum",
                        "lastTransitionTime": "2024-01-02T10:00:00Z",
                    }
                ],
            },
        }
    )

    record = BackupRecord.of(backup)

    assert (record.verified_at, record.deleting, record.is_completed) == (None, True, False)
    assert record.failed_drill


def _failed_drill(name: str, at: str) -> BackupRecord:
    return BackupRecord(name, COMPLETED, datetime.fromisoformat(at), failed_drill=True)


def test_a_backup_a_drill_failed_on_displaces_no_backup_that_may_restore() -> None:
    backups = [
        done("b1", "2024-01-01T03:00:00+00:00"),  # never drilled: it may restore
        _failed_drill("b2", "2024-01-02T03:00:00+00:00"),  # known not to
    ]

    decision = apply_retention(backups, policy(keepLast=1, keepDaily=1), UTC_ZONE)

    assert decision.reasons("b1") == (KeepReason.LAST, KeepReason.DAILY)
    # Kept while it is newer than any backup that may restore: the failure stays visible.
    assert decision.reasons("b2") == (KeepReason.FAILED_DRILL,)
    assert decision.delete == ()


def test_a_backup_a_drill_failed_on_goes_once_a_newer_one_may_restore() -> None:
    backups = [
        done("b1", "2024-01-01T03:00:00+00:00"),
        _failed_drill("b2", "2024-01-02T03:00:00+00:00"),
        done("b3", "2024-01-03T03:00:00+00:00"),
    ]

    decision = apply_retention(backups, policy(keepLast=2), UTC_ZONE)

    assert [k.name for k in decision.keep] == ["b1", "b3"]
    assert decision.delete == ("b2",)


def test_a_verified_backup_a_later_drill_failed_on_does_not_displace_the_one_that_passed() -> None:
    backups = [
        done("b1", "2024-01-01T03:00:00+00:00", verified="2024-01-01T04:00:00+00:00"),
        done("b2", "2024-01-02T03:00:00+00:00"),  # verified once; the next drill failed
        done("b3", "2024-01-03T03:00:00+00:00"),
    ]

    decision = apply_retention(backups, policy(keepLast=1), UTC_ZONE)

    assert decision.reasons("b1") == (KeepReason.NEWEST_VERIFIED,)
    assert decision.delete == ("b2",)


def test_a_backup_being_deleted_counts_for_no_rule() -> None:
    deleting = BackupRecord(
        "b3",
        COMPLETED,
        datetime.fromisoformat("2024-01-03T03:00:00+00:00"),
        datetime.fromisoformat("2024-01-03T04:00:00+00:00"),
        deleting=True,
    )
    backups = [
        done("b1", "2024-01-01T03:00:00+00:00", verified="2024-01-01T04:00:00+00:00"),
        done("b2", "2024-01-02T03:00:00+00:00"),
        deleting,
    ]

    decision = apply_retention(backups, policy(keepLast=1), UTC_ZONE)

    # b3 is going: b2 is the newest that stays, b1 the newest verified one that does.
    assert decision.reasons("b2") == (KeepReason.LAST,)
    assert decision.reasons("b1") == (KeepReason.NEWEST_VERIFIED,)
    assert ("b3" in decision.delete, decision.reasons("b3")) == (False, ())


def test_backups_restores_and_drills_take_are_kept_whatever_the_counts() -> None:
    backups = [done(f"b{day}", f"2024-01-0{day}T03:00:00+00:00") for day in range(1, 5)]
    restores = [
        _restore("planned", plan_backup="b1"),
        _restore("named", backup_ref="b2"),
        _restore("finished", plan_backup="b3", phase="Completed"),
    ]
    drills = [_drill("nightly", current="b3"), _drill("idle")]

    in_use = backups_in_use(restores, drills)
    decision = apply_retention(backups, policy(keepLast=1), UTC_ZONE, in_use)

    assert in_use == {"b1", "b2", "b3"}
    assert decision.delete == ()
    assert decision.reasons("b1") == (KeepReason.IN_USE,)
    assert decision.reasons("b4") == (KeepReason.LAST,)
    assert backups_in_use(restores[2:], drills[1:]) == frozenset()


def _restore(
    name: str, *, plan_backup: str | None = None, backup_ref: str | None = None, phase: str = ""
) -> Restore:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if plan_backup is not None:
        status["plan"] = {
            "backup": plan_backup,
            "sourceEnvironment": "shop",
            "target": "shop",
            "inPlace": True,
            "targetTier": "development",
            "tableCount": 0,
            "estimatedDurationSeconds": 1,
            "requiresApproval": False,
        }
    source = {"backupRef": {"name": backup_ref or plan_backup or "b1"}}
    return Restore.model_validate(
        {"metadata": {"name": name}, "spec": {"source": source}, "status": status}
    )


def _drill(name: str, *, current: str | None = None) -> RestoreDrill:
    status: dict[str, Any] = {}
    if current is not None:
        status["currentRun"] = {"backup": current, "startedAt": "2024-01-04T05:00:00Z"}
    return RestoreDrill.model_validate(
        {
            "metadata": {"name": name},
            "spec": {"environmentRef": {"name": "shop"}, "schedule": "0 5 * * *"},
            "status": status,
        }
    )


def test_across_many_random_histories_nothing_protected_is_ever_deleted() -> None:
    rng = random.Random(5)
    phases = [*BackupPhase, None]
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for _ in range(300):
        backups = [
            BackupRecord(
                name=f"b{i}",
                phase=rng.choice(phases),
                completed_at=start + timedelta(hours=rng.randrange(24 * 400)),
                verified_at=start if rng.random() < 0.2 else None,
            )
            for i in range(rng.randrange(1, 40))
        ]
        counts = {"keepLast": rng.randrange(0, 4), "keepDaily": rng.randrange(1, 8)}
        decision = apply_retention(backups, policy(**counts), BERLIN)

        protected = newest_verified(backups)
        deleted = set(decision.delete)
        assert protected is None or protected.name not in deleted
        assert not any(
            b.name in deleted for b in backups if b.phase not in (COMPLETED, BackupPhase.FAILED)
        )
        assert deleted.isdisjoint(k.name for k in decision.keep)
        assert len(deleted) + len(decision.keep) == len(backups)


# --- ttl ---------------------------------------------------------------------------------------


def _ttl_backup(
    name: str, completed: str | None, *, verified: str | None = None, env: str = "shop"
) -> Backup:
    status: dict[str, object] = {"phase": "Completed" if completed else "Running"}
    if completed:
        status["completedAt"] = completed
    if verified:
        status["verified"] = {"drill": "nightly", "at": verified}
    return Backup.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "environmentRef": {"name": env},
                "storage": {"filesystem": {"path": "/b"}},
                "encryption": {"keySecretRef": {"name": "k", "key": "key"}},
                "ttl": "24h",
            },
            "status": status,
        }
    )


NOW = datetime(2024, 3, 10, 12, tzinfo=UTC)
DAY = timedelta(hours=24)


def test_a_backup_expires_a_ttl_after_completing() -> None:
    young = _ttl_backup("young", "2024-03-10T00:00:00Z")
    old = _ttl_backup("old", "2024-03-09T00:00:00Z")

    kept = ttl_expiry(young, DAY, [young, old], NOW)
    assert kept.expires_at == datetime(2024, 3, 11, tzinfo=UTC)
    assert not kept.delete
    gone = ttl_expiry(old, DAY, [young, old], NOW)
    assert gone.delete
    assert gone.reason == "ttl passed at 2024-03-10T00:00:00+00:00"


def test_a_running_backup_or_one_without_ttl_never_expires() -> None:
    running = _ttl_backup("running", None)
    assert ttl_expiry(running, DAY, [running], NOW) == ttl_expiry(running, None, [], NOW)
    assert not ttl_expiry(running, DAY, [running], NOW).delete
    assert ttl_expiry(running, DAY, [running], NOW).expires_at is None


def test_the_newest_verified_backup_outlives_its_ttl_until_a_newer_one_is_verified() -> None:
    verified = _ttl_backup("v1", "2024-03-01T00:00:00Z", verified="2024-03-01T04:00:00Z")
    newer = _ttl_backup("n2", "2024-03-05T00:00:00Z")
    elsewhere = _ttl_backup("x", "2024-03-06T00:00:00Z", verified="2024-03-06T04:00:00Z", env="b")

    decision = ttl_expiry(verified, DAY, [verified, newer, elsewhere], NOW)
    assert not decision.delete
    assert "newest backup of shop a drill verified" in decision.reason
    assert ttl_expiry(newer, DAY, [verified, newer], NOW).delete

    reverified = _ttl_backup("n2", "2024-03-05T00:00:00Z", verified="2024-03-05T04:00:00Z")
    assert ttl_expiry(verified, DAY, [verified, reverified], NOW).delete
