"""What counts as an attempt, and what one records: an answer outside HTTP's status range
is an ordinary failure with its backoff, and a delivery the open breaker holds back is no
attempt at all."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook as Signer

from dockyard.core import webhook_deliveries as store
from dockyard.core.kube import KubeClient
from dockyard.core.models.webhook import WebhookSpec
from dockyard.core.settings import Settings
from dockyard.operator.webhooks.dispatcher import Dispatcher
from dockyard.operator.webhooks.failures import DeliveryFailed
from dockyard.operator.webhooks.targets import Target


class _Deliveries:
    """Stands in for the platform database: the delivery rows' writes, recorded."""

    def __init__(self) -> None:
        self.writes: list[tuple[Any, ...]] = []

    async def execute(self, sql: str, *args: Any) -> str:
        self.writes.append((sql, *args))
        return "UPDATE 1"


@pytest.fixture
async def odd_receiver() -> AsyncIterator[str]:
    """A receiver on loopback that answers ``600`` (no HTTP status, but three digits)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 600 Odd\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/hook"
    server.close()
    await server.wait_closed()


def _dispatcher(url: str = "https://hooks.example/in", **settings: Any) -> Dispatcher:
    dispatcher = Dispatcher(
        cast(KubeClient, None), cast(asyncpg.Pool, _Deliveries()), Settings(**settings)
    )
    spec = WebhookSpec.model_validate(
        {"url": url, "events": ["*"], "secretRef": {"name": "hook", "key": "secret"}}
    )
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    dispatcher.targets["uid-1"] = Target("uid-1", "team", "hook", 1, spec, Signer(secret), False)
    return dispatcher


def _claimed(attempt: int = 1, due_for: float = 0.0) -> store.Claimed:
    since = datetime.now(UTC) - timedelta(seconds=due_for)
    return store.Claimed(1, "uid-1", "team", "evt_1", attempt, since, "backup.completed", {})


def _writes(dispatcher: Dispatcher) -> list[tuple[Any, ...]]:
    return cast(_Deliveries, dispatcher.pool).writes


async def test_an_answer_outside_the_http_status_range_is_an_ordinary_failed_attempt(
    odd_receiver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_passes(_self: Dispatcher) -> None:
        return None

    monkeypatch.setattr(Dispatcher, "_run", no_passes)
    dispatcher = _dispatcher(
        odd_receiver, webhook_allow_http=True, webhook_allowed_networks=["127.0.0.0/8"]
    )
    await dispatcher.start()
    try:
        await dispatcher._deliver(_claimed())
    finally:
        await dispatcher.close()

    last = dispatcher.statuses.last["uid-1"]
    assert (last.succeeded, last.status_code, last.error) == (
        False, None, "the receiver answered 600"
    )  # fmt: skip
    assert dispatcher.statuses.failures["uid-1"] == 1
    [(sql, _, delay, status, error)] = _writes(dispatcher)
    assert sql == store._SQL_RETRY
    assert (status, error) == (None, "the receiver answered 600")
    base = Settings().webhook_backoff_base
    assert base / 2 <= delay <= base  # the first backoff, not the lease


async def test_a_cookie_one_receiver_sets_rides_along_with_no_later_delivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One session serves every tenant's receivers: a cookie one answer set went out with
    every later delivery to that domain (or, with Domain=com, to any .com receiver),
    whichever tenant's it was, until headers swelled past what servers accept."""
    heard: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n")
             if line.lower().startswith(b"content-length:")),
            0,
        )  # fmt: skip
        await reader.readexactly(length)
        heard.append(head)
        writer.write(
            b"HTTP/1.1 200 OK\r\nSet-Cookie: tossed=1; Path=/; Max-Age=3600\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    async def no_passes(_self: Dispatcher) -> None:
        return None

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(Dispatcher, "_run", no_passes)
    dispatcher = _dispatcher(
        f"http://localhost:{port}/hook",  # a name: aiohttp's jar takes no IP's cookies
        webhook_allow_http=True,
        webhook_allowed_networks=["127.0.0.0/8", "::1/128"],
    )
    await dispatcher.start()
    try:
        await dispatcher._deliver(_claimed())
        await dispatcher._deliver(_claimed(attempt=2))
    finally:
        await dispatcher.close()
        server.close()
        await server.wait_closed()

    assert len(heard) == 2
    assert all(b"\r\ncookie:" not in head.lower() for head in heard), heard[1]


async def _open_breaker(dispatcher: Dispatcher) -> None:
    async def refused(_target: Target, _delivery: store.Claimed) -> int:
        raise DeliveryFailed(503)

    dispatcher._post = refused  # type: ignore[method-assign]
    for _ in range(dispatcher.settings.webhook_breaker_failures):
        await dispatcher._deliver(_claimed())
    assert dispatcher.statuses.breaker_state("uid-1").value == "Open"
    _writes(dispatcher).clear()


async def test_a_delivery_the_open_breaker_holds_back_is_no_attempt_but_backs_off() -> None:
    dispatcher = _dispatcher(webhook_breaker_failures=2)
    await _open_breaker(dispatcher)
    last = dispatcher.statuses.last["uid-1"]

    await dispatcher._deliver(_claimed(attempt=6))

    # The status shows real attempts only: the receiver was not asked.
    assert dispatcher.statuses.failures["uid-1"] == 2
    assert dispatcher.statuses.last["uid-1"] == last  # the last real attempt, its 503
    # The row backs off as after a failure, so a dead endpoint's backlog does not all
    # fall due each time the breaker half-opens.
    [(sql, _, wait, status, error)] = _writes(dispatcher)
    assert (sql, status, error) == (store._SQL_RETRY, None, "circuit breaker open")
    settings = dispatcher.settings
    ceiling = min(settings.webhook_backoff_max, settings.webhook_backoff_base * 2**5)
    assert wait >= ceiling / 2  # the sixth attempt's backoff, jittered down by half at most
    assert wait >= 1.0  # and never before the breaker would let it through


async def test_a_delivery_held_back_past_the_dead_letter_window_is_given_up() -> None:
    dispatcher = _dispatcher(webhook_breaker_failures=2)
    await _open_breaker(dispatcher)

    overdue = dispatcher.settings.webhook_dead_letter_after + 1
    await dispatcher._deliver(_claimed(attempt=3, due_for=overdue))

    [(sql, _, status, error)] = _writes(dispatcher)
    assert (sql, status, error) == (store._SQL_DEAD, None, "circuit breaker open")
    assert dispatcher.statuses.failures["uid-1"] == 2
