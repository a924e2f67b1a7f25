"""The operator's status-based metrics are computed from the objects as listed, so an
operator that restarts (and lists them again) reports the same series."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from dockyard.core import cron
from dockyard.operator.events.observed import Observed, longest_gap, schedule_gap


def _obj(kind: str, name: str, spec: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"namespace": "shop", "name": name},
        "spec": spec,
        "status": status,
    }


ENV = {"environmentRef": {"name": "shop-prod"}}
LISTING = [
    _obj("Backup", "b1", ENV, {"phase": "Completed", "completedAt": "2026-12-01T03:00:00Z"}),
    _obj("Backup", "b2", ENV, {"phase": "Completed", "completedAt": "2026-12-02T03:00:00Z"}),
    _obj("Backup", "b3", ENV, {"phase": "Failed", "completedAt": "2026-12-03T03:00:00Z"}),
    _obj("BackupSchedule", "nightly", {**ENV, "schedule": "0 3 * * *", "timeZone": "UTC"}, {}),
    _obj(
        "RestoreDrill",
        "weekly",
        {**ENV, "rpoSeconds": 3600},
        {
            "lastRun": {
                "result": "Failed",
                "restoreSeconds": 4.5,
                "backupAgeSeconds": 7200,
                "startedAt": "2026-12-03T04:00:00Z",
                "finishedAt": "2026-12-03T04:01:00Z",
            },
            "history": [
                {"result": "Failed", "finishedAt": "2026-12-03T04:01:00Z"},
                {"result": "Passed", "finishedAt": "2026-11-26T04:01:00Z"},
            ],
        },
    ),
    _obj(
        "Restore",
        "promote",
        {},
        {
            "phase": "AwaitingApproval",
            "conditions": [
                {
                    "type": "Approved",
                    "status": "False",
                    "lastTransitionTime": "2026-12-04T09:00:00Z",
                }
            ],
        },
    ),
]


def _at(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _registry(bodies: list[dict[str, Any]]) -> CollectorRegistry:
    observed = Observed()
    for body in bodies:
        observed.observe(None, body)  # the listing at start-up
    registry = CollectorRegistry()
    registry.register(observed)
    return registry


def test_series_come_from_status_and_are_the_same_after_a_restart() -> None:
    sample = _registry(LISTING).get_sample_value
    env = {"namespace": "shop", "environment": "shop-prod"}
    drill = {"namespace": "shop", "drill": "weekly"}
    assert sample("dockyard_backup_last_success_timestamp_seconds", env) == _at(
        "2026-12-02T03:00:00"
    )
    assert sample("dockyard_backups", {"namespace": "shop", "phase": "Completed"}) == 2
    assert sample("dockyard_backups", {"namespace": "shop", "phase": "Failed"}) == 1
    assert (
        sample("dockyard_backup_schedule_interval_seconds", {**env, "schedule": "nightly"})
        == 86400.0
    )
    assert sample("dockyard_drill_last_restore_seconds", drill) == 4.5
    assert sample("dockyard_drill_last_backup_age_seconds", drill) == 7200
    assert sample("dockyard_drill_rpo_objective_seconds", drill) == 3600
    assert sample("dockyard_drill_runs_kept", {**drill, "result": "Failed"}) == 1
    assert sample("dockyard_drill_last_passed", drill) == 0
    assert sample("dockyard_drill_last_pass_timestamp_seconds", env) == _at("2026-11-26T04:01:00")
    assert sample(
        "dockyard_restore_awaiting_approval_since_timestamp_seconds",
        {"namespace": "shop", "restore": "promote"},
    ) == _at("2026-12-04T09:00:00")
    # A second operator, listing the same objects, says the same.
    again = _registry(LISTING).get_sample_value
    assert again("dockyard_drill_last_backup_age_seconds", drill) == 7200


def test_deleted_objects_leave_the_series() -> None:
    observed = Observed()
    for body in LISTING:
        observed.observe(None, body)
    observed.observe("DELETED", LISTING[1])
    observed.observe("DELETED", LISTING[5])
    registry = CollectorRegistry()
    registry.register(observed)
    sample = registry.get_sample_value
    env = {"namespace": "shop", "environment": "shop-prod"}
    assert sample("dockyard_backup_last_success_timestamp_seconds", env) == _at(
        "2026-12-01T03:00:00"
    )
    assert (
        sample(
            "dockyard_restore_awaiting_approval_since_timestamp_seconds",
            {"namespace": "shop", "restore": "promote"},
        )
        is None
    )


def test_the_longest_gap_of_a_schedule() -> None:
    assert longest_gap("0 3 * * *", "UTC") == 86400
    assert longest_gap("0 */6 * * *", "Europe/Berlin") == 6 * 3600
    assert longest_gap("0 3 * * 1,4", "UTC") == 4 * 86400


def _longest_gap_by_walking(expression: str, time_zone: str, now: datetime) -> float:
    """The reference: from each run of the week to the one after it, run by run."""
    schedule, tz, within = cron.parse(expression), ZoneInfo(time_zone), timedelta(days=7)
    at, gap = schedule.next_after(now, tz), 0.0
    while at < now + within:
        following = schedule.next_after(at, tz)
        gap = max(gap, (following - at).total_seconds())
        at = following
    return gap or within.total_seconds()


@pytest.mark.parametrize(
    "expression",
    [
        "*/10 * * * *",  # every minute: below
        "*/15 9-17 * * 1-5",
        "0 3 * * *",
        "0 0 * * 0",
        "@yearly",
        "0 1,23 * * *",
        "0 3 * * 1,4",
        "30 8-18/5 1,15 * *",
    ],
)
@pytest.mark.parametrize(
    ("time_zone", "now"),
    [
        ("UTC", "2025-03-10T12:00:30+00:00"),
        ("UTC", "2025-12-29T00:00:00+00:00"),  # New Year within the week
        ("Europe/Berlin", "2025-06-13T22:30:00+00:00"),  # 00:30 local, a Saturday
        ("America/New_York", "2025-12-28T04:59:00+00:00"),
    ],
)
def test_the_longest_gap_is_what_walking_every_run_of_the_week_finds(
    expression: str, time_zone: str, now: str
) -> None:
    at = datetime.fromisoformat(now)

    expected = _longest_gap_by_walking(expression, time_zone, at)
    assert longest_gap(expression, time_zone, now=at) == expected


def test_a_minutely_schedules_gap_takes_a_few_cron_look_ups(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every BackupSchedule watch event of a new spelling waits for it: not one look-up
    per run of the week."""
    calls = {"instants": 0, "next": 0}
    instant_of, next_after = cron._instant_of, cron.next_after

    def counted_instant(wall: datetime, tz: ZoneInfo) -> datetime:
        calls["instants"] += 1
        return instant_of(wall, tz)

    def counted_next(*args: Any) -> datetime:
        calls["next"] += 1
        return next_after(*args)

    walked = _longest_gap_by_walking("* * * * *", "UTC", datetime.now(UTC))
    monkeypatch.setattr(cron, "_instant_of", counted_instant)
    monkeypatch.setattr(cron, "next_after", counted_next)

    assert longest_gap("* * * * *", "UTC") == walked == 60
    assert calls["instants"] < 100
    assert calls["next"] < 100


def test_a_schedules_gap_is_walked_once_however_often_it_changes() -> None:
    observed = Observed()
    every_minute = _obj("BackupSchedule", "busy", {**ENV, "schedule": "* * * * *"}, {})
    before = schedule_gap.cache_info()
    for _ in range(20):  # each status change of the schedule comes by
        observed.observe("MODIFIED", every_minute)
    after = schedule_gap.cache_info()
    assert after.misses - before.misses <= 1
    assert after.hits - before.hits >= 19
    assert schedule_gap("* * * * *", "UTC") == 60
