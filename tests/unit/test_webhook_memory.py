"""A Webhook deleted while a delivery to it is in flight leaves nothing behind in the
dispatcher's memory: not its last delivery, its failure count, its breaker nor its
metric series (a slow receiver is the one people delete)."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from standardwebhooks.webhooks import Webhook as Signer

from dockyard.core import webhook_deliveries as store
from dockyard.core.breakers import Dependency
from dockyard.core.kube import KubeClient
from dockyard.core.metrics import OperatorMetrics
from dockyard.core.models.webhook import WebhookSpec
from dockyard.core.settings import Settings
from dockyard.operator.webhooks.dispatcher import Dispatcher
from dockyard.operator.webhooks.failures import DeliveryFailed
from dockyard.operator.webhooks.targets import Target


class _Deliveries:
    """Stands in for the platform database: the delivery rows' writes, recorded."""

    def __init__(self) -> None:
        self.writes: list[tuple[Any, ...]] = []
        self.while_writing: Callable[[], None] = lambda: None

    async def execute(self, *args: Any) -> None:
        self.while_writing()
        self.writes.append(args)


def _dispatcher() -> tuple[Dispatcher, Target, CollectorRegistry]:
    registry = CollectorRegistry()
    dispatcher = Dispatcher(
        cast(KubeClient, None),
        cast(asyncpg.Pool, _Deliveries()),
        Settings(),
        OperatorMetrics(registry),
    )
    spec = WebhookSpec.model_validate(
        {"url": "https://hooks.example/in", "events": ["*"],
         "secretRef": {"name": "hook", "key": "secret"}}
    )  # fmt: skip
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    target = Target("uid-1", "team", "hook", 1, spec, Signer(secret), everywhere=False)
    dispatcher.targets[target.uid] = target
    return dispatcher, target, registry


def _claimed(due_since: datetime | None = None) -> store.Claimed:
    since = due_since or datetime.now(UTC)
    return store.Claimed(1, "uid-1", "team", "evt_1", 1, since, "backup.completed", {})


def _forgotten(dispatcher: Dispatcher, registry: CollectorRegistry) -> bool:
    series = [
        registry.get_sample_value(
            "dockyard_webhook_deliveries_total",
            {"namespace": "team", "webhook": "hook", "result": result},
        )
        for result in ("delivered", "failed", "dead_lettered")
    ]
    statuses = dispatcher.statuses
    memory = (statuses.last, statuses.failures, statuses.shown)
    return memory == ({}, {}, {}) and series == [None, None, None]


@pytest.mark.parametrize("answer", [204, 503])
async def test_a_delivery_finishing_after_its_webhook_was_removed_brings_nothing_back(
    answer: int,
) -> None:
    dispatcher, target, registry = _dispatcher()

    async def post(_target: Target, _delivery: store.Claimed) -> int:
        dispatcher._drop(target.uid)  # the Webhook is deleted while the receiver answers
        if answer >= 300:
            raise DeliveryFailed(answer)
        return answer

    dispatcher._post = post  # type: ignore[method-assign]
    await dispatcher._deliver(_claimed())

    statuses = dispatcher.statuses
    assert (statuses.last, statuses.failures, statuses.shown) == ({}, {}, {})
    assert not dispatcher.breakers._states
    assert "webhook:uid-1" not in dispatcher.breakers._factory.uow.contexts.breakers  # type: ignore[attr-defined]
    delivered = registry.get_sample_value(
        "dockyard_webhook_deliveries_total", {"namespace": "team", "webhook": "hook",
                                              "result": "delivered"}
    )  # fmt: skip
    assert delivered is None
    assert len(cast(_Deliveries, dispatcher.pool).writes) == 1  # the row is still settled
    assert dispatcher.breakers.state_of(Dependency.WEBHOOK, target.uid) == "closed"


@pytest.mark.parametrize("answer", [204, 503])
async def test_a_webhook_removed_while_its_delivery_row_is_written_is_not_brought_back(
    answer: int,
) -> None:
    """Removed after the receiver answered, while the database settles the row: as
    delivered, or (the delivery due for long) as given up."""
    dispatcher, target, registry = _dispatcher()
    deliveries = cast(_Deliveries, dispatcher.pool)
    deliveries.while_writing = lambda: dispatcher._drop(target.uid)

    async def post(_target: Target, _delivery: store.Claimed) -> int:
        if answer >= 300:
            raise DeliveryFailed(answer)
        return answer

    dispatcher._post = post  # type: ignore[method-assign]
    long_due = datetime.now(UTC) - timedelta(seconds=Settings().webhook_dead_letter_after + 1)
    await dispatcher._deliver(_claimed(long_due))

    assert len(deliveries.writes) == 1
    assert _forgotten(dispatcher, registry)
    assert not dispatcher.breakers._states


async def test_an_unexpected_error_is_stored_by_its_type_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dispatcher, _, _ = _dispatcher()

    async def post(_target: Target, _delivery: store.Claimed) -> int:
        raise ValueError("receiver said: HTTP/1.1 200 token=s3cret")

    async def fan_out(*_args: Any, **_kwargs: Any) -> None:
        return None

    async def claim(*_args: Any, **_kwargs: Any) -> list[store.Claimed]:
        return [_claimed()]

    async def show() -> None:
        return None

    dispatcher._post = post  # type: ignore[method-assign]
    dispatcher._show = show  # type: ignore[method-assign]
    monkeypatch.setattr(store, "fan_out", fan_out)
    monkeypatch.setattr(store, "claim", claim)
    await dispatcher.run_once()
    await dispatcher.flights.join()

    written = cast(_Deliveries, dispatcher.pool).writes
    assert written
    assert all("s3cret" not in str(args) for args in written)
    assert any("ValueError" in str(args) for args in written)


async def test_a_webhook_checked_while_the_counts_are_read_is_shown_on_the_next_pass() -> None:
    """A status pass reads the delivery counts of the Webhooks it knows; one checked
    (added) while that query runs has no counts yet, and must not fail the pass for the
    others."""
    dispatcher, target, _ = _dispatcher()
    written: list[str] = []

    async def write_status(_ns: str, name: str, _status: Any, **_: Any) -> bool:
        written.append(name)
        return True

    dispatcher.webhooks.write_status = write_status  # type: ignore[method-assign]
    late = Target("uid-2", "team", "late", 1, target.spec, target.signer, everywhere=False)
    dispatcher.targets[late.uid] = late

    await dispatcher.statuses.show(dispatcher.targets, {"uid-1": {"pending": 0, "dead": 0}})

    assert written == ["hook"]
    assert "uid-2" not in dispatcher.statuses.shown
