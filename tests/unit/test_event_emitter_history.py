"""What the emitter logs of an object's history: every outage and recovery at one
generation, each once; and no transition older than the log keeps events, which
retention may have purged and which would otherwise be logged and delivered again."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import pytest

from dockyard.core import event_log
from dockyard.core.events import Event
from dockyard.operator.events.emitter import Emitter

NOW = datetime.now(UTC)


class _Log:
    """The ``events`` table: the ids logged, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows: list[tuple[str, str]] = []  # (id, type)
        monkeypatch.setattr(event_log, "known", self.known)
        monkeypatch.setattr(event_log, "append_now", self.append_now)

    async def known(self, _pool: asyncpg.Pool, ids: Iterable[str]) -> set[str]:
        return set(ids) & {i for i, _ in self.rows}

    async def append_now(self, _pool: asyncpg.Pool, events: Sequence[Event]) -> dict[str, int]:
        logged = {}
        for event in events:
            if event.id not in {i for i, _ in self.rows}:
                self.rows.append((event.id, event.type.value))
                logged[event.id] = len(self.rows)
        return logged

    @property
    def types(self) -> list[str]:
        return [t for _, t in self.rows]


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _environment(phase: str, since: datetime) -> dict[str, Any]:
    ready = "True" if phase == "Ready" else "False"
    return {
        "kind": "Environment",
        "metadata": {"namespace": "shop", "name": "web", "uid": "u-1", "generation": 4},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": _stamp(since)}],
        },
    }


def _backup(completed: datetime) -> dict[str, Any]:
    return {
        "kind": "Backup",
        "metadata": {"namespace": "shop", "name": "nightly", "uid": "u-2", "generation": 1},
        "spec": {"environmentRef": {"name": "web"}},
        "status": {"phase": "Completed", "size": 1, "completedAt": _stamp(completed)},
    }


def _emitter(**retention: int) -> Emitter:
    """A new emitter, remembering nothing (as after a restart): by default with the
    default retention, 30 days."""
    return Emitter(cast(asyncpg.Pool, None), **retention)


async def test_an_environment_that_flaps_at_one_generation_logs_every_turn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = _Log(monkeypatch)
    emitter = _emitter()
    turns = [("Ready", 50), ("Degraded", 40), ("Ready", 30), ("Ready", 30)]  # minutes ago
    for phase, minutes in turns:
        await emitter.observe("MODIFIED", _environment(phase, NOW - timedelta(minutes=minutes)))
    assert log.types == ["environment.ready", "environment.degraded", "environment.ready"]


async def test_a_transition_older_than_the_retention_is_not_logged_again_after_a_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The log purged it: the listing at start-up shows it again to an emitter that
    remembers nothing, and it must not come back with a new seq."""
    log = _Log(monkeypatch)
    await _emitter().observe(None, _backup(NOW - timedelta(days=31)))
    await _emitter().observe(None, _environment("Ready", NOW - timedelta(days=45)))
    assert log.rows == []


async def test_a_transition_within_the_retention_is_still_announced_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One that happened while no operator ran is news; one that is logged stays once."""
    log = _Log(monkeypatch)
    await _emitter().observe(None, _backup(NOW - timedelta(days=29)))
    await _emitter().observe(None, _backup(NOW - timedelta(days=29)))
    assert log.types == ["backup.completed"]


async def test_the_emitter_keeps_to_the_retention_it_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = _Log(monkeypatch)
    await _emitter(retention_days=7).observe(None, _backup(NOW - timedelta(days=8)))
    assert log.rows == []
    await _emitter(retention_days=7).observe(None, _backup(NOW - timedelta(days=6)))
    assert log.types == ["backup.completed"]


async def test_a_later_change_to_an_object_does_not_bring_back_its_old_transition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A watch event carries the whole status: a backup verified by a drill today still
    says it completed 40 days ago, which is not news."""
    log = _Log(monkeypatch)
    verified = _backup(NOW - timedelta(days=40))
    verified["status"]["verified"] = {"drill": "weekly", "at": _stamp(NOW)}
    await _emitter().observe("MODIFIED", verified)
    assert log.rows == []
    # A transition the status does not date is announced, as before.
    undated = _backup(NOW)
    del undated["status"]["completedAt"]
    await _emitter().observe("MODIFIED", undated)
    assert log.types == ["backup.completed"]
