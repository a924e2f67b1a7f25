"""Kopf's index gate opens when a watch stream ends before it has listed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from kopf._cogs.aiokits import aiotoggles
from kopf._core.reactor import queueing

from dockyard.operator import index_gate


async def test_a_stream_cancelled_before_its_listing_drops_its_toggle() -> None:
    gate = aiotoggles.ToggleSet(all)
    toggle = await gate.make_toggle(name="deployments@gone-namespace")
    started = asyncio.Event()

    async def stream(**_: Any) -> None:  # a watcher that never lists: its namespace went
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(
        index_gate.releasing(stream)(operator_indexed=gate, resource_indexed=toggle)
    )
    await started.wait()
    assert gate.is_off()  # held: every handler of the operator waits
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.is_on()
    assert toggle not in gate


async def test_a_failing_stream_drops_its_toggle_and_keeps_its_error() -> None:
    gate = aiotoggles.ToggleSet(all)
    toggle = await gate.make_toggle(name="worker")

    async def stream(**_: Any) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        await index_gate.releasing(stream)(operator_indexed=gate, resource_indexed=toggle)
    assert gate.is_on()


async def test_other_toggles_keep_the_gate_closed() -> None:
    gate = aiotoggles.ToggleSet(all)
    ended = await gate.make_toggle(name="ended")
    await gate.make_toggle(name="still listing")

    async def stream(**_: Any) -> str:
        return "done"

    wrapped = index_gate.releasing(stream)
    assert await wrapped(operator_indexed=gate, resource_indexed=ended) == "done"
    assert gate.is_off()
    assert await wrapped(operator_indexed=None, resource_indexed=None) == "done"


def test_install_wraps_kopfs_watcher_and_worker_once() -> None:
    original = queueing.watcher, queueing.worker
    try:
        index_gate.install()
        wrapped = queueing.watcher, queueing.worker
        index_gate.install()
        assert (queueing.watcher, queueing.worker) == wrapped
        assert all(getattr(fn, "__dockyard_releasing__", False) for fn in wrapped)
        assert queueing.watcher.__wrapped__ in original  # type: ignore[attr-defined]
    finally:
        queueing.watcher, queueing.worker = original
