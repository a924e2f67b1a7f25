"""Per-object locks are kept only while a pass holds or waits for them: children of a
deleted environment change and go after its finalizer ran, and a lock left behind by each
pass they start would be kept for every environment ever deleted. One dropped while
others wait for it would let a later pass run beside them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest

from dockyard.core.kube import KubeClient
from dockyard.core.settings import Settings
from dockyard.operator.environments.reconciler import Reconciler
from dockyard.operator.store import ObjectLocks

KEY = ("team", "shop")
GOING = {"metadata": {"name": "shop", "deletionTimestamp": "2026-12-06T12:00:00Z"}}


def _reconciler(found: dict[str, Any] | None) -> Reconciler:
    reconciler = Reconciler(kube=cast(KubeClient, None), postgres=None, settings=Settings())

    async def fetch(key: tuple[str, str]) -> dict[str, Any] | None:
        return found

    async def full_pass(raw: dict[str, Any]) -> None:
        return None

    reconciler.fetch = fetch  # type: ignore[method-assign]
    reconciler._pass = full_pass  # type: ignore[method-assign]
    return reconciler


ENTRY_POINTS: list[Callable[[Reconciler], Awaitable[object]]] = [
    lambda r: r.reconcile_owner(KEY),
    lambda r: r.refresh_status(KEY),
    lambda r: r.reconcile(KEY),
]


@pytest.mark.parametrize("found", [None, GOING, {"metadata": {"name": "shop"}}])
@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=["owner", "status", "reconcile"])
async def test_no_pass_leaves_its_lock_behind(
    found: dict[str, Any] | None, entry: Callable[[Reconciler], Awaitable[object]]
) -> None:
    reconciler = _reconciler(found)

    await entry(reconciler)

    assert reconciler.locks._locks == {}
    assert reconciler.locks.queued == set()


async def test_passes_waiting_for_a_lock_share_it_and_it_goes_after_the_last() -> None:
    locks: ObjectLocks[str] = ObjectLocks()
    inside = 0
    most = 0
    release = asyncio.Event()

    async def one_pass() -> None:
        nonlocal inside, most
        async with locks.lock("shop"):
            inside += 1
            most = max(most, inside)
            await release.wait()
            inside -= 1

    passes = [asyncio.create_task(one_pass()) for _ in range(3)]
    await asyncio.sleep(0)
    assert list(locks._locks) == ["shop"]
    locks.forget("shop")  # the object is gone while passes still wait: they keep one lock
    late = asyncio.create_task(one_pass())
    release.set()
    await asyncio.gather(*passes, late)

    assert most == 1
    assert locks._locks == {}


async def test_a_pass_cancelled_while_it_waits_leaves_no_mark_that_skips_later_ones() -> None:
    reconciler = _reconciler({"metadata": {"name": "shop"}})
    passes: list[str] = []

    async def full_pass(raw: dict[str, Any]) -> None:
        passes.append(raw["metadata"]["name"])

    reconciler._pass = full_pass  # type: ignore[method-assign]
    async with reconciler.locks.lock(KEY):  # another pass holds the lock
        waiting = asyncio.create_task(reconciler.reconcile_owner(KEY))
        await asyncio.sleep(0)
        assert KEY in reconciler.locks.queued
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    assert reconciler.locks.queued == set()
    await reconciler.reconcile_owner(KEY)  # the next change is served, not skipped
    assert passes == ["shop"]
    assert reconciler.locks._locks == {}
