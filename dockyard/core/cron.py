"""The strict five-field cron parser and the time-zone-aware scheduler of BackupSchedule
and RestoreDrill.

This module owns what a cron expression means in Dockyard, and it refuses rather than
guesses. Other cron dialects read the same text differently (a sixth field is seconds
to one and years to another; ``5/15`` is "from 5, every 15" to some and an error to
others), and a backup that silently runs on a different schedule than the one its
author meant is how restores end up with a week-old backup. So:

- exactly five fields, ``minute hour day-of-month month day-of-week``, separated by
  whitespace; each is ``*``, ``*/n``, or a comma-separated list of values, ranges
  ``a-b`` and stepped ranges ``a-b/n``; months may be JAN-DEC and days SUN-SAT (any
  case); day-of-week 7 is Sunday, like 0;
- the macros ``@yearly`` (``@annually``), ``@monthly``, ``@weekly``, ``@daily``
  (``@midnight``) and ``@hourly`` stand for their usual expressions; ``@reboot`` means
  nothing to a controller and is refused;
- refused, with a message saying what was expected: six or seven fields, Quartz syntax
  (``?``, ``L``, ``W``, ``#``), out-of-range values, empty list items, step 0 or a step
  wider than the field, a step on a single value (``5/15``: write ``5-59/15``),
  reversed ranges (they do not wrap around), ``*`` inside a list or a range, and
  day-of-month/month combinations no year has (``0 0 31 4 *``);
- when both day-of-month and day-of-week are restricted (neither starts with ``*``), a
  day matching either runs the job: Vixie cron's rule, which every crontab follows.

Times are wall-clock times in the schedule's IANA time zone. Across daylight saving
changes, as Vixie cron does for jobs at fixed times: a wall-clock time that does not
exist that day (the clocks jump over it) runs at the instant of the jump, and one that
happens twice (the clocks go back) runs once, the first time. Every wall-clock time runs
at most once, so a job every 15 minutes pauses during the repeated hour.

No third-party cron library: the ones available accept exactly the ambiguous input this
module exists to refuse.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

FIELD_NAMES: Final = "minute hour day-of-month month day-of-week"

MACROS: Final[Mapping[str, str]] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTH_NAMES: Final = (
    "JAN",
    "FEB",
    "MAR",
    "APR",
    "MAY",
    "JUN",
    "JUL",
    "AUG",
    "SEP",
    "OCT",
    "NOV",
    "DEC",
)
_DAY_NAMES: Final = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# Longest month lengths over all years (February has 29 days in leap years).
_LONGEST_MONTH: Final = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# February 29th comes back within 8 years (2096 -> 2104); a schedule that matches
# nothing within 9 years matches nothing at all.
_SEARCH_YEARS: Final = 9
# A wall-clock time later than until's can come before it when the clocks go back, and
# one earlier than since's after it when they go forward: by an hour for summer time, by
# a day where a zone crossed the date line (Samoa in 2011). latest_due looks this far.
_MARGIN_DAYS: Final = 2

_ITEM = re.compile(
    r"(?P<start>[0-9]+|[A-Za-z]+)(?:-(?P<end>[0-9]+|[A-Za-z]+))?(?:/(?P<step>[0-9]+))?"
)
_LAST = re.compile(r"[0-9]*L|L-?[0-9]*|LW", re.IGNORECASE)
_WEEKDAY = re.compile(r"[0-9]*W", re.IGNORECASE)


class CronError(ValueError):
    """An expression or time zone the strict parser refuses; the message says what was
    expected, and is what the operator writes into the object's Ready condition."""


# Builds the CronError for one field's problem, naming the field and its text.
_Refusal = Callable[[str], CronError]


def field_count_message(expression: str) -> str:
    """Why ``expression`` is neither five fields nor a known macro."""
    text = expression.strip()
    if text.startswith("@"):
        return f"{text} is not a supported macro: expected one of {', '.join(MACROS)}"
    return f"expected 5 fields ({FIELD_NAMES}), got {len(expression.split())}: {expression}"


@dataclass(frozen=True, slots=True)
class _Field:
    label: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    names_start: int = 0
    # The values * and */n range over, when that differs from low..high.
    star_high: int | None = None

    @property
    def expected(self) -> str:
        numbers = f"numbers {self.low}-{self.high}"
        if self.names:
            return f"{numbers} or names {self.names[0]}-{self.names[-1]}"
        return numbers


_FIELDS: Final = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, _MONTH_NAMES, names_start=1),
    # 7 is accepted as Sunday in values and ranges; * covers 0-6 once.
    _Field("day-of-week", 0, 7, _DAY_NAMES, star_high=6),
)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed expression: the values each field allows, and the day-matching rule."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    """0 is Sunday, 6 is Saturday."""
    day_of_month_restricted: bool
    day_of_week_restricted: bool

    def matches_day(self, day: date) -> bool:
        """Whether the job runs at some time on ``day``."""
        if day.month not in self.months:
            return False
        by_month_day = day.day in self.days_of_month
        by_week_day = day.isoweekday() % 7 in self.days_of_week
        if self.day_of_month_restricted and self.day_of_week_restricted:
            return by_month_day or by_week_day
        # An unrestricted field holds every value (or, for */n, Vixie cron still ANDs it).
        return by_month_day and by_week_day

    def next_after(self, after: datetime, tz: ZoneInfo) -> datetime:
        """The first run strictly after ``after`` (an aware datetime), in ``tz``."""
        if after.tzinfo is None:
            raise ValueError("after must be timezone-aware")
        start = after.astimezone(tz).replace(tzinfo=None, second=0, microsecond=0)
        for wall in self._wall_times_from(start):
            instant = _instant_of(wall, tz)
            # An ambiguous time ran at its first occurrence; a skipped one at the jump,
            # which may be the same instant as a later wall time. Either way, strictly
            # after is what counts.
            if instant > after:
                return instant.astimezone(tz)
        raise CronError(f"{self.expression} has no run within {_SEARCH_YEARS} years")

    def _wall_times_from(self, start: datetime) -> Iterator[datetime]:
        """Matching wall-clock times from ``start`` (a naive local time) on, in order."""
        hours = sorted(self.hours)
        minutes = sorted(self.minutes)
        year, month = start.year, start.month
        for _ in range(12 * _SEARCH_YEARS):
            if month in self.months:
                first = start.day if (year, month) == (start.year, start.month) else 1
                for day in range(first, calendar.monthrange(year, month)[1] + 1):
                    when = date(year, month, day)
                    if not self.matches_day(when):
                        continue
                    today = when == start.date()
                    for hour in hours:
                        if today and hour < start.hour:
                            continue
                        for minute in minutes:
                            if today and hour == start.hour and minute < start.minute:
                                continue
                            yield datetime(year, month, day, hour, minute)
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
            if year > datetime.max.year:
                return

    def _days_back(self, latest: int, earliest: int) -> Iterator[date]:
        """The days the job runs on, from ordinal ``latest`` back to ``earliest``."""
        ordinal = latest
        while ordinal >= earliest:
            day = date.fromordinal(ordinal)
            if day.month not in self.months:
                ordinal -= day.day  # to the last day of the month before
                continue
            if self.matches_day(day):
                yield day
            ordinal -= 1


def parse(expression: str) -> CronSchedule:
    """``expression`` as a ``CronSchedule``; raises ``CronError`` saying what was expected."""
    text = expression.strip()
    fields = MACROS[text].split() if text in MACROS else text.split()
    if (text.startswith("@") and text not in MACROS) or len(fields) != len(_FIELDS):
        raise CronError(field_count_message(expression))
    parsed = [
        _parse_field(token, spec, n)
        for n, (token, spec) in enumerate(zip(fields, _FIELDS, strict=True), 1)
    ]
    (minutes, _), (hours, _), (doms, dom_restricted), (months, _), (dows, dow_restricted) = parsed
    if (
        dom_restricted
        and not dow_restricted
        and not any(day <= _LONGEST_MONTH[month - 1] for month in months for day in doms)
    ):
        names = ",".join(_MONTH_NAMES[month - 1] for month in sorted(months))
        raise CronError(
            f"day-of-month (field 3) {fields[2]} never happens in month (field 4) "
            f"{fields[3]} ({names}): expected a day those months have"
        )
    return CronSchedule(
        expression=text,
        minutes=minutes,
        hours=hours,
        days_of_month=doms,
        months=months,
        days_of_week=frozenset(day % 7 for day in dows),
        day_of_month_restricted=dom_restricted,
        day_of_week_restricted=dow_restricted,
    )


def _parse_field(field_text: str, spec: _Field, position: int) -> tuple[frozenset[int], bool]:
    """The values ``field_text`` allows and whether it restricts the field (does not start
    with ``*``, which is what Vixie cron's day-of-month/day-of-week rule looks at)."""

    def refuse(problem: str) -> CronError:
        return CronError(f"{spec.label} (field {position}) {field_text}: {problem}")

    star_high = spec.high if spec.star_high is None else spec.star_high
    if field_text == "*":
        return frozenset(range(spec.low, star_high + 1)), False
    if field_text.startswith("*/"):
        step = _step(field_text[2:], spec, refuse)
        return frozenset(range(spec.low, star_high + 1, step)), False
    values: set[int] = set()
    for item in field_text.split(","):
        values |= _parse_item(item, spec, refuse)
    return frozenset(values), True


def _parse_item(item: str, spec: _Field, refuse: _Refusal) -> set[int]:
    if not item:
        raise refuse("empty list item: expected a value, a range or a stepped range between commas")
    if "*" in item:
        raise refuse("* must stand alone or as */n; it cannot be part of a list or a range")
    if "?" in item:
        raise refuse("? (Quartz's 'no specific value') is not supported: use *")
    if "#" in item:
        raise refuse("# (the nth weekday of the month) is not supported")
    match = _ITEM.fullmatch(item)
    if match is None:
        raise refuse(
            _special(item)
            or f"{item} is not a value, a range a-b or a stepped range a-b/n: "
            f"expected {spec.expected}"
        )
    start = _value(match["start"], spec, refuse)
    if match["end"] is None:
        if match["step"] is not None:
            raise refuse(
                f"a step needs a range: write {match['start']}-{spec.high}/{match['step']} "
                f"or */{match['step']}"
            )
        return {start}
    end = _value(match["end"], spec, refuse)
    if end < start:
        raise refuse(
            f"reversed range {match['start']}-{match['end']}: the start must not be after the "
            "end (ranges do not wrap around; list both parts instead, like 22-23,0-2)"
        )
    step = 1 if match["step"] is None else _step(match["step"], spec, refuse)
    return set(range(start, end + 1, step))


def _value(text: str, spec: _Field, refuse: _Refusal) -> int:
    if text.isascii() and text.isdigit():
        value = int(text)
        if not spec.low <= value <= spec.high:
            raise refuse(f"{text} is out of range: expected {spec.expected}")
        return value
    upper = text.upper()
    if upper in spec.names:
        return spec.names.index(upper) + spec.names_start
    special = _special(text)
    if special:
        raise refuse(special)
    if not spec.names:
        raise refuse(f"{text} is not a number: expected {spec.expected}")
    raise refuse(f"unknown name {text}: expected {spec.expected}")


def _step(text: str, spec: _Field, refuse: _Refusal) -> int:
    if not (text.isascii() and text.isdigit()):
        raise refuse(f"step {text} is not a number: expected */n or a-b/n with n a positive number")
    step = int(text)
    widest = spec.high - spec.low if spec.star_high is None else spec.star_high - spec.low
    if not 1 <= step <= widest:
        raise refuse(f"step {text} is out of range: expected 1-{widest}")
    return step


def _special(item: str) -> str | None:
    """The message for Quartz and Jenkins extensions that look like values."""
    if _LAST.fullmatch(item):
        return "L (the last day or weekday of the month) is not supported"
    if _WEEKDAY.fullmatch(item):
        return "W (the nearest weekday) is not supported"
    if item.upper() == "H":
        return "H (Jenkins' hashed value) is not supported: pick a value"
    return None


def _instant_of(wall: datetime, tz: ZoneInfo) -> datetime:
    """The UTC instant of the naive local time ``wall``: its first occurrence when the
    clocks go back over it, the instant of the jump when they jump over it."""
    first = wall.replace(tzinfo=tz)  # fold=0: the earlier of two occurrences
    instant = first.astimezone(UTC)
    if instant.astimezone(tz).replace(tzinfo=None) == wall:
        return instant
    # In a gap fold=0 reads the time with the offset from before the jump and fold=1
    # with the one after; the jump lies between the two readings.
    return _jump_between(wall.replace(tzinfo=tz, fold=1).astimezone(UTC), instant, tz)


def _jump_between(before: datetime, after: datetime, tz: ZoneInfo) -> datetime:
    """The first instant in (``before``, ``after``] with ``after``'s UTC offset."""
    target = after.astimezone(tz).utcoffset()
    low, high = int(before.timestamp()), int(after.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, UTC).astimezone(tz).utcoffset() == target:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def next_after(expression: str | CronSchedule, after: datetime, tz: ZoneInfo) -> datetime:
    """The first run of ``expression`` strictly after ``after`` (aware), as a time in ``tz``.

    Raises ``CronError`` for an expression ``parse`` refuses.
    """
    schedule = expression if isinstance(expression, CronSchedule) else parse(expression)
    return schedule.next_after(after, tz)


def latest_due(
    expression: str | CronSchedule, since: datetime, until: datetime, tz: ZoneInfo
) -> datetime | None:
    """The latest run in (``since``, ``until``], or None: what a controller that was
    down, or slow, should run now (one catch-up run, not one per missed time).

    A run's instant never decreases as its wall-clock time increases (``_instant_of``
    puts a repeated time at its first occurrence, a skipped one at the jump), so this
    walks the days back from just after ``until`` and bisects the first whose earliest
    run is not after it: a few look-ups, however frequent the schedule or long the
    outage. It looks back at most ``_SEARCH_YEARS`` years, as ``next_after`` looks ahead.
    """
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError("since and until must be timezone-aware")
    schedule = expression if isinstance(expression, CronSchedule) else parse(expression)
    latest = min(until.astimezone(tz).toordinal() + _MARGIN_DAYS, date.max.toordinal())
    horizon = latest - 366 * _SEARCH_YEARS
    earliest = max(since.astimezone(tz).toordinal() - _MARGIN_DAYS, horizon, 1)
    hours, minutes = sorted(schedule.hours), sorted(schedule.minutes)
    for day in schedule._days_back(latest, earliest):
        if (found := _latest_on(day, hours, minutes, until, tz)) is not None:
            return found if found > since else None
    return None


def _latest_on(
    day: date, hours: Sequence[int], minutes: Sequence[int], until: datetime, tz: ZoneInfo
) -> datetime | None:
    """The latest run on ``day`` (at ``hours`` x ``minutes``, both in order) that is not
    after ``until``; None when its first one is."""

    def instant(index: int) -> datetime:
        hour, minute = hours[index // len(minutes)], minutes[index % len(minutes)]
        return _instant_of(datetime(day.year, day.month, day.day, hour, minute), tz)

    if instant(0) > until:
        return None
    last = len(hours) * len(minutes) - 1
    if instant(last) > until:
        # Instants follow the times' order: the first time after until ends a bisection.
        last = bisect_right(range(last), until, lo=1, key=instant) - 1
    return instant(last).astimezone(tz)


@cache
def _known_time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def load_time_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; raises ``CronError`` when the tz database lacks it."""
    if name not in _known_time_zones():
        raise CronError(
            f"unknown time zone {name}: expected an IANA name such as UTC, Europe/Berlin "
            "or America/New_York"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise CronError(f"time zone {name} cannot be loaded: {error}") from error


def validate_schedule(expression: str, time_zone: str) -> tuple[CronSchedule, ZoneInfo]:
    """Parse a spec's ``schedule`` and ``timeZone`` together; ``CronError`` on either."""
    return parse(expression), load_time_zone(time_zone)


__all__ = [
    "FIELD_NAMES",
    "MACROS",
    "CronError",
    "CronSchedule",
    "field_count_message",
    "latest_due",
    "load_time_zone",
    "next_after",
    "parse",
    "validate_schedule",
]
