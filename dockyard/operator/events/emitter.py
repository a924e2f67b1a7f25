"""``Emitter``: logs the events the operator's watch events announce, once each.

Kopf calls ``observe`` for every watch event of every Dockyard kind. Most announce
nothing new: the ids the log already holds are remembered (a bounded LRU), so a status
update that changes nothing else costs no query. When the platform database does not
answer, the events wait in memory and a background flush retries them every
``RETRY_SECONDS``: an event is late then, not lost while the operator runs (and a
restart re-lists every object and announces its state again). At most ``PENDING_MAX``
wait: past that the oldest are dropped, and said so in the log, so that a long outage
costs bounded memory, not the operator (a restart would lose them all the same).

A transition that happened longer ago than the log keeps events
(``DOCKYARD_EVENT_RETENTION_DAYS``, ``retention_days``) is not announced, whatever the
watch event that shows it: retention may have purged its event, and logging it again
would give it a new ``seq`` and deliver it again to every Webhook and stream. Each
watch event carries the object's whole status, so not only the listing at a restart
shows an old transition: any later change to the object (a backup verified by a drill,
an environment's replica count) does too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg

from dockyard.core import event_log
from dockyard.core.events import Event, EventType
from dockyard.core.settings import Settings
from dockyard.core.tasks import cancel_and_wait
from dockyard.core.transitions import announced, happened_at

logger = logging.getLogger(__name__)

REMEMBERED: Final = 50_000
RETRY_SECONDS: Final = 5.0
PENDING_MAX: Final = 10_000
RETENTION_DAYS: Final[int] = Settings.model_fields["event_retention_days"].default
_SQL_PAUSED = """
SELECT EXISTS (
    SELECT 1 FROM events WHERE type = 'scaling.paused' AND namespace = $1 AND name = $2
    AND body -> 'data' -> 'object' ->> 'uid' = $3
)
"""


class Emitter:
    """The operator's one writer of the event log."""

    def __init__(self, pool: asyncpg.Pool, *, retention_days: int = RETENTION_DAYS) -> None:
        self.pool = pool
        self.retention = timedelta(days=retention_days)
        self._known: OrderedDict[str, None] = OrderedDict()
        self._pending: dict[str, Event] = {}
        self._lock = asyncio.Lock()
        self._retry: asyncio.Task[None] | None = None

    async def observe(self, watch: str | None, body: Mapping[str, Any]) -> None:
        """Log what ``body`` announces that is not logged yet, nor older than the log keeps."""
        horizon = datetime.now(UTC) - self.retention
        fresh = [
            e
            for e in announced(watch, body)
            if e.id not in self._known and not _before(happened_at(e, body), horizon)
        ]
        if fresh:
            await self.emit(fresh)

    async def emit(self, candidates: list[Event]) -> None:
        async with self._lock:
            for event in candidates:
                self._pending.setdefault(event.id, event)
            self._drop_oldest()
            await self._flush()

    def _drop_oldest(self) -> None:
        over = len(self._pending) - PENDING_MAX
        if over <= 0:
            return
        for event_id in list(self._pending)[:over]:
            del self._pending[event_id]
        logger.warning(
            "events dropped: too many wait for the platform database",
            extra={"dropped": over, "pending": len(self._pending)},
        )

    async def _flush(self) -> None:
        if not self._pending:
            return
        try:
            waiting = list(self._pending.values())
            already = await event_log.known(self.pool, [e.id for e in waiting])
            due: list[Event] = []
            for event in waiting:
                if event.id not in already and await self._follows(event, due):
                    due.append(event)
            logged = await event_log.append_now(self.pool, due)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            logger.warning(
                "events wait for the platform database",
                extra={"pending": len(self._pending), "error": type(exc).__name__},
            )
            self._schedule_retry()
            return
        for event in waiting:
            self._pending.pop(event.id, None)
            self._remember(event.id)
        for event in due:
            if event.id in logged:
                logger.info(
                    "event %s",
                    event.type.value,
                    extra={"event_id": event.id, "namespace": event.namespace,
                           "object": event.data.object.name},
                )  # fmt: skip

    async def _follows(self, event: Event, earlier: list[Event]) -> bool:
        """A resumed scaling policy was paused before (its first state is not a resume):
        in the log, or ``earlier`` in the batch being logged (an outage held both)."""
        if event.type is not EventType.SCALING_RESUMED:
            return True
        ref = event.data.object
        key = (ref.namespace, ref.name, ref.uid)  # as _SQL_PAUSED: any generation
        if any(e.type is EventType.SCALING_PAUSED and _key(e) == key for e in earlier):
            return True
        return bool(await self.pool.fetchval(_SQL_PAUSED, *key))

    def _remember(self, event_id: str) -> None:
        self._known[event_id] = None
        self._known.move_to_end(event_id)
        while len(self._known) > REMEMBERED:
            self._known.popitem(last=False)

    def _schedule_retry(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.create_task(self._retry_later(), name="event-retry")

    async def _retry_later(self) -> None:
        while self._pending:
            await asyncio.sleep(RETRY_SECONDS)
            async with self._lock:
                await self._flush()  # on failure the loop, still running, tries again

    async def close(self) -> None:
        await cancel_and_wait(self._retry)


def _key(event: Event) -> tuple[str, str, str]:
    ref = event.data.object
    return ref.namespace, ref.name, ref.uid


def _before(when: datetime | None, horizon: datetime) -> bool:
    """Whether a transition of time ``when`` is older than ``horizon`` (``None``: the
    status does not say, so it is taken as new)."""
    return when is not None and when < horizon
