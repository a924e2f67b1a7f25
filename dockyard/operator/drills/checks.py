"""A drill's checks against its restored scratch database: row counts and SQL assertions.

The row counts come from ``restoring.check_row_counts`` (every table against the
backup's manifest); the SQL assertions are run here. A drill's author gets no more
power over the server than the environment's own application has: each check runs
logged in as the environment's own role (its database Secret's login), never as the
server's admin. ``SET ROLE`` would not do: a query can undo it with
``set_config('role', 'none', true)`` and be the admin again.

Each check is one statement (the extended protocol refuses several) in its own
``READ ONLY`` transaction, so it cannot change the restored data another check looks
at, with a ``statement_timeout`` (``DOCKYARD_DRILL_CHECK_TIMEOUT``, 30 s by default).
The first column of the first row is read in PostgreSQL's text form (``::text``, as
psql prints it), so ``expect`` is written the way a person reads the value. The value
is compared in full; only what a failed check records (the value, a server's message)
is cut, to ``VALUE_CHARS`` characters, since drill status is readable by every viewer
of the namespace.

A query that fails (a syntax error, a missing table, the timeout) is a failed check
with the server's message; it never stops the other checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import asyncpg

from dockyard.core.models.backup import Backup
from dockyard.core.models.drill_runs import FailedCheck
from dockyard.core.models.restore_drill import DrillChecks, SqlCheck
from dockyard.operator.database import TenantLogin
from dockyard.operator.drills.judging import (
    RUN_CHECK,
    failed,
    judge_sql,
    row_count_failures,
    sql_error,
)
from dockyard.operator.runs.context import RunContext, tenant_dsn
from dockyard.operator.runs.restoring import check_row_counts
from dockyard.runner import BackupError
from dockyard.runner.manifest import connect

# The statement timeout a check gets unless the operator's settings say otherwise.
SQL_CHECK_TIMEOUT_MS: Final = 30_000
# The longest value (or server message) a check records in status.
VALUE_CHARS: Final = 200
# The alias of the query's first column; unusual, so it meets none of the query's own.
_VALUE: Final = "dockyard_check_value"


def check_query(query: str) -> str:
    """``query`` wrapped to give its first row's first column as text.

    The query goes on lines of its own, so a trailing ``--`` comment ends before the
    wrapper; a trailing semicolon is dropped (a subquery cannot have one).
    """
    body = query.strip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    # The drill author's SQL is the point of a SQL check: it runs read-only, logged in
    # as the environment's own role, on a scratch copy (see run_sql_checks).
    return f"SELECT q.{_VALUE}::text FROM (\n{body}\n) AS q({_VALUE}) LIMIT 1"  # nosec B608


def clip(text: str, limit: int = VALUE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, marked when it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Errors of the server, not of a check's query: the connection (08), a shutdown or
# restart (57P01-57P03), too many connections (53300), the system (58). Not a statement
# timeout (57014) nor a query's own memory or disk use: those are the check's failure.
_SERVERS_FAULT: Final = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.PostgresSystemError,
)


async def run_sql_checks(
    dsn: str, checks: Sequence[SqlCheck], *, timeout_ms: int = SQL_CHECK_TIMEOUT_MS
) -> list[FailedCheck]:
    """Run ``checks`` on the database ``dsn`` names (as its login); the ones that failed."""
    if not checks:
        return []
    failures: list[FailedCheck] = []
    done = 0
    try:
        # The author's SQL names tables as the application does: the database's own
        # search_path. It runs as the tenant, so nothing it finds there is a trap.
        async with connect(dsn, search_path=None) as conn:
            for check in checks:
                try:
                    value = await _first_value(conn, check.query, timeout_ms)
                except _SERVERS_FAULT as exc:  # the server failed it, not the data
                    failures.append(failed(RUN_CHECK, f"SQL check {check.name}: {clip(str(exc))}"))
                except asyncpg.PostgresError as exc:
                    failures.append(sql_error(check, clip(str(exc))))
                else:
                    # Compared in full: ``expect`` may be longer than what status shows,
                    # and a value cut to its shown form must not pass for it.
                    failure = judge_sql(check, value)
                    if failure is not None:
                        failures.append(failure)
                done += 1
    except BackupError as exc:
        # The connection failed: the checks not run yet say nothing about the backup.
        names = ", ".join(check.name for check in checks[done:])
        failures.append(failed(RUN_CHECK, f"SQL checks {names} not run: {exc.message}"))
    return failures


async def _first_value(conn: asyncpg.Connection, query: str, timeout_ms: int) -> str | None:
    async with conn.transaction(readonly=True):
        # A parameter, not text formatted into SQL; LOCAL: it ends with the transaction.
        await conn.execute(
            "SELECT pg_catalog.set_config('statement_timeout', $1, true)", str(timeout_ms)
        )
        value = await conn.fetchval(check_query(query))
    return None if value is None else str(value)


async def run_checks(
    context: RunContext,
    backup: Backup,
    checks: DrillChecks,
    *,
    database: str,
    tenant: TenantLogin,
) -> list[FailedCheck]:
    """Every data check of a drill on its restored ``database``, run as ``tenant``; the
    failed ones."""
    failures: list[FailedCheck] = []
    if checks.row_counts:
        try:
            manifest = backup.status.manifest
            tables = manifest.tables if manifest is not None else []
            counted = await check_row_counts(context, tables, database, tenant)
            failures += row_count_failures(counted)
        except BackupError as exc:  # the database could not be read: not the backup's fault
            failures.append(failed(RUN_CHECK, f"counting rows failed: {exc.message}"))
    dsn = tenant_dsn(context.settings, tenant, database)
    timeout_ms = int(context.settings.drill_check_timeout * 1000)
    failures += await run_sql_checks(dsn, checks.sql, timeout_ms=timeout_ms)
    return failures


__all__ = [
    "SQL_CHECK_TIMEOUT_MS",
    "VALUE_CHARS",
    "check_query",
    "clip",
    "run_checks",
    "run_sql_checks",
]
