"""What a failed delivery says in the Webhook's status: why, without the URL's query (it
may hold a token) or the bytes a receiver sent that were not HTTP."""

from __future__ import annotations

import aiohttp
from aiohttp.client_reqrep import ConnectionKey, RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from dockyard.operator.webhooks.dispatcher import _describe

TARGET = URL("https://hooks.example/in?token=SECRET-TOKEN")


def test_an_answer_that_is_not_http_is_described_without_its_bytes_or_the_url() -> None:
    info = RequestInfo(TARGET, "POST", CIMultiDictProxy(CIMultiDict()), TARGET)
    exc = aiohttp.ClientResponseError(info, (), status=400, message="Bad status line 'SECRET-BODY'")
    assert "SECRET" in str(exc)  # what aiohttp would have put in the status

    described = _describe(exc)

    assert "SECRET" not in described
    assert described == ("ClientResponseError: the receiver's answer could not be read as HTTP")


def test_a_connection_failure_names_the_host_and_the_reason() -> None:
    key = ConnectionKey("hooks.example", 443, True, True, None, None, None)
    exc = aiohttp.ClientConnectorError(key, ConnectionRefusedError(111, "Connection refused"))

    assert _describe(exc) == "cannot connect to hooks.example:443: Connection refused"
    assert _describe(aiohttp.InvalidURL(TARGET)) == "InvalidURL"
