"""The operator's inline run slots (``FairSlots``): one namespace that queues many runs
holds at most its share, a freed slot goes to a restore first and then to the namespace
holding the fewest, and a cancelled waiter takes nothing."""

from __future__ import annotations

import asyncio
from typing import cast

import pytest

from dockyard.core.kube import KubeClient
from dockyard.core.settings import Settings
from dockyard.operator.runs.context import RunContext
from dockyard.operator.runs.slots import FairSlots


class Runs:
    """Runs that each hold a slot until told to finish, recording who started when."""

    def __init__(self, slots: FairSlots) -> None:
        self.slots = slots
        self.started: list[str] = []
        self.finish: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def queue(self, name: str, namespace: str, *, urgent: bool = False) -> None:
        self.finish[name] = asyncio.Event()

        async def run() -> None:
            async with self.slots.hold(namespace, urgent=urgent):
                self.started.append(name)
                await self.finish[name].wait()

        self.tasks[name] = asyncio.create_task(run())

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    async def done(self, name: str) -> None:
        self.finish[name].set()
        await self.tasks[name]
        await self.settle()


async def test_one_namespace_queuing_many_runs_leaves_slots_for_the_others() -> None:
    """The attack: a tenant queues many backups of a large database so that every slot
    is theirs for hours, and another namespace's restore waits behind them."""
    runs = Runs(FairSlots(total=2, per_namespace=1))
    for i in range(5):
        runs.queue(f"a{i}", "greedy")
    await runs.settle()
    assert runs.started == ["a0"]  # the other slot stays free
    runs.queue("restore", "shop", urgent=True)
    await runs.settle()
    assert runs.started == ["a0", "restore"]
    await runs.done("a0")
    assert runs.started == ["a0", "restore", "a1"]
    assert runs.slots.held("greedy") == 1


async def test_a_restore_does_not_wait_behind_its_own_namespaces_backup_while_a_slot_is_idle() -> (
    None
):
    runs = Runs(FairSlots(total=3, per_namespace=1))
    runs.queue("backup", "prod")
    runs.queue("restore", "prod", urgent=True)  # over its share: the one extra slot
    runs.queue("second-restore", "prod", urgent=True)  # no second extra slot
    await runs.settle()
    assert runs.started == ["backup", "restore"]
    runs.queue("other", "shop")  # the third slot is the other namespace's
    await runs.settle()
    assert runs.started == ["backup", "restore", "other"]
    await runs.done("restore")  # the extra slot is free again, but shop is not waiting
    assert runs.started[-1] == "second-restore"
    runs.queue("third-restore", "prod", urgent=True)  # prod has its extra slot already
    runs.queue("later", "shop")  # shop holds its share
    await runs.settle()
    await runs.done("other")  # shop may have it again, before any extra slot
    assert runs.started[-1] == "later"
    await runs.done("second-restore")
    assert runs.started[-1] == "third-restore"
    for name in ("backup", "later", "third-restore"):
        await runs.done(name)
    assert (runs.slots.running, runs.slots.waiting) == (0, 0)


async def test_a_freed_slot_goes_to_a_restore_then_to_the_namespace_holding_fewest() -> None:
    runs = Runs(FairSlots(total=3, per_namespace=2))
    for name, namespace in [("a0", "a"), ("a1", "a"), ("b0", "b")]:
        runs.queue(name, namespace)
    await runs.settle()
    runs.queue("a2", "a")
    runs.queue("c0", "c")
    runs.queue("b1", "b")
    runs.queue("r", "a", urgent=True)
    await runs.settle()
    assert runs.started == ["a0", "a1", "b0"]
    await runs.done("b0")  # a holds 2 (its share): the restore of a must wait for it
    assert runs.started[-1] == "c0"
    await runs.done("a0")  # a holds 1: its restore goes before a2 and b1
    assert runs.started[-1] == "r"
    await runs.done("c0")  # b holds none, a holds 2: b
    assert runs.started[-1] == "b1"
    await runs.done("a1")
    assert runs.started[-1] == "a2"
    for name in ("r", "b1", "a2"):
        await runs.done(name)
    assert (runs.slots.running, runs.slots.waiting) == (0, 0)


async def test_a_cancelled_waiter_takes_nothing_and_one_cancelled_in_its_turn_frees_it() -> None:
    runs = Runs(FairSlots(total=1, per_namespace=1))
    runs.queue("first", "a")
    runs.queue("gone", "b")
    runs.queue("next", "c")
    await runs.settle()
    runs.tasks["gone"].cancel()
    await runs.settle()
    await runs.done("first")
    assert runs.started == ["first", "next"]
    # Cancelled in the same step its turn comes: the slot goes on to the next waiter.
    runs.queue("unlucky", "d")
    runs.queue("last", "e")
    await runs.settle()
    runs.finish["next"].set()
    await asyncio.sleep(0)  # "next" ends and hands its slot to "unlucky", not yet awake
    assert runs.tasks["next"].done()
    assert runs.started == ["first", "next"]
    runs.tasks["unlucky"].cancel()
    await runs.settle()
    with pytest.raises(asyncio.CancelledError):
        await runs.tasks["unlucky"]
    assert runs.started == ["first", "next", "last"]
    await runs.done("last")
    assert (runs.slots.running, runs.slots.waiting) == (0, 0)


def test_a_namespace_may_hold_half_the_slots_unless_told_otherwise() -> None:
    assert Settings(backup_concurrency=2).runs_per_namespace() == 1
    assert Settings(backup_concurrency=1).runs_per_namespace() == 1
    assert Settings(backup_concurrency=8).runs_per_namespace() == 4
    assert (
        Settings(backup_concurrency=4, backup_concurrency_per_namespace=9).runs_per_namespace() == 4
    )


def test_the_operators_runs_share_their_slots_as_the_settings_say() -> None:
    kube = cast(KubeClient, object())  # never called: only the slots are looked at
    context = RunContext.create(kube, Settings(backup_concurrency=4), catalog=None)
    assert (context.inline_runs.slots.total, context.inline_runs.slots.per_namespace) == (4, 2)
