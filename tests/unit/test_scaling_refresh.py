"""The periodic refresh: every known policy gets a pass each round, and one that fails
does not stop the others or the loop."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from dockyard.core.kube import KubeClient
from dockyard.operator.outcomes import Outcome
from dockyard.operator.scaling.reconciler import Key, ScalingReconciler, refresh_periodically


class Recorder:
    """Stands in for the reconciler: records the keys it is asked to refresh."""

    def __init__(self, expected: int, failing: Key | None = None) -> None:
        self.seen: list[Key] = []
        self.failing = failing
        self.expected = expected
        self.done = asyncio.Event()

    async def refresh(self, key: Key) -> None:
        self.seen.append(key)
        if len(self.seen) >= self.expected:
            self.done.set()
        if key == self.failing:
            raise RuntimeError("boom")


async def _run(recorder: Recorder, keys: list[Key]) -> None:
    task = asyncio.create_task(
        refresh_periodically(lambda: cast(ScalingReconciler, recorder), lambda: keys, 0.01)
    )
    await recorder.done.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_every_policy_is_refreshed_every_round() -> None:
    recorder = Recorder(expected=4)
    keys = [("team-b", "api"), ("team-a", "shop")]
    await asyncio.wait_for(_run(recorder, keys), timeout=5)
    assert recorder.seen[:4] == [("team-a", "shop"), ("team-b", "api")] * 2


async def test_a_failing_pass_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder(expected=4, failing=("team-a", "broken"))
    keys = [("team-a", "broken"), ("team-a", "shop")]
    await asyncio.wait_for(_run(recorder, keys), timeout=5)
    assert recorder.seen.count(("team-a", "shop")) >= 2
    assert "scaling policy pass failed unexpectedly" in caplog.text


class _Passes(ScalingReconciler):
    """The real refresh and locks; each pass is recorded and held until released."""

    def __init__(self) -> None:
        super().__init__(kube=cast(KubeClient, None))
        self.passes = 0
        self.release = asyncio.Event()
        self.running = asyncio.Event()

    async def _reconcile(self, key: Key) -> Outcome:
        self.passes += 1
        self.running.set()
        await self.release.wait()
        return Outcome.done()


async def test_an_event_during_a_pass_queues_one_more_pass_and_events_while_queued_join_it() -> (
    None
):
    reconciler = _Passes()
    key = ("team-a", "shop")
    first = asyncio.create_task(reconciler.refresh(key))
    await reconciler.running.wait()

    # A Restore changed while the pass runs: it may have read the Restore before.
    during = [asyncio.create_task(reconciler.refresh(key)) for _ in range(3)]
    await asyncio.sleep(0)
    reconciler.release.set()
    await asyncio.wait_for(asyncio.gather(first, *during), timeout=5)

    assert reconciler.passes == 2  # the first, and one more for the three events
    assert reconciler.locks.queued == set()
