"""Scheduled floors: which of a policy's windows is open at a given instant (pure).

A schedule's window opens each time its cron expression fires, read in its time zone,
and stays open for its duration: it is open at ``now`` when the latest fire time at or
before ``now`` is less than ``duration`` ago. Windows may overlap (a duration longer
than the interval between fire times keeps it open); while several schedules are open
the highest floor wins, then the one that stays open longest, then the first by name,
so the answer never depends on the order of the list.

Expressions and time zones are checked by ``dockyard.core.cron``'s strict parser;
``schedule_problems`` says what it refuses, and the other functions expect schedules
that passed it. One that passed with no fire time within 9 years (``0 0 */30 4 3``,
April 1st on a Wednesday) simply opens no window then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from dockyard.core.cron import CronError, latest_due, validate_schedule
from dockyard.core.durations import parse_duration
from dockyard.core.models.scaling import ScheduledFloor


@dataclass(frozen=True, slots=True)
class Window:
    """One open window of a schedule: from when to when, and the floor it sets."""

    name: str
    opened: datetime
    until: datetime
    min_replicas: int


def schedule_problems(schedules: Sequence[ScheduledFloor]) -> list[str]:
    """What the strict cron parser refuses in ``schedules``, one message per schedule."""
    problems: list[str] = []
    for floor in schedules:
        try:
            validate_schedule(floor.schedule, floor.time_zone)
        except CronError as exc:
            problems.append(f"schedule {floor.name}: {exc}")
    return problems


def open_window(floor: ScheduledFloor, now: datetime) -> Window | None:
    """The window of ``floor`` open at ``now`` (aware), or None when it is closed."""
    cron, tz = validate_schedule(floor.schedule, floor.time_zone)
    length = parse_duration(floor.duration)
    # latest_due looks in (since, until]: a fire time after now - length is one whose
    # window has not closed yet.
    fired = latest_due(cron, now - length, now, tz)
    if fired is None:
        return None
    # In UTC, so that a window across a daylight saving change lasts its real length
    # (aware arithmetic in a zone adds to the wall clock).
    opened = fired.astimezone(UTC)
    return Window(floor.name, opened, opened + length, floor.min_replicas)


def active_schedule(schedules: Sequence[ScheduledFloor], now: datetime) -> Window | None:
    """The window whose floor is in force at ``now``: the highest of those open, or None."""
    windows = [window for floor in schedules if (window := open_window(floor, now)) is not None]
    if not windows:
        return None
    return min(windows, key=lambda w: (-w.min_replicas, -w.until.timestamp(), w.name))


__all__ = ["Window", "active_schedule", "open_window", "schedule_problems"]
