"""How a stream of live changes ends when the apiserver cannot say whether a change may
be shown: with the documented last ``event: error`` (``dependency-unavailable``), as a
re-check that fails ends it, not cut off without a word, and not logged as a client
that stopped reading.

The authorizer, watch cache, event tail and response are stand-ins (the real ones are
covered by tests/integration/test_event_stream.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from dockyard.api import keys
from dockyard.api.auth import Decision, Permission, Principal
from dockyard.api.cache import Change
from dockyard.api.routes.events import _Access, _stream
from dockyard.core.breakers import Dependency, DependencyUnavailable
from dockyard.core.settings import Settings


class FailingAuthorizer:
    def __init__(self, failure: Exception) -> None:
        self.failure = failure

    async def check(
        self, principal: Principal, permission: Permission, *, namespace: str | None = None
    ) -> Decision:
        raise self.failure


class Writer:
    """The connection's payload writer: keeps what the stream wrote."""

    def __init__(self) -> None:
        self.written = b""
        self.ended = False
        self.transport = None
        self.output_size = 0

    async def write_headers(self, status_line: str, headers: object) -> None:
        pass

    async def write(self, data: bytes) -> None:
        self.written += bytes(data)

    async def write_eof(self, data: bytes = b"") -> None:
        self.ended = True

    async def drain(self) -> None:
        pass

    def enable_compression(self, *args: object, **kwargs: object) -> None:
        pass

    def enable_chunking(self) -> None:
        pass

    def send_headers(self) -> None:
        pass


class Cache:
    """A watch cache whose subscriber gets one change in a namespace not yet judged."""

    @contextlib.asynccontextmanager
    async def subscribe(self, maxsize: int) -> AsyncIterator[asyncio.Queue[Change]]:
        queue: asyncio.Queue[Change] = asyncio.Queue()
        obj = {"metadata": {"name": "shop", "namespace": "team-2"}}
        queue.put_nowait(Change("ADDED", obj))
        yield queue

    def overflowed(self, queue: object) -> bool:
        return False


class Tail:
    last = 0

    @contextlib.contextmanager
    def listening(self) -> Iterator[None]:
        yield


async def _stream_one_change(failure: Exception) -> Writer:
    app = web.Application()
    app[keys.AUTHORIZER] = FailingAuthorizer(failure)  # type: ignore[misc]
    app[keys.SETTINGS] = Settings.model_validate({})
    app[keys.EVENT_TAIL] = Tail()  # type: ignore[misc]
    writer = Writer()
    request = make_mocked_request("GET", "/api/v1/events", app=app, writer=writer)
    request[keys.PRINCIPAL] = Principal("ops")
    access = _Access(request, only=None)
    access.showing = {"team-1"}
    async with asyncio.timeout(5):
        await _stream(request, Cache(), access, resume=0)  # type: ignore[arg-type]
    return writer


def _last_event(writer: Writer) -> tuple[str, dict[str, object]]:
    event, data = writer.written.decode().strip().split("\n\n")[-1].split("\n")
    return event, json.loads(data.removeprefix("data: "))


@pytest.mark.parametrize(
    "failure",
    [DependencyUnavailable(Dependency.KUBERNETES, 5.0, "breaker open"), TimeoutError()],
)
async def test_a_live_change_the_apiserver_cannot_judge_ends_the_stream_with_an_error_event(
    failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        writer = await _stream_one_change(failure)
    event, problem = _last_event(writer)
    assert event == "event: error"
    assert problem["status"] == 503
    assert problem["dependency"] == "kubernetes"
    assert writer.ended
    assert "stopped reading" not in caplog.text
