"""Events that waited out a platform-database outage are logged once it answers, as
they would have been without the outage: late, not lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import asyncpg
import pytest

from dockyard.core.events import Event, EventType, ObjectRef, ScalingEventData, make
from dockyard.operator.events import emitter as emitting
from dockyard.operator.events.emitter import Emitter


class _Log:
    """The platform database's ``events`` table: out (every call refused) until ``up``."""

    def __init__(self) -> None:
        self.up = False
        self.rows: list[tuple[str, str]] = []  # (id, type), in order

    def _answer(self) -> None:
        if not self.up:
            raise ConnectionRefusedError(111, "Connection refused")

    async def fetch(self, _sql: str, ids: list[str], *rest: Any) -> list[dict[str, Any]]:
        self._answer()
        if rest:  # the append: ids, types, resources, namespaces, names, times, bodies
            added = [(i, t) for i, t in zip(ids, rest[0], strict=True) if i not in dict(self.rows)]
            self.rows += added
            return [{"id": i, "seq": len(self.rows)} for i, _ in added]
        return [{"id": i} for i, _ in self.rows if i in ids]

    async def fetchval(self, _sql: str, *_args: Any) -> bool:
        """Whether a paused event is logged (the only question the emitter asks so)."""
        self._answer()
        return any(t == EventType.SCALING_PAUSED.value for _, t in self.rows)

    async def execute(self, *_args: Any) -> None:
        self._answer()

    def is_in_transaction(self) -> bool:
        return True

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Log]:
        self._answer()
        yield self


def _scaling(event_type: EventType, generation: int, since: str) -> Event:
    ref = ObjectRef(kind="ScalingPolicy", namespace="team", name="shop", uid="uid-1",
                    generation=generation)  # fmt: skip
    return make(event_type, ScalingEventData(object=ref), occurrence=since)


async def test_a_pause_and_its_resume_held_through_an_outage_are_both_logged_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(emitting, "RETRY_SECONDS", 0.01)
    log = _Log()
    emitter = Emitter(cast(asyncpg.Pool, log))
    paused = _scaling(EventType.SCALING_PAUSED, 2, "t1")
    resumed = _scaling(EventType.SCALING_RESUMED, 3, "t2")
    try:
        await emitter.emit([paused])
        await emitter.emit([resumed])
        assert log.rows == []
        log.up = True
        for _ in range(200):
            if len(log.rows) == 2:
                break
            await asyncio.sleep(0.01)
    finally:
        await emitter.close()

    assert log.rows == [
        (paused.id, "scaling.paused"),
        (resumed.id, "scaling.resumed"),
    ]
