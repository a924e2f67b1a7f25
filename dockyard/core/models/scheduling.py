"""Cron schedules and time zones as the BackupSchedule and RestoreDrill specs declare them.

This module owns the *shape* checks of ``spec.schedule`` and ``spec.timeZone``: what the
API server can decide with CEL and regular expressions (five space-separated fields, or
a macro; each field built from numbers in its range, names, ranges, steps and lists), so
``kubectl apply`` refuses a six-field expression with a message saying what was
expected. pydantic runs the same expressions with the same messages, so the REST API
answers alike.

What CEL cannot say (a reversed range, a step wider than its field, a day-of-month no
month has, a time zone the tz database does not know) is decided by the strict parser in
``dockyard.core.cron``, whose message the operator writes into the object's Ready
condition. The models deliberately do not run that parser: an object the API server
accepted must always parse, so the operator can report what is wrong with it.

The regular expressions are RE2-compatible (CEL's ``matches``) and mean the same to
Python's ``re``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Final

from pydantic import AfterValidator, Field

from dockyard.core.cron import FIELD_NAMES, MACROS, field_count_message
from dockyard.core.models.declarations import ValidationRule

RUN_NOW_ANNOTATION: Final = "dockyard.io/run-now"
"""Set (to any value) on a BackupSchedule or RestoreDrill to run it at once, outside its
schedule; the operator removes the annotation when the run starts."""

CRON_MACROS: Final = tuple(MACROS)

SCHEDULE_MAX_LENGTH: Final = 100
# Printable ASCII only: fields are separated by spaces, never tabs or new lines, so CEL's
# split(' ') sees the same fields as the strict parser.
SCHEDULE_PATTERN: Final = r"^[ -~]+$"

# An IANA tz database name: UTC, Europe/Berlin, America/Argentina/Buenos_Aires,
# Etc/GMT+5. Whether the name exists is the tz database's call, made by the operator.
TIME_ZONE_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$"

_STEP = r"/0*[1-9][0-9]*"
_OTHER = r"[^ ]+"
_FIVE_FIELDS = rf"^ *{_OTHER}( +{_OTHER}){{4}} *$"
_MACRO = r"^ *@(" + "|".join(macro[1:] for macro in CRON_MACROS) + r") *$"


@dataclass(frozen=True, slots=True)
class _FieldShape:
    label: str
    values: str  # regular expression of one value
    expected: str

    def pattern(self) -> str:
        item = rf"(?:{self.values})-(?:{self.values})(?:{_STEP})?|(?:{self.values})"
        return rf"(?:\*(?:{_STEP})?|(?:{item})(?:,(?:{item}))*)"


_SHAPES: Final = (
    _FieldShape("minute", r"[0-5]?[0-9]", "numbers 0-59"),
    _FieldShape("hour", r"[01]?[0-9]|2[0-3]", "numbers 0-23"),
    _FieldShape("day-of-month", r"0?[1-9]|[12][0-9]|3[01]", "numbers 1-31"),
    _FieldShape(
        "month",
        r"0?[1-9]|1[0-2]|(?i:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)",
        "numbers 1-12 or names JAN-DEC",
    ),
    _FieldShape(
        "day-of-week",
        r"0?[0-7]|(?i:sun|mon|tue|wed|thu|fri|sat)",
        "numbers 0-7 (0 and 7 are Sunday) or names SUN-SAT",
    ),
)


def _positional(index: int) -> str:
    """The whole expression, with field ``index`` checked and the others taken as they are."""
    parts = [_OTHER] * len(_SHAPES)
    parts[index] = _SHAPES[index].pattern()
    return "^ *" + " +".join(parts) + " *$"


def _expected(shape: _FieldShape) -> str:
    return (
        f"* or */n, or a comma-separated list of {shape.expected}, ranges a-b and "
        "stepped ranges a-b/n"
    )


def field_message(index: int, token: str) -> str:
    """What is wrong with field ``index`` (from 0) whose text is ``token``."""
    shape = _SHAPES[index]
    return f"{shape.label} (field {index + 1}) {token} is invalid: expected {_expected(shape)}"


# The CEL spellings of the two messages above; kept next to them so they stay the same.
_FIELDS_CEL = "self.split(' ').filter(f, f != '')"
# The field count as text, looked up rather than converted: CEL's cost estimate cannot
# bound the length of string(int), and a message built from it exceeds the CRD's budget.
_COUNTS_CEL = "[" + ",".join(f"'{n}'" for n in range(SCHEDULE_MAX_LENGTH // 2 + 1)) + "]"
_COUNT_RULE = ValidationRule(
    rule=f"self.matches(r'{_FIVE_FIELDS}') || self.matches(r'{_MACRO}')",
    message=f"expected 5 fields ({FIELD_NAMES}) or one of {', '.join(CRON_MACROS)}",
    message_expression=(
        "self.trim().startsWith('@') ? "
        f"self.trim() + ' is not a supported macro: expected one of {', '.join(CRON_MACROS)}' : "
        f"'expected 5 fields ({FIELD_NAMES}), got ' + {_COUNTS_CEL}[{_FIELDS_CEL}.size()] + "
        "': ' + self"
    ),
)
_FIELD_RULES = tuple(
    ValidationRule(
        # Only judged once there are five fields, so a six-field expression reports the
        # field count alone.
        rule=f"!self.matches(r'{_FIVE_FIELDS}') || self.matches(r'{_positional(index)}')",
        message=f"{shape.label} (field {index + 1}) is invalid: expected {_expected(shape)}",
        message_expression=(
            f"'{shape.label} (field {index + 1}) ' + {_FIELDS_CEL}[{index}] + "
            f"' is invalid: expected {_expected(shape)}'"
        ),
    )
    for index, shape in enumerate(_SHAPES)
)

_FIVE_FIELDS_RE = re.compile(_FIVE_FIELDS)
_MACRO_RE = re.compile(_MACRO)
_POSITIONAL_RE = tuple(re.compile(_positional(index)) for index in range(len(_SHAPES)))


def check_schedule_shape(expression: str) -> str:
    """pydantic's side of the CEL rules: the same checks, the same messages."""
    if _MACRO_RE.search(expression):
        return expression
    if not _FIVE_FIELDS_RE.search(expression):
        raise ValueError(field_count_message(expression))
    tokens = expression.split()
    for index, pattern in enumerate(_POSITIONAL_RE):
        if not pattern.search(expression):
            raise ValueError(field_message(index, tokens[index]))
    return expression


CronExpression = Annotated[
    str,
    Field(min_length=1, max_length=SCHEDULE_MAX_LENGTH, pattern=SCHEDULE_PATTERN),
    _COUNT_RULE,
    *_FIELD_RULES,
    AfterValidator(check_schedule_shape),
]
"""A five-field cron expression (``minute hour day-of-month month day-of-week``) or a
macro, checked as far as CEL can; ``dockyard.core.cron.parse`` decides the rest."""

TimeZoneName = Annotated[str, Field(min_length=1, max_length=64, pattern=TIME_ZONE_PATTERN)]
"""An IANA time zone name; ``dockyard.core.cron.load_time_zone`` checks that it exists."""

SCHEDULE_DESCRIPTION: Final = (
    "When to run, as a five-field cron expression: minute (0-59), hour (0-23), "
    "day-of-month (1-31), month (1-12 or JAN-DEC) and day-of-week (0-7, 0 and 7 being "
    "Sunday, or SUN-SAT), separated by spaces. Each field is *, */n, or a comma-separated "
    "list of values, ranges a-b and stepped ranges a-b/n. When both day-of-month and "
    "day-of-week are restricted (neither starts with *), a day matching either runs. "
    "The macros @yearly (@annually), @monthly, @weekly, @daily (@midnight) and @hourly "
    "are accepted. Six- or seven-field (seconds, years) and Quartz syntax (?, L, W, #) "
    "are refused, as are @reboot, reversed ranges, step 0 and days no month has; what "
    "CEL cannot check is reported in the Ready condition."
)
TIME_ZONE_DESCRIPTION: Final = (
    "IANA time zone the schedule is read in, for example Europe/Berlin or "
    "America/New_York. Daylight saving time is honoured: a run whose wall-clock time "
    "does not exist that day (clocks jump forward over it) runs at the moment of the "
    "jump; a wall-clock time that happens twice (clocks go back) runs once, the first "
    "time. An unknown name is reported in the Ready condition."
)

__all__ = [
    "CRON_MACROS",
    "RUN_NOW_ANNOTATION",
    "SCHEDULE_DESCRIPTION",
    "TIME_ZONE_DESCRIPTION",
    "CronExpression",
    "TimeZoneName",
    "check_schedule_shape",
    "field_message",
]
