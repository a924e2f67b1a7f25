"""What of a tool's stderr may be shown: PostgreSQL's words, without the rows they quote.

``pg_dump`` and ``pg_restore`` pass on the server's error messages, whose fields echo
data: ``DETAIL:  Failing row contains (42, ...)``, ``DETAIL:  Key (id)=(42) already
exists``, ``CONTEXT:  COPY t, line 1: "42<TAB>..."``, ``STATEMENT:`` and ``QUERY:``
(the SQL, values and all), ``LINE 1:`` (a quoted piece of it), a tool's ``detail:
Command was: ...`` (or a bare ``Command was:`` line, as pg_restore prints the failed
statement after a server error that ends its line), and in the primary message itself
``invalid input syntax for type integer: "..."`` (any input quoted after a colon),
``value "..." is out of range`` or the bytes of ``invalid byte sequence for encoding``.
The text goes into Backup, Restore and RestoreDrill statuses and Events, which everyone
who may view the namespace reads, so :func:`without_row_values` keeps the primary
message (what failed, on which table and constraint) and replaces those fields, with
their continuation lines, by a marker.
"""

from __future__ import annotations

import re
from typing import Final

WITHHELD: Final = "[withheld: may hold row values]"

# A field that may quote data; it runs until the next line that starts a field.
_VALUE_FIELD = re.compile(
    r"^\s*(?:(?:(?:pg_dump|pg_restore):\s+(?:detail:\s+)?)?Command was|DETAIL|CONTEXT|STATEMENT"
    r"|QUERY"
    r"|LINE \d+):",
    re.IGNORECASE,
)
# The start of anything else: a tool's own line or another server field.
_FIELD = re.compile(
    r"^\s*(?:(?:pg_dump|pg_restore|zstd)\b|(?:ERROR|FATAL|PANIC|WARNING|NOTICE|INFO|LOG|HINT):)"
)
_QUOTED_VALUES: Final = (
    (re.compile(r'\bvalue "[^"]*" is out of range'), 'value "…" is out of range'),
    # An input the server could not take is quoted after a colon, whatever the message
    # (invalid input syntax, a malformed literal, a date/time field out of range ...);
    # names are quoted after a word (relation "t", constraint "t_pkey"), and stay.
    (re.compile(r':(\s+)"[^"]*"?'), r':\1"…"'),
    # Bytes of a value that is not valid in its encoding.
    (
        re.compile(
            r'((?:byte sequence|encoding "[^"]+"):?\s+)0x[0-9a-f]{2}(?:\s0x[0-9a-f]{2})*', re.I
        ),
        r"\1…",
    ),
)


def without_row_values(text: str) -> str:
    """``text`` with every field that may quote row values withheld (see the module)."""
    kept: list[str] = []
    withholding = False
    for line in text.splitlines():
        if _VALUE_FIELD.match(line):
            field = line.split(":", 1)[0] if "Command was" not in line else "Command was"
            kept.append(f"{field.strip()}: {WITHHELD}")
            withholding = True
            continue
        if withholding and not _FIELD.match(line):
            continue  # a continuation line of the withheld field
        withholding = False
        for pattern, replacement in _QUOTED_VALUES:
            line = pattern.sub(replacement, line)
        kept.append(line)
    return "\n".join(kept)
