"""The Lease's name, the election's timing rules, and how a replica acts on conflicts
(against a stand-in Lease store that checks resourceVersions as the apiserver does)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any, cast

import pytest

from dockyard.core.kube import KubeClient, KubeError
from dockyard.operator.leadership import LEASE_NAME, Leadership, lease_name


def test_a_whole_cluster_operator_has_the_platform_lease_and_a_scoped_one_its_own() -> None:
    assert lease_name([]) == LEASE_NAME
    scoped = lease_name(["shop", "team-*"])
    assert scoped.startswith(f"{LEASE_NAME}-")
    assert scoped == lease_name(["team-*", "shop"])  # the order does not matter
    assert scoped != lease_name(["shop"])
    assert len(scoped) <= 63


@pytest.mark.parametrize(("retry", "deadline", "duration"), [(2, 10, 10), (5, 4, 15), (2, 16, 15)])
def test_the_leader_must_stop_renewing_before_a_standby_may_take_over(
    retry: float, deadline: float, duration: float
) -> None:
    kube = KubeClient.__new__(KubeClient)  # never connected: the check comes first
    with pytest.raises(ValueError, match="RETRY < _RENEW_DEADLINE < _DURATION"):
        Leadership(
            kube, namespace="n", name="l", identity="me",
            duration=duration, renew_deadline=deadline, retry=retry,
        )  # fmt: skip


class _Leases:
    """One Lease as the apiserver keeps it: a resourceVersion checked on every PUT."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.conflicts = 0  # PUTs to refuse with 409 next, as if written since the read

    async def get(self, path: str) -> dict[str, Any]:
        if self.lease is None:
            raise KubeError(404, {"reason": "NotFound"})
        return copy.deepcopy(self.lease)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.lease is not None:
            raise KubeError(409, {"reason": "AlreadyExists"})
        return self._store(body)

    async def request(self, method: str, path: str, *, body: dict[str, Any]) -> dict[str, Any]:
        stale = body["metadata"]["resourceVersion"] != str(self.version)
        if self.conflicts or stale:
            self.conflicts = max(self.conflicts - 1, 0)
            raise KubeError(409, {"reason": "Conflict"})
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = {**copy.deepcopy(body), "metadata": {"resourceVersion": str(self.version)}}
        return copy.deepcopy(self.lease)

    def holder(self) -> str | None:
        return None if self.lease is None else self.lease["spec"]["holderIdentity"]


def _replica(leases: _Leases, identity: str) -> Leadership:
    return Leadership(
        cast(KubeClient, leases), namespace="n", name="l", identity=identity,
        duration=0.6, renew_deadline=0.4, retry=0.05,
    )  # fmt: skip


async def test_one_conflicting_renewal_does_not_move_the_lead() -> None:
    leases = _Leases()
    leader = _replica(leases, "a")
    assert await leader.try_lead()
    lost = asyncio.Event()
    holding = asyncio.create_task(leader.hold(lost))
    leases.conflicts = 2  # two renewals refused (0.1 s), well within the 0.4 s deadline
    await asyncio.sleep(0.3)

    assert not lost.is_set()
    assert leader.leading
    assert leases.holder() == "a"
    holding.cancel()


async def test_a_leader_whose_lease_another_replica_took_stops_at_once() -> None:
    leases = _Leases()
    leader = _replica(leases, "a")
    assert await leader.try_lead()
    lost = asyncio.Event()
    holding = asyncio.create_task(leader.hold(lost))
    assert leases.lease is not None
    leases._store({**leases.lease, "spec": {**leases.lease["spec"], "holderIdentity": "b"}})

    await asyncio.wait_for(lost.wait(), timeout=0.2)  # at its next look, not the deadline

    assert not leader.leading
    await holding


async def test_a_take_that_loses_the_race_stands_by_and_takes_it_later() -> None:
    leases = _Leases()
    assert await _replica(leases, "a").try_lead()  # then "a" dies: no more renewals
    standby = _replica(leases, "b")
    assert await standby.try_lead() is False  # a live leader, as far as "b" has seen
    await asyncio.sleep(0.65)  # longer than the lease duration since "b" saw it change

    leases.conflicts = 1  # a third replica wrote it between the read and the PUT
    assert await standby.try_lead() is False
    assert not standby.leading
    assert await standby.try_lead() is True
    assert leases.holder() == "b"


class _Hung:
    """The leader's view of the Lease store, through an apiserver that may hang: once
    ``hung``, its calls are accepted and never answered (the standby's still are)."""

    def __init__(self, leases: _Leases) -> None:
        self.leases = leases
        self.hung = False

    async def _answer(self) -> None:
        if self.hung:
            await asyncio.Event().wait()

    async def get(self, path: str) -> dict[str, Any]:
        await self._answer()
        return await self.leases.get(path)

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        await self._answer()
        return await self.leases.create(path, body)

    async def request(self, method: str, path: str, *, body: dict[str, Any]) -> dict[str, Any]:
        await self._answer()
        return await self.leases.request(method, path, body=body)


async def test_a_leader_whose_lease_calls_hang_stops_before_a_standby_takes_over() -> None:
    leases = _Leases()
    view = _Hung(leases)
    leader = Leadership(
        cast(KubeClient, view), namespace="n", name="l", identity="a",
        duration=0.6, renew_deadline=0.4, retry=0.05,
    )  # fmt: skip
    assert await leader.try_lead()
    lost = asyncio.Event()
    holding = asyncio.create_task(leader.hold(lost))
    view.hung = True  # the leader's next renewal hangs
    standby = _replica(leases, "b")

    await asyncio.wait_for(standby.acquire(), timeout=5)

    assert lost.is_set(), "the standby took over while the old leader still led"
    assert not leader.leading
    await asyncio.wait_for(holding, timeout=1)


class _LateThenHung(_Hung):
    """A loaded apiserver: ``late`` makes the leader's next renewal commit at once and
    answer ``delay`` seconds later; every call of the leader's after it hangs."""

    def __init__(self, leases: _Leases, delay: float) -> None:
        super().__init__(leases)
        self.delay = delay
        self.late = False

    async def request(self, method: str, path: str, *, body: dict[str, Any]) -> dict[str, Any]:
        await self._answer()
        stored = await self.leases.request(method, path, body=body)  # the renewTime is written
        if self.late:
            self.late, self.hung = False, True
            await asyncio.sleep(self.delay)  # ... and the answer comes late
        return stored


async def test_a_leader_whose_renewal_is_answered_late_stops_before_a_standby_takes_over() -> None:
    # The late answer (0.4 s) is inside the renewal's own timeout (0.55 s), so it counts as
    # a renewal; counted from its answer, the leader would lead 0.4 s past the deadline,
    # beyond the 0.2 s between the deadline and a standby's take-over.
    leases = _Leases()
    view = _LateThenHung(leases, delay=0.4)
    leader = Leadership(
        cast(KubeClient, view), namespace="n", name="l", identity="a",
        duration=0.8, renew_deadline=0.6, retry=0.05,
    )  # fmt: skip
    assert await leader.try_lead()
    lost = asyncio.Event()
    holding = asyncio.create_task(leader.hold(lost))
    standby = Leadership(
        cast(KubeClient, leases), namespace="n", name="l", identity="b",
        duration=0.8, renew_deadline=0.6, retry=0.05,
    )  # fmt: skip
    taking = asyncio.create_task(standby.acquire())
    await asyncio.sleep(0.2)  # the standby has seen the leader renew
    view.late = True

    await asyncio.wait_for(taking, timeout=5)

    assert lost.is_set(), "the standby took over while the old leader still led"
    assert not leader.leading
    await asyncio.wait_for(holding, timeout=1)
