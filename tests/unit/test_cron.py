"""The strict cron parser and the time-zone-aware scheduler, as tables of cases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from dockyard.core import cron

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # its clocks change by half an hour


# --- what the parser refuses, and what it says ----------------------------------------------

REFUSED = [
    (
        "0 0 * * * *",
        "expected 5 fields (minute hour day-of-month month day-of-week), got 6: 0 0 * * * *",
    ),
    ("0 0 12 * * ? 2025", "expected 5 fields (minute hour day-of-month month day-of-week), got 7"),
    ("0 0 * *", "got 4: 0 0 * *"),
    ("", "got 0"),
    ("@reboot", "@reboot is not a supported macro: expected one of @yearly, @annually"),
    ("@every 5m", "is not a supported macro"),
    ("60 * * * *", "minute (field 1) 60: 60 is out of range: expected numbers 0-59"),
    ("* 24 * * *", "hour (field 2) 24: 24 is out of range: expected numbers 0-23"),
    ("* * 0 * *", "day-of-month (field 3) 0: 0 is out of range: expected numbers 1-31"),
    ("* * 32 * *", "day-of-month (field 3) 32: 32 is out of range"),
    (
        "* * * 13 *",
        "month (field 4) 13: 13 is out of range: expected numbers 1-12 or names JAN-DEC",
    ),
    (
        "* * * * 8",
        "day-of-week (field 5) 8: 8 is out of range: expected numbers 0-7 or names SUN-SAT",
    ),
    ("0 0 ? * MON", "day-of-month (field 3) ?: ? (Quartz's 'no specific value') is not supported"),
    ("0 0 L * *", "L (the last day or weekday of the month) is not supported"),
    ("0 0 LW * *", "L (the last day or weekday of the month) is not supported"),
    ("0 0 * * 5L", "L (the last day or weekday of the month) is not supported"),
    ("0 0 15W * *", "W (the nearest weekday) is not supported"),
    ("0 0 * * MON#2", "# (the nth weekday of the month) is not supported"),
    ("H * * * *", "H (Jenkins' hashed value) is not supported"),
    ("1,,2 * * * *", "minute (field 1) 1,,2: empty list item"),
    ("1, * * * *", "empty list item"),
    ("*/0 * * * *", "minute (field 1) */0: step 0 is out of range: expected 1-59"),
    ("*/60 * * * *", "step 60 is out of range: expected 1-59"),
    ("0 0 * * */7", "day-of-week (field 5) */7: step 7 is out of range: expected 1-6"),
    ("1-10/0 * * * *", "step 0 is out of range"),
    ("*/x * * * *", "step x is not a number"),
    ("10-5 * * * *", "reversed range 10-5: the start must not be after the end"),
    ("0 0 * * SAT-SUN", "reversed range SAT-SUN"),
    ("5/15 * * * *", "a step needs a range: write 5-59/15 or */15"),
    ("*,5 * * * *", "* must stand alone or as */n"),
    ("1-* * * * *", "* must stand alone or as */n"),
    (
        "0 0 * FOO *",
        "month (field 4) FOO: unknown name FOO: expected numbers 1-12 or names JAN-DEC",
    ),
    ("0 0 * JANUARY *", "unknown name JANUARY"),
    ("MON * * * *", "minute (field 1) MON: MON is not a number: expected numbers 0-59"),
    ("1.5 * * * *", "1.5 is not a value, a range a-b or a stepped range a-b/n"),
    (
        "0 0 31 4 *",
        "day-of-month (field 3) 31 never happens in month (field 4) 4 (APR): expected a day",
    ),
    ("0 0 30,31 2 *", "never happens in month (field 4) 2 (FEB)"),
]


@pytest.mark.parametrize(("expression", "message"), REFUSED)
def test_parse_refuses_with_a_message_saying_what_was_expected(
    expression: str, message: str
) -> None:
    with pytest.raises(cron.CronError) as refused:
        cron.parse(expression)

    assert message in str(refused.value)


# --- what the parser accepts, and what it means ---------------------------------------------


def _all(low: int, high: int) -> frozenset[int]:
    return frozenset(range(low, high + 1))


ACCEPTED = [
    ("*/15 * * * *", "minutes", {0, 15, 30, 45}),
    ("0,30 * * * *", "minutes", {0, 30}),
    ("05 * * * *", "minutes", {5}),
    ("0 9-17/2 * * *", "hours", {9, 11, 13, 15, 17}),
    ("0 22-23,0-2 * * *", "hours", {22, 23, 0, 1, 2}),
    ("0 0 1,15 * *", "days_of_month", {1, 15}),
    ("0 0 */10 * *", "days_of_month", {1, 11, 21, 31}),
    ("0 0 * JAN,jul *", "months", {1, 7}),
    ("0 0 * mar-MAY *", "months", {3, 4, 5}),
    ("0 0 * */3 *", "months", {1, 4, 7, 10}),
    ("0 0 * * 7", "days_of_week", {0}),
    ("0 0 * * 5-7", "days_of_week", {5, 6, 0}),
    ("0 0 * * sun-sat", "days_of_week", set(range(7))),
    ("0 0 * * MON-FRI", "days_of_week", {1, 2, 3, 4, 5}),
    ("0 0 * * *", "days_of_week", set(range(7))),
    ("0 0 29 2 *", "days_of_month", {29}),
    ("0 0 31 4,5 *", "days_of_month", {31}),
]


@pytest.mark.parametrize(("expression", "field", "values"), ACCEPTED)
def test_parse_expands_each_field_to_its_values(
    expression: str, field: str, values: set[int]
) -> None:
    assert getattr(cron.parse(expression), field) == frozenset(values)


@pytest.mark.parametrize(
    ("macro", "expression"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_macros_mean_their_five_field_expression(macro: str, expression: str) -> None:
    by_macro, by_fields = cron.parse(macro), cron.parse(expression)

    assert (by_macro.minutes, by_macro.hours, by_macro.days_of_month) == (
        by_fields.minutes,
        by_fields.hours,
        by_fields.days_of_month,
    )
    assert (by_macro.months, by_macro.days_of_week) == (by_fields.months, by_fields.days_of_week)


def test_fields_may_be_separated_by_several_spaces() -> None:
    assert cron.parse("  0   4 * *  1 ").hours == frozenset({4})


@pytest.mark.parametrize(
    ("expression", "dom_restricted", "dow_restricted"),
    [
        ("0 0 13 * FRI", True, True),
        ("0 0 13 * *", True, False),
        ("0 0 * * FRI", False, True),
        # Vixie cron looks at the first character: */n counts as unrestricted.
        ("0 0 */2 * MON", False, True),
    ],
)
def test_a_field_starting_with_a_star_is_unrestricted(
    expression: str, dom_restricted: bool, dow_restricted: bool
) -> None:
    schedule = cron.parse(expression)

    assert schedule.day_of_month_restricted is dom_restricted
    assert schedule.day_of_week_restricted is dow_restricted


def test_day_of_month_a_month_lacks_is_allowed_when_day_of_week_may_match() -> None:
    # Either field matching suffices, so Mondays in April still run.
    assert cron.parse("0 0 31 4 MON").day_of_week_restricted


# --- the next run -----------------------------------------------------------------------------

UTC_ZONE = ZoneInfo("UTC")

NEXT = [
    # (expression, after, time zone, expected next run as ISO 8601 in that zone)
    ("*/15 * * * *", "2024-01-01T00:00:00+00:00", UTC_ZONE, "2024-01-01T00:15:00+00:00"),
    ("0 0 * * *", "2024-01-01T00:00:00+00:00", UTC_ZONE, "2024-01-02T00:00:00+00:00"),
    ("0 0 * * *", "2024-01-01T00:00:30+00:00", UTC_ZONE, "2024-01-02T00:00:00+00:00"),
    ("0 0 * * *", "2023-12-31T23:59:59.999+00:00", UTC_ZONE, "2024-01-01T00:00:00+00:00"),
    ("30 4 1 * *", "2024-01-31T12:00:00+00:00", UTC_ZONE, "2024-02-01T04:30:00+00:00"),
    ("0 0 1 1 *", "2024-06-01T00:00:00+00:00", UTC_ZONE, "2025-01-01T00:00:00+00:00"),
    ("0 0 29 2 *", "2024-03-01T00:00:00+00:00", UTC_ZONE, "2028-02-29T00:00:00+00:00"),
    ("0 0 31 * *", "2024-04-01T00:00:00+00:00", UTC_ZONE, "2024-05-31T00:00:00+00:00"),
    ("0 12 * * 1-5", "2024-01-05T13:00:00+00:00", UTC_ZONE, "2024-01-08T12:00:00+00:00"),
    ("@weekly", "2024-01-03T00:00:00+00:00", UTC_ZONE, "2024-01-07T00:00:00+00:00"),
    # Vixie's rule: 13th or Friday, whichever comes first (Friday 2024-09-06).
    ("0 0 13 * FRI", "2024-09-01T00:00:00+00:00", UTC_ZONE, "2024-09-06T00:00:00+00:00"),
    ("0 0 13 * *", "2024-09-01T00:00:00+00:00", UTC_ZONE, "2024-09-13T00:00:00+00:00"),
    # */10 counts as unrestricted, so both must hold: a 1st/11th/21st/31st that is Monday.
    ("0 0 */10 * MON", "2024-01-01T00:00:00+00:00", UTC_ZONE, "2024-03-11T00:00:00+00:00"),
    # Wall-clock times in the zone, not UTC.
    ("0 9 * * *", "2024-01-15T07:00:00+00:00", BERLIN, "2024-01-15T09:00:00+01:00"),
    ("0 9 * * *", "2024-07-15T07:00:00+00:00", BERLIN, "2024-07-16T09:00:00+02:00"),
    # Europe/Berlin springs forward on 2024-03-31: 02:00 CET becomes 03:00 CEST.
    ("30 2 * * *", "2024-03-31T00:00:00+01:00", BERLIN, "2024-03-31T03:00:00+02:00"),
    ("30 2 * * *", "2024-03-31T03:00:00+02:00", BERLIN, "2024-04-01T02:30:00+02:00"),
    ("0 3 * * *", "2024-03-30T12:00:00+01:00", BERLIN, "2024-03-31T03:00:00+02:00"),
    ("*/30 * * * *", "2024-03-31T01:30:00+01:00", BERLIN, "2024-03-31T03:00:00+02:00"),
    ("*/30 * * * *", "2024-03-31T03:00:00+02:00", BERLIN, "2024-03-31T03:30:00+02:00"),
    # ... and falls back on 2024-10-27: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    ("30 2 * * *", "2024-10-27T00:00:00+02:00", BERLIN, "2024-10-27T02:30:00+02:00"),
    ("30 2 * * *", "2024-10-27T02:30:00+02:00", BERLIN, "2024-10-28T02:30:00+01:00"),
    ("30 2 * * *", "2024-10-27T02:45:00+02:00", BERLIN, "2024-10-28T02:30:00+01:00"),
    ("0 * * * *", "2024-10-27T02:00:00+02:00", BERLIN, "2024-10-27T03:00:00+01:00"),
    ("*/15 * * * *", "2024-10-27T02:50:00+01:00", BERLIN, "2024-10-27T03:00:00+01:00"),
    # America/New_York springs forward on 2024-03-10 at 02:00 and falls back on 2024-11-03.
    ("30 2 * * *", "2024-03-10T00:00:00-05:00", NEW_YORK, "2024-03-10T03:00:00-04:00"),
    ("0 2 * * *", "2024-03-09T12:00:00-05:00", NEW_YORK, "2024-03-10T03:00:00-04:00"),
    ("0 9 * * 1-5", "2024-03-08T10:00:00-05:00", NEW_YORK, "2024-03-11T09:00:00-04:00"),
    ("30 1 * * *", "2024-11-03T00:00:00-04:00", NEW_YORK, "2024-11-03T01:30:00-04:00"),
    ("30 1 * * *", "2024-11-03T01:30:00-04:00", NEW_YORK, "2024-11-04T01:30:00-05:00"),
    ("30 1 * * *", "2024-11-03T01:10:00-05:00", NEW_YORK, "2024-11-04T01:30:00-05:00"),
]


@pytest.mark.parametrize(("expression", "after", "tz", "expected"), NEXT)
def test_next_after(expression: str, after: str, tz: ZoneInfo, expected: str) -> None:
    result = cron.next_after(expression, datetime.fromisoformat(after), tz)

    assert result.isoformat() == expected
    assert result.tzinfo == tz


def test_every_run_across_the_spring_forward_jump_happens_once_and_in_order() -> None:
    schedule = cron.parse("*/20 * * * *")
    runs = [datetime(2024, 3, 31, 0, 30, tzinfo=UTC)]
    while len(runs) < 8:
        runs.append(schedule.next_after(runs[-1], BERLIN))

    assert [run.strftime("%H:%M%z") for run in runs[1:]] == [
        "01:40+0100",
        "03:00+0200",  # 02:00, 02:20 and 02:40 do not exist: one run at the jump
        "03:20+0200",
        "03:40+0200",
        "04:00+0200",
        "04:20+0200",
        "04:40+0200",
    ]


def test_a_naive_after_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cron.next_after("0 0 * * *", datetime(2024, 1, 1), UTC_ZONE)


def test_next_after_refuses_what_parse_refuses() -> None:
    with pytest.raises(cron.CronError, match="got 6"):
        cron.next_after("0 0 0 * * *", datetime(2024, 1, 1, tzinfo=UTC), UTC_ZONE)


# --- catching up after downtime ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "since", "until", "expected"),
    [
        (
            "0 * * * *",
            "2024-01-01T00:00:00+00:00",
            "2024-01-03T05:30:00+00:00",
            "2024-01-03T05:00:00+00:00",
        ),
        ("0 * * * *", "2024-01-01T00:00:00+00:00", "2024-01-01T00:30:00+00:00", None),
        (
            "0 * * * *",
            "2024-01-01T00:00:00+00:00",
            "2024-01-01T01:00:00+00:00",
            "2024-01-01T01:00:00+00:00",
        ),
        (
            "0 0 1 1 *",
            "2020-06-01T00:00:00+00:00",
            "2024-06-01T00:00:00+00:00",
            "2024-01-01T00:00:00+00:00",
        ),
        (
            "* * * * *",
            "2023-01-01T00:00:00+00:00",
            "2024-01-01T00:00:30+00:00",
            "2024-01-01T00:00:00+00:00",
        ),
    ],
)
def test_latest_due_is_the_one_run_to_catch_up(
    expression: str, since: str, until: str, expected: str | None
) -> None:
    result = cron.latest_due(
        expression, datetime.fromisoformat(since), datetime.fromisoformat(until), UTC_ZONE
    )

    assert (result.isoformat() if result else None) == expected


def _latest_by_walking(
    schedule: cron.CronSchedule, since: datetime, until: datetime, tz: ZoneInfo
) -> datetime | None:
    """The reference latest_due: every run in (since, until], one after the other."""
    latest, run = None, schedule.next_after(since, tz)
    while run <= until:
        latest, run = run, schedule.next_after(run, tz)
    return latest


# (expression, the longest window to look back over)
LOOKED_BACK = [
    ("* * * * *", timedelta(hours=3)),
    ("*/20 * * * *", timedelta(days=2)),
    ("0,30 * * * *", timedelta(days=2)),
    ("15,45 1-3 * * *", timedelta(days=5)),
    ("0 * * * 1-5", timedelta(days=4)),
    ("30 2 * * *", timedelta(days=40)),
    ("59 23 * * *", timedelta(days=40)),
    ("0 0 1 * *", timedelta(days=40)),
]


@pytest.mark.parametrize(
    ("tz", "change"),
    [
        (BERLIN, "2024-03-31T01:00:00+00:00"),  # 02:00 CET becomes 03:00 CEST
        (BERLIN, "2024-10-27T01:00:00+00:00"),  # 03:00 CEST becomes 02:00 CET
        (NEW_YORK, "2024-03-10T07:00:00+00:00"),  # 02:00 EST becomes 03:00 EDT
        (NEW_YORK, "2024-11-03T06:00:00+00:00"),  # 02:00 EDT becomes 01:00 EST
        (LORD_HOWE, "2024-04-06T15:00:00+00:00"),  # 02:00 +11 becomes 01:30 +10:30
        (LORD_HOWE, "2024-10-05T15:30:00+00:00"),  # 02:00 +10:30 becomes 02:30 +11
        (UTC_ZONE, "2024-02-29T01:00:00+00:00"),
    ],
)
def test_latest_due_is_the_last_run_walking_forward_finds(tz: ZoneInfo, change: str) -> None:
    """Found walking back, around clock changes too, it is the run a walk through every
    run up to ``until`` ends on."""
    at = datetime.fromisoformat(change)
    for expression, longest in LOOKED_BACK:
        schedule = cron.parse(expression)
        for step in range(-12, 13):  # every 10 minutes from 2 hours before to 2 after
            until = at + timedelta(minutes=10 * step, seconds=30 * (step % 2))
            for length in (timedelta(minutes=1), timedelta(minutes=50), longest):
                since = until - length
                expected = _latest_by_walking(schedule, since, until, tz)
                found = cron.latest_due(schedule, since, until, tz)
                assert found == expected, (expression, since, until)


def test_latest_due_looks_back_in_a_few_steps_however_frequent_the_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A week of runs every minute on weekdays, asked on a Sunday: the operator's event
    loop waits for the answer, which is not one look-up per missed minute."""
    calls = 0
    instant_of = cron._instant_of

    def counted(wall: datetime, tz: ZoneInfo) -> datetime:
        nonlocal calls
        calls += 1
        return instant_of(wall, tz)

    monkeypatch.setattr(cron, "_instant_of", counted)
    sunday = datetime(2024, 6, 16, 12, 0, tzinfo=UTC)

    latest = cron.latest_due("* * * * 1-5", sunday - timedelta(days=7), sunday, BERLIN)

    assert latest is not None
    assert latest.isoformat() == "2024-06-14T23:59:00+02:00"
    assert calls < 100


def test_a_schedule_with_no_run_within_the_horizon_is_not_due_and_has_no_next_run() -> None:
    # April 1st on a Wednesday: 2026, then 2037.
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

    assert cron.latest_due("0 0 */30 4 3", now - timedelta(days=30), now, UTC_ZONE) is None
    with pytest.raises(cron.CronError, match="0 0 \\*/30 4 3 has no run within 9 years"):
        cron.next_after("0 0 */30 4 3", now, UTC_ZONE)


# --- time zones --------------------------------------------------------------------------------


def test_a_known_time_zone_loads() -> None:
    assert cron.load_time_zone("Europe/Berlin") == BERLIN


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "Europe/Berln", "", "../etc/passwd"])
def test_an_unknown_time_zone_is_refused(name: str) -> None:
    with pytest.raises(cron.CronError, match=r"unknown time zone .*expected an IANA name"):
        cron.load_time_zone(name)


def test_validate_schedule_checks_both() -> None:
    schedule, tz = cron.validate_schedule("0 3 * * *", "America/New_York")

    assert (schedule.hours, tz) == (frozenset({3}), NEW_YORK)
    with pytest.raises(cron.CronError, match="unknown time zone"):
        cron.validate_schedule("0 3 * * *", "America/Nowhere")
