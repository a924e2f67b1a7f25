"""Audit retention: the ``cleanup_ctx`` task that purges events past
``DOCKYARD_AUDIT_RETENTION_DAYS``, a minute after start-up and then hourly.

The purge itself is the repository's (``AuditLog.purge_older_than``): batched, under an
advisory lock so one replica purges at a time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from dockyard.api import keys
from dockyard.api.audit.repository import AuditLog
from dockyard.core.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

RETENTION_FIRST_DELAY_SECONDS = 60.0
RETENTION_INTERVAL_SECONDS = 3600.0


async def run_retention(log: AuditLog, *, days: int, first_delay: float, interval: float) -> None:
    """Purge events older than ``days`` after ``first_delay`` seconds, then every ``interval``.

    Runs until cancelled. A failed purge is logged as an error and retried at the next
    interval, whatever failed (the pool's breaker answers ``DependencyUnavailable`` while
    PostgreSQL is down): retention is periodic by nature, and one bad hour must not end
    it. Cancellation is no ``Exception``, so it still stops the task.
    """
    await asyncio.sleep(first_delay)
    while True:
        try:
            deleted = await log.purge_older_than(days=days)
        except Exception as exc:
            logger.error(
                "audit.retention_failed",
                exc_info=True,
                extra={"event": "audit.retention_failed", "error": type(exc).__name__},
            )
        else:
            if deleted is None:
                logger.info("audit retention skipped: another replica holds the purge lock")
            else:
                logger.info(
                    "audit retention purged old events",
                    extra={"event": "audit.purged", "deleted": deleted, "retention_days": days},
                )
        await asyncio.sleep(interval)


async def retention(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the retention task, started with the app and cancelled at shutdown.

    Must come after the database context, whose pool it uses (and which, being
    cleaned up in reverse order, closes only after this task has stopped).
    """
    task = asyncio.create_task(
        run_retention(
            AuditLog(app[keys.DB_POOL]),
            days=app[keys.SETTINGS].audit_retention_days,
            first_delay=RETENTION_FIRST_DELAY_SECONDS,
            interval=RETENTION_INTERVAL_SECONDS,
        ),
        name="dockyard-audit-retention",
    )
    yield
    await cancel_and_wait(task)
