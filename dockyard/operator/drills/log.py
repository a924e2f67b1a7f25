"""The drill run log in the platform database: one ``drill_runs`` row per finished run.

This module owns the SQL that writes ``drill_runs`` (migration ``0002_backups.sql``);
the API reads the table (``dockyard.api.drill_runs``). The drill's status keeps the
last ``historyLimit`` runs; the table keeps every run, with the reason of each failed
check. A row is written before the status shows the run; a run whose row could not
be written (the database was down) is in the status only, and an operator that died
before the status was written runs the drill again, which adds a second row.
"""

from __future__ import annotations

from typing import Final

import asyncpg

from dockyard.core.models.drill_runs import DrillRun

_INSERT: Final = """
INSERT INTO drill_runs (
    namespace, drill, backup, started_at, finished_at, restore_seconds,
    backup_age_seconds, result, failed_checks)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)
"""


async def append_run(pool: asyncpg.Pool, *, namespace: str, drill: str, run: DrillRun) -> None:
    """Record the finished ``run`` of ``drill``."""
    failed_checks = [check.model_dump(mode="json") for check in run.failed_checks]
    async with pool.acquire() as conn:
        await conn.execute(
            _INSERT,
            namespace,
            drill,
            run.backup,
            run.started_at,
            run.finished_at,
            run.restore_seconds,
            run.backup_age_seconds,
            run.result.value,
            # The pool's connections encode jsonb themselves (dockyard.core.db).
            failed_checks,
        )


__all__ = ["append_run"]
