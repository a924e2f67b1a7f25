"""While the platform database is out, the events waiting for it are bounded: past
``PENDING_MAX`` the oldest go, and the newest are still logged once it answers."""

from __future__ import annotations

from typing import Any, cast

import asyncpg
import pytest

from dockyard.core.events import Event, EventType, ObjectRef, RunEventData, make
from dockyard.operator.events import emitter as emitting
from dockyard.operator.events.emitter import Emitter


class _Out:
    """The platform database, out: every call fails as a refused connection does."""

    async def fetch(self, *_args: Any) -> list[Any]:
        raise ConnectionRefusedError(111, "Connection refused")


def _event(number: int) -> Event:
    ref = ObjectRef(kind="Backup", namespace="team", name=f"b{number}", uid=f"uid-{number}",
                    generation=1)  # fmt: skip
    return make(EventType.BACKUP_COMPLETED, RunEventData(object=ref))


async def test_the_oldest_waiting_events_go_past_the_bound(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(emitting, "PENDING_MAX", 3)
    emitter = Emitter(cast(asyncpg.Pool, _Out()))
    made = [_event(n) for n in range(5)]
    try:
        for event in made:
            await emitter.emit([event])
    finally:
        await emitter.close()

    assert list(emitter._pending) == [e.id for e in made[2:]]
    dropped = [r for r in caplog.records if "events dropped" in r.getMessage()]
    assert [getattr(r, "dropped", None) for r in dropped] == [1, 1]
