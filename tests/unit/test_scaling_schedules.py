"""Scheduled floors: a window opens when its cron fires, in its time zone, and lasts its
duration; while several are open the highest floor wins."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dockyard.core.models.scaling import ScheduledFloor
from dockyard.operator.builders.scaling_windows import (
    Window,
    active_schedule,
    open_window,
    schedule_problems,
)


def _floor(name: str = "peak", **fields: Any) -> ScheduledFloor:
    values = {"schedule": "0 9 * * 1-5", "duration": "8h", "min_replicas": 4, **fields}
    return ScheduledFloor.model_validate({"name": name, **values})


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_a_window_is_open_from_the_fire_time_for_its_duration() -> None:
    floor = _floor()  # weekdays 09:00 UTC for 8 hours; 2026-03-02 is a Monday
    assert open_window(floor, _at("2026-03-02T08:59:59+00:00")) is None
    assert open_window(floor, _at("2026-03-02T09:00:00+00:00")) == Window(
        "peak", _at("2026-03-02T09:00:00+00:00"), _at("2026-03-02T17:00:00+00:00"), 4
    )
    assert open_window(floor, _at("2026-03-02T16:59:59+00:00")) is not None


def test_the_window_closes_when_its_duration_has_passed() -> None:
    assert open_window(_floor(), _at("2026-03-02T17:00:00+00:00")) is None


def test_no_window_on_days_the_schedule_does_not_fire() -> None:
    assert open_window(_floor(), _at("2026-03-07T10:00:00+00:00")) is None  # Saturday


def test_a_short_window_every_minute() -> None:
    floor = _floor(schedule="* * * * *", duration="20s")
    assert open_window(floor, _at("2026-03-02T10:15:19+00:00")) is not None
    assert open_window(floor, _at("2026-03-02T10:15:20+00:00")) is None
    assert open_window(floor, _at("2026-03-02T10:15:59+00:00")) is None


def test_the_schedule_is_read_in_its_time_zone() -> None:
    floor = _floor(time_zone="Europe/Berlin")  # 09:00 in Berlin is 08:00 UTC in winter
    window = open_window(floor, _at("2026-03-02T08:30:00+00:00"))
    assert window is not None
    assert window.opened == _at("2026-03-02T08:00:00+00:00")
    assert open_window(floor, _at("2026-03-02T07:59:00+00:00")) is None


def test_summer_time_moves_the_window_in_utc() -> None:
    floor = _floor(time_zone="Europe/Berlin")  # in summer 09:00 Berlin is 07:00 UTC
    window = open_window(floor, _at("2026-07-06T07:30:00+00:00"))
    assert window is not None
    assert window.opened == _at("2026-07-06T07:00:00+00:00")


def test_a_window_across_a_daylight_saving_change_lasts_its_real_length() -> None:
    # Berlin's clocks go forward at 02:00 on 2026-03-29; a window from 00:30 for 3 hours
    # ends 3 real hours later (04:30 wall time), not at 03:30 wall time.
    floor = _floor(schedule="30 0 * * *", duration="3h", time_zone="Europe/Berlin")
    window = open_window(floor, _at("2026-03-29T01:00:00+01:00"))
    assert window is not None
    assert window.until - window.opened == timedelta(hours=3)
    assert window.until == _at("2026-03-29T04:30:00+02:00")


def test_the_highest_open_floor_wins() -> None:
    now = _at("2026-03-02T10:00:00+00:00")
    schedules = [
        _floor("office", min_replicas=3),
        _floor("launch", schedule="0 10 2 3 *", duration="1h", min_replicas=6),
        _floor("closed", schedule="0 20 * * *", duration="1h", min_replicas=9),
    ]
    window = active_schedule(schedules, now)
    assert window is not None
    assert (window.name, window.min_replicas) == ("launch", 6)


def test_between_equal_floors_the_longest_window_wins_then_the_name() -> None:
    now = _at("2026-03-02T10:00:00+00:00")
    long = _floor("long", min_replicas=3, duration="8h")
    short = _floor("short", min_replicas=3, duration="2h")
    twin = _floor("a-twin", min_replicas=3, duration="8h")
    assert active_schedule([short, long], now) == open_window(long, now)
    window = active_schedule([long, twin, short], now)
    assert window is not None
    assert window.name == "a-twin"


def test_no_schedule_open_means_no_active_schedule() -> None:
    assert active_schedule([], _at("2026-03-02T10:00:00+00:00")) is None
    assert active_schedule([_floor()], _at("2026-03-02T20:00:00+00:00")) is None


def test_a_window_longer_than_the_interval_stays_open() -> None:
    floor = _floor(schedule="0 * * * *", duration="90m")
    window = open_window(floor, _at("2026-03-02T10:10:00+00:00"))
    assert window is not None
    assert window.opened == _at("2026-03-02T10:00:00+00:00")


def test_a_schedule_with_no_fire_time_within_9_years_opens_no_window() -> None:
    # April 1st on a Wednesday: 2026, then 2037.
    rare = _floor("rare", schedule="0 0 */30 4 3", duration="8h", min_replicas=9)
    assert open_window(rare, _at("2026-04-01T03:00:00+00:00")) is not None
    now = _at("2026-12-07T10:00:00+00:00")  # a Monday
    assert open_window(rare, now) is None
    window = active_schedule([rare, _floor()], now)
    assert window is not None
    assert window.name == "peak"


@pytest.mark.parametrize(
    ("schedule", "time_zone", "fragment"),
    [
        ("5-1 * * * *", "UTC", "reversed range"),
        ("0 0 31 2 *", "UTC", "never happens"),
        ("0 9 * * *", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_the_strict_parser_names_what_it_refuses(
    schedule: str, time_zone: str, fragment: str
) -> None:
    [problem] = schedule_problems([_floor(schedule=schedule, time_zone=time_zone)])
    assert problem.startswith("schedule peak: ")
    assert fragment in problem


def test_valid_schedules_have_no_problems() -> None:
    assert schedule_problems([_floor(), _floor("nightly", schedule="@daily")]) == []
