"""A drill's checks against its restored scratch database: row counts and SQL assertions.

The row counts come from ``restoring.check_row_counts`` (every table against the
backup's manifest); the SQL assertions are run here. Each query runs in a read-only
transaction as the environment's role (``SET LOCAL ROLE``), not as the server's admin:
a drill's author gets no more power over the server than the environment's own
application has, and a read-only transaction cannot change the restored data another
check looks at. A statement timeout bounds each query. The first column of the first
row is read in PostgreSQL's text form (``::text``, as psql prints it), so ``expect``
is written the way a person reads the value.

A query that fails (a syntax error, a missing table, the timeout) is a failed check
with the server's message; it never stops the other checks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

import asyncpg

from dockyard.core.models.backup import Backup
from dockyard.core.models.restore_drill import DrillChecks, FailedCheck, SqlCheck
from dockyard.operator.backups import BackupError
from dockyard.operator.backups.manifest import connect
from dockyard.operator.runs.context import RunContext
from dockyard.operator.runs.drill_plan import (
    ROW_COUNT_CHECK,
    failed,
    judge_sql,
    row_count_failures,
    sql_error,
)
from dockyard.operator.runs.restoring import admin_dsn, check_row_counts

SQL_CHECK_TIMEOUT_MS: Final = 60_000
# The alias of the query's first column; unusual, so it meets none of the query's own.
_VALUE: Final = "dockyard_check_value"
_ROLE_PATTERN: Final = re.compile(r"[a-z0-9_]{1,63}")


def check_query(query: str) -> str:
    """``query`` wrapped to give its first row's first column as text.

    The query goes on lines of its own, so a trailing ``--`` comment ends before the
    wrapper; a trailing semicolon is dropped (a subquery cannot have one).
    """
    body = query.strip()
    while body.endswith(";"):
        body = body[:-1].rstrip()
    # The drill author's SQL is the point of a SQL check: it runs read-only, as the
    # environment's own role, on a scratch copy (see run_sql_check).
    return f"SELECT q.{_VALUE}::text FROM (\n{body}\n) AS q({_VALUE}) LIMIT 1"  # nosec B608


def _role_identifier(role: str) -> str:
    # Roles come from database_identity; anything else is a programming error.
    if not _ROLE_PATTERN.fullmatch(role):
        raise ValueError(f"unexpected role name {role!r}")
    return f'"{role}"'


async def run_sql_checks(dsn: str, role: str, checks: Sequence[SqlCheck]) -> list[FailedCheck]:
    """Run ``checks`` on the database ``dsn`` names, as ``role``; the ones that failed."""
    if not checks:
        return []
    failures: list[FailedCheck] = []
    done = 0
    try:
        async with connect(dsn) as conn:
            for check in checks:
                try:
                    value = await _first_value(conn, role, check.query)
                except asyncpg.PostgresError as exc:
                    failures.append(sql_error(check, str(exc)))
                else:
                    failure = judge_sql(check, value)
                    if failure is not None:
                        failures.append(failure)
                done += 1
    except BackupError as exc:  # the connection failed: the checks not run yet failed too
        failures += [sql_error(check, exc.message) for check in checks[done:]]
    return failures


async def _first_value(conn: asyncpg.Connection, role: str, query: str) -> str | None:
    async with conn.transaction(readonly=True):
        await conn.execute(f"SET LOCAL ROLE {_role_identifier(role)}")
        await conn.execute(f"SET LOCAL statement_timeout = {SQL_CHECK_TIMEOUT_MS}")
        value = await conn.fetchval(check_query(query))
    return None if value is None else str(value)


async def run_checks(
    context: RunContext, backup: Backup, checks: DrillChecks, *, database: str, role: str
) -> list[FailedCheck]:
    """Every data check of a drill on its restored ``database``; the failed ones."""
    failures: list[FailedCheck] = []
    if checks.row_counts:
        try:
            failures += row_count_failures(await check_row_counts(context, backup, database))
        except BackupError as exc:
            failures.append(failed(ROW_COUNT_CHECK, f"counting rows failed: {exc.message}"))
    failures += await run_sql_checks(admin_dsn(context, database), role, checks.sql)
    return failures


__all__ = ["SQL_CHECK_TIMEOUT_MS", "check_query", "run_checks", "run_sql_checks"]
