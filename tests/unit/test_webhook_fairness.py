"""A namespace whose receiver answers slowly, with a backlog, holds its own slots and
never the dispatcher's passes: another namespace's delivery goes out within about one
delivery time, however long the backlog (the claims' database side is
``tests/integration/test_webhook_claims.py``; here it is a stand-in)."""

from __future__ import annotations

import asyncio
import base64
from collections import Counter, deque
from collections.abc import AsyncIterator, Collection
from datetime import UTC, datetime
from typing import Any, cast

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook as Signer

from dockyard.core import webhook_deliveries as store
from dockyard.core.kube import KubeClient
from dockyard.core.models.webhook import WebhookSpec
from dockyard.core.settings import Settings
from dockyard.core.tasks import cancel_and_wait
from dockyard.operator.webhooks.dispatcher import Dispatcher
from dockyard.operator.webhooks.flights import CONCURRENCY, NAMESPACE_SLOTS, Flights
from dockyard.operator.webhooks.targets import Target

SLOW = 0.4
"""Seconds the slow receivers take to answer 200 (inside the timeout: no breaker trips)."""
INTERVAL = 0.02


class _Backlogs:
    """Stands in for the deliveries table: due deliveries per namespace, claimed in turn."""

    def __init__(self) -> None:
        self.due: dict[str, deque[store.Claimed]] = {}
        self._ids = 0

    def add(self, namespace: str, count: int) -> None:
        queue = self.due.setdefault(namespace, deque())
        for _ in range(count):
            self._ids += 1
            uid, event = f"uid-{namespace}", f"evt_{self._ids}"
            due = datetime.now(UTC)
            queue.append(store.Claimed(self._ids, uid, namespace, event, 1, due, "e.t", {}))

    async def claim(
        self, _pool: Any, namespaces: Collection[str], limit: int, **_: Any
    ) -> list[store.Claimed]:
        queues = [self.due[n] for n in sorted(namespaces) if self.due.get(n)]
        taken: list[store.Claimed] = []
        while len(taken) < limit and any(queues):
            for queue in queues:
                if queue and len(taken) < limit:
                    taken.append(queue.popleft())
        return taken


class _Receivers:
    """The receivers' side: when each namespace's deliveries came, and how many at once."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.in_flight: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.most_in_all = 0

    async def post(self, target: Target, _delivery: store.Claimed) -> int:
        namespace = target.namespace
        self.first.setdefault(namespace, asyncio.get_running_loop().time())
        self.in_flight[namespace] += 1
        self.most[namespace] = max(self.most[namespace], self.in_flight[namespace])
        self.most_in_all = max(self.most_in_all, sum(self.in_flight.values()))
        try:
            if namespace.startswith("slow"):
                await asyncio.sleep(SLOW)
            return 200
        finally:
            self.in_flight[namespace] -= 1


class _Deliveries:
    async def execute(self, *_args: Any) -> str:
        return "UPDATE 1"


@pytest.fixture
def backlogs(monkeypatch: pytest.MonkeyPatch) -> _Backlogs:
    made = _Backlogs()

    async def fan_out(*_args: Any, **_kwargs: Any) -> int:
        return 0

    monkeypatch.setattr(store, "fan_out", fan_out)
    monkeypatch.setattr(store, "claim", made.claim)
    return made


@pytest.fixture
async def receivers(backlogs: _Backlogs) -> AsyncIterator[_Receivers]:
    settings = Settings(webhook_interval=INTERVAL)
    dispatcher = Dispatcher(cast(KubeClient, None), cast(asyncpg.Pool, _Deliveries()), settings)
    made = _Receivers()
    dispatcher._post = made.post  # type: ignore[method-assign]

    async def show() -> None:
        return None

    dispatcher._show = show  # type: ignore[method-assign]
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    for namespace in ("slow-a", "slow-c", "quick"):
        spec = WebhookSpec.model_validate(
            {"url": "https://hooks.example/in", "events": ["*"],
             "secretRef": {"name": "hook", "key": "secret"}}
        )  # fmt: skip
        target = Target(f"uid-{namespace}", namespace, "hook", 1, spec, Signer(secret), False)
        dispatcher.targets[target.uid] = target
    passes = asyncio.create_task(dispatcher._run())
    yield made
    await cancel_and_wait(passes)
    await dispatcher.flights.cancel()


async def _until(check: Any, within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within}s")
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("slow", [["slow-a"], ["slow-a", "slow-c"]])
async def test_a_slow_namespaces_backlog_delays_another_namespace_by_one_delivery_at_most(
    backlogs: _Backlogs, receivers: _Receivers, slow: list[str]
) -> None:
    """With one slow namespace, a slot stays free for others; with two, they can hold
    every slot, and the quick namespace takes the first that frees."""
    for namespace in slow:
        backlogs.add(namespace, 200)
    await _until(lambda: all(n in receivers.first for n in slow), within=1)
    await asyncio.sleep(0.05)  # the backlog's first deliveries are well under way

    backlogs.add("quick", 1)
    due = asyncio.get_running_loop().time()
    await _until(lambda: "quick" in receivers.first, within=5)

    # Waiting for whole passes of the backlog (a batch of 50, 8 at a time) would take
    # seven slow deliveries' time.
    assert receivers.first["quick"] - due < SLOW + 0.4


async def test_a_namespace_holds_at_most_its_share_of_the_slots(
    backlogs: _Backlogs, receivers: _Receivers
) -> None:
    backlogs.add("slow-a", 100)
    await asyncio.sleep(SLOW * 3)

    assert receivers.most["slow-a"] == NAMESPACE_SLOTS
    assert receivers.most_in_all <= CONCURRENCY


def test_the_namespaces_with_fewer_deliveries_in_flight_are_offered_slots_first() -> None:
    flights = Flights(slots=8, per_namespace=3)
    flights._flying.update(
        {cast(asyncio.Task[None], object()): n for n in ("a", "a", "a", "b", "c", "c")}
    )

    assert flights.free() == 2
    assert flights.offers(["a", "b", "c", "d", "e"]) == [(["d", "e"], 3), (["b"], 2), (["c"], 1)]


async def test_a_landing_waits_for_the_deliveries_that_end_in_time_and_stops_the_rest() -> None:
    flights = Flights()
    ended: list[str] = []

    async def delivery(name: str, takes: float) -> None:
        await asyncio.sleep(takes)
        ended.append(name)

    flights.launch("a", delivery("quick", 0.05))
    flights.launch("b", delivery("stuck", 60.0))

    assert await flights.land(within=0.5) == 1
    assert ended == ["quick"]
    assert len(flights) == 0
