"""Tool stderr shown in statuses keeps PostgreSQL's words but not the rows they quote."""

from __future__ import annotations

import pytest

from dockyard.runner.server_text import WITHHELD, without_row_values

STDERR = """\
pg_restore: error: COPY failed for table "vault": ERROR:  duplicate key value violates \
unique constraint "vault_pkey"
DETAIL:  Key (id)=(SECRET-42) already exists.
CONTEXT:  COPY vault, line 1: "SECRET-42\tSECRET-TOKEN"
PL/pgSQL function check_row() line 3 at RAISE
ERROR:  invalid input syntax for type integer: "SECRET-INPUT"
LINE 1: SELECT 'SECRET-SQL'::int
               ^
STATEMENT:  INSERT INTO vault VALUES ('SECRET-STATEMENT')
pg_dump: detail: Command was: INSERT INTO vault VALUES ('SECRET-COMMAND');
ERROR:  value "SECRET-RANGE" is out of range for type integer
HINT:  Drop the row.
pg_restore: warning: errors ignored on restore: 1
"""


def test_fields_that_quote_rows_are_withheld_and_the_rest_is_kept() -> None:
    shown = without_row_values(STDERR)

    assert "SECRET" not in shown
    assert 'violates unique constraint "vault_pkey"' in shown
    assert f"DETAIL: {WITHHELD}" in shown
    assert f"CONTEXT: {WITHHELD}" in shown
    assert 'invalid input syntax for type integer: "…"' in shown
    assert 'value "…" is out of range for type integer' in shown
    assert "HINT:  Drop the row." in shown
    assert shown.endswith("pg_restore: warning: errors ignored on restore: 1")


def test_text_without_server_fields_is_unchanged() -> None:
    text = "zstd: error 70 : Write error : cannot write block : Broken pipe"
    assert without_row_values(text) == text


def test_the_statement_pg_restore_prints_after_a_server_error_is_withheld() -> None:
    # pg_restore 15's ExecuteSqlCommand: "%s: %sCommand was: %s", the server's message
    # ending its line, so the failed statement starts one of its own, unprefixed.
    stderr = (
        "pg_restore: error: could not execute query: ERROR:  function leak() already exists\n"
        "Command was: CREATE FUNCTION public.leak() RETURNS text\n"
        "    LANGUAGE sql\n"
        "    AS $$ SELECT 'SECRET-API-KEY' $$;\n"
        "pg_restore: warning: errors ignored on restore: 1"
    )

    shown = without_row_values(stderr)

    assert "SECRET" not in shown
    assert f"Command was: {WITHHELD}" in shown
    assert "function leak() already exists" in shown
    assert shown.endswith("pg_restore: warning: errors ignored on restore: 1")


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        (
            'ERROR:  date/time field value out of range: "2019-02-30 secret"',
            'ERROR:  date/time field value out of range: "…"',
        ),
        (
            'ERROR:  invalid byte sequence for encoding "UTF8": 0xe9 0x20',
            'ERROR:  invalid byte sequence for encoding "UTF8": …',
        ),
        (
            'ERROR:  character with byte sequence 0xe9 0x20 in encoding "UTF8" has no '
            'equivalent in encoding "LATIN1"',
            'ERROR:  character with byte sequence … in encoding "UTF8" has no '
            'equivalent in encoding "LATIN1"',
        ),
        (  # names are quoted after a word: they stay
            'ERROR:  duplicate key value violates unique constraint "orders_pkey"',
            'ERROR:  duplicate key value violates unique constraint "orders_pkey"',
        ),
    ],
)
def test_a_value_any_message_quotes_after_a_colon_is_withheld(line: str, shown: str) -> None:
    assert without_row_values(line) == shown
