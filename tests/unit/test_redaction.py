"""One redaction for every text Dockyard shows: plain and URL-quoted secrets, and the
pieces of a password a misparsed DSN split it into."""

from __future__ import annotations

from dockyard.core.db import DatabaseUnreachable
from dockyard.core.redaction import redact, typed_passwords
from dockyard.operator.database.errors import translate


def test_a_secret_is_hidden_as_typed_and_url_quoted() -> None:
    text = "login s3cr/t@x failed; dsn postgresql://u:s3cr%2Ft%40x@h/db"
    assert redact(text, "s3cr/t@x", None, "") == "login *** failed; dsn postgresql://u:***@h/db"


def test_a_typed_password_and_its_pieces_come_longest_first() -> None:
    assert typed_passwords("postgresql://app:pa/ss/word-long@db:5432/x") == [
        "pa/ss/word-long",
        "word-long",
    ]
    assert typed_passwords("postgresql://app:p%40ss-word@db/x") == ["p%40ss-word", "p@ss-word"]
    assert typed_passwords("postgresql://app:ab/cd%40ef@db/x") == [
        "ab/cd%40ef",
        "ab/cd@ef",
        "cd%40ef",
        "cd@ef",
    ]
    assert typed_passwords("postgresql://app@db/x") == []


def test_a_short_decoded_form_hides_nothing_that_is_not_secret() -> None:
    assert typed_passwords("postgresql://app:%2F%2F@db/x") == ["%2F%2F"]
    assert typed_passwords("postgresql://app:p%40s@db/x") == ["p%40s", "p@s"]
    message = str(
        DatabaseUnreachable(
            "DOCKYARD_DATABASE_URL",
            OSError("connect to /var/run/postgresql failed"),
            dsn="postgresql://app:%2F%2F@db/x",
        )
    )
    assert "/var/run/postgresql" in message
    assert typed_passwords("not a dsn") == []


def test_the_platform_database_error_names_no_piece_of_the_password() -> None:
    dsn = "postgresql://app:hunter/two-and-more@db/x"
    cause = OSError('database "two-and-more@db/x" does not exist')
    message = str(DatabaseUnreachable("DOCKYARD_DATABASE_URL", cause, dsn=dsn))
    assert "two-and-more" not in message
    assert message.startswith("the database of DOCKYARD_DATABASE_URL took no connection:")


def test_the_managed_servers_errors_hide_the_quoted_password_too() -> None:
    error = translate(OSError("connect to postgresql://admin:p%40ss@h failed"), "h", ["p@ss"])
    assert "p%40ss" not in str(error)
    assert "***" in str(error)


def test_a_percent_encoded_password_is_hidden_as_the_driver_decoded_it_too() -> None:
    dsn = "postgresql://app:s3cr%40t-pw@db/x"
    cause = OSError("password authentication failed: s3cr@t-pw was refused")
    message = str(DatabaseUnreachable("DOCKYARD_DATABASE_URL", cause, dsn=dsn))
    assert "s3cr@t-pw" not in message
    assert "***" in message
