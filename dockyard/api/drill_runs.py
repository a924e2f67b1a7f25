"""Reading restore drill runs from the platform database (``drill_runs``, migration 0002).

The operator appends a row per run; the API only reads them, newest first, paged by
the keyset ``(started_at, id)`` that the table's index is ordered by, so a page costs
one index range scan however long the history grows. A run without a result is still
in progress and is not listed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from dockyard.core.models.drill_runs import DrillResult, DrillRunSummary

_SQL_FIRST_PAGE = """
SELECT id, backup, started_at, finished_at, restore_seconds, backup_age_seconds, result,
       jsonb_array_length(failed_checks) AS failed_check_count
FROM drill_runs
WHERE namespace = $1 AND drill = $2 AND result IS NOT NULL AND started_at >= $4
ORDER BY started_at DESC, id DESC LIMIT $3
"""
_SQL_NEXT_PAGE = """
SELECT id, backup, started_at, finished_at, restore_seconds, backup_age_seconds, result,
       jsonb_array_length(failed_checks) AS failed_check_count
FROM drill_runs
WHERE namespace = $1 AND drill = $2 AND result IS NOT NULL AND (started_at, id) < ($3, $4)
    AND started_at >= $6
ORDER BY started_at DESC, id DESC LIMIT $5
"""


@dataclass(frozen=True, slots=True)
class RunKey:
    """Where a page of runs ended: its last run's start time and row id."""

    started_at: datetime
    id: int


@dataclass(frozen=True, slots=True)
class RunPage:
    """One page of runs, and the key to continue after it (None on the last page)."""

    runs: list[DrillRunSummary]
    next: RunKey | None


class DrillRunLog:
    """The ``drill_runs`` table, read-only."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def page(
        self, *, namespace: str, drill: str, since: datetime, after: RunKey | None, limit: int
    ) -> RunPage:
        """Runs of ``drill`` newest first, after ``after``; ``limit`` at most. Only runs
        started ``since`` (the drill's creation) are its own: the table is keyed by name,
        and a drill, or a namespace, made again under an old name must not show its
        predecessor's runs as its own, nor to another team."""
        if after is None:
            rows = await self.pool.fetch(_SQL_FIRST_PAGE, namespace, drill, limit + 1, since)
        else:
            rows = await self.pool.fetch(
                _SQL_NEXT_PAGE, namespace, drill, after.started_at, after.id, limit + 1, since
            )
        shown = rows[:limit]
        runs = [
            DrillRunSummary(
                backup=row["backup"] or "",
                started_at=row["started_at"],
                finished_at=row["finished_at"],
                restore_seconds=row["restore_seconds"],
                backup_age_seconds=row["backup_age_seconds"],
                result=DrillResult(row["result"]),
                failed_check_count=row["failed_check_count"],
            )
            for row in shown
        ]
        last = shown[-1] if shown and len(rows) > limit else None
        return RunPage(runs, RunKey(last["started_at"], last["id"]) if last else None)


__all__ = ["DrillRunLog", "RunKey", "RunPage"]
