"""What a failed delivery says in the Webhook's status: why, without the URL's query (it
may hold a token) or the bytes a receiver sent that were not HTTP."""

from __future__ import annotations

import aiohttp
from aiohttp.client_reqrep import ConnectionKey, RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from dockyard.operator.webhooks.failures import describe

TARGET = URL("https://hooks.example/in?token=SECRET-TOKEN")


def test_an_answer_that_is_not_http_is_described_without_its_bytes_or_the_url() -> None:
    info = RequestInfo(TARGET, "POST", CIMultiDictProxy(CIMultiDict()), TARGET)
    exc = aiohttp.ClientResponseError(info, (), status=400, message="Bad status line 'SECRET-BODY'")
    assert "SECRET" in str(exc)  # what aiohttp would have put in the status

    described = describe(exc)

    assert "SECRET" not in described
    assert described == ("ClientResponseError: the receiver's answer could not be read as HTTP")


def test_a_connection_failure_names_the_host_and_the_reason() -> None:
    key = ConnectionKey("hooks.example", 443, True, True, None, None, None)
    exc = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))

    assert describe(exc) == "cannot connect to hooks.example:443: Connection refused"
    assert describe(aiohttp.InvalidURL(TARGET)) == "InvalidURL"


def test_errors_that_quote_the_receiver_are_named_only() -> None:
    payload = aiohttp.ClientPayloadError("Not enough data for satisfy transfer length: 'SECRET'")
    disconnected = aiohttp.ServerDisconnectedError("partial headers: SECRET-HEADER")

    assert describe(payload) == "ClientPayloadError"
    assert describe(disconnected) == "ServerDisconnectedError"
    assert describe(ConnectionResetError(104, "Connection reset by peer")) == (
        "ConnectionResetError: Connection reset by peer"
    )
