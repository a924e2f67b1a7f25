"""How ``pg_dump`` and ``pg_restore`` are told where to connect without leaking a password.

A process's argv is world-readable (``ps``, ``/proc/<pid>/cmdline``), so the DSN never
goes there whole: :func:`tool_connection` splits a ``postgresql://`` URI into the URI
without its password (safe on the command line; libpq parses it, query parameters and
all) and an environment holding the password as ``PGPASSWORD``. The child's
environment is built from scratch rather than inherited, so a stray ``PGHOST`` or
``PGPASSWORD`` in the runner's own environment can never redirect a dump or a restore.

An ``sslpassword`` (the passphrase of the client key) is refused rather than passed
on: libpq reads it from the connection string or a service file only, never from the
environment, so the tools could get it only on argv or in a service file written for
the run (the secret on disk, in a directory that must be writable and cleaned up). A
passphrase kept in the same pod as the key adds nothing to the key file's own
permissions, so a key without one is the setup to use. ``passfile`` and the other
``ssl*`` settings name files, not secrets, and stay in the URI.

:func:`redact` removes the password from any text (a tool's stderr) before it goes
into an error message.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from dockyard.runner.errors import DatabaseError

# Inherited as they are: what a child process needs to run at all, nothing of libpq's.
_PASSED_THROUGH = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "HOME", "TMPDIR")


@dataclass(frozen=True)
class ToolConnection:
    """A URI for ``--dbname`` (no password in it) and the environment that carries the rest."""

    uri: str
    env: dict[str, str] = field(repr=False)
    password: str | None = field(repr=False)
    database: str


def tool_connection(dsn: str, *, application_name: str) -> ToolConnection:
    """Split ``dsn`` into what goes on the command line and what goes in the environment.

    :class:`DatabaseError` for a DSN with an ``sslpassword``: see the module docstring.
    """
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("a database DSN must be a postgresql:// URI")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user, colon, password_text = userinfo.partition(":")
    password: str | None = unquote(password_text) if colon else None
    query = []
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "password":
            password = value  # a password in the query string is no safer on argv
        elif name == "sslpassword":
            raise DatabaseError(
                "the database DSN has an sslpassword: libpq reads none from the "
                "environment, so pg_dump and pg_restore would get it on their command "
                "line, readable by other processes; use a client key without a "
                "passphrase (its file's permissions protect it)"
            )
        else:
            query.append((name, value))
    netloc = f"{user}@{hosts}" if at and user else hosts
    uri = urlunsplit((parts.scheme, netloc, parts.path, urlencode(query, quote_via=quote), ""))
    env = base_env()
    env["PGAPPNAME"] = application_name
    # An unreachable server should fail the run in seconds, not hang it.
    env["PGCONNECT_TIMEOUT"] = "10"
    if password:
        env["PGPASSWORD"] = password
    query_db = dict(query).get("dbname")
    database = query_db or unquote(parts.path.lstrip("/")) or unquote(user) or "postgres"
    return ToolConnection(uri=uri, env=env, password=password or None, database=database)


def with_database(dsn: str, database: str) -> str:
    """``dsn`` pointed at ``database`` on the same server, as the same user."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))


def with_login(dsn: str, *, user: str, password: str, database: str) -> str:
    """``dsn``'s server (hosts, port, options) logged in as ``user`` into ``database``."""
    parts = urlsplit(dsn)
    hosts = parts.netloc.rpartition("@")[2]
    login = f"{quote(user, safe='')}:{quote(password, safe='')}"
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if k not in ("user", "password", "dbname")
    ]
    return urlunsplit(
        parts._replace(
            netloc=f"{login}@{hosts}",
            path="/" + quote(database, safe=""),
            query=urlencode(query, quote_via=quote),
        )
    )


def base_env() -> dict[str, str]:
    """A child's environment before anything is added: where programs are, the locale."""
    return {name: os.environ[name] for name in _PASSED_THROUGH if name in os.environ}
