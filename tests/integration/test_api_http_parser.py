"""What the HTTP parser refuses, on the real ``dockyard api`` over loopback.

Requests that never reach a route (an oversized header, a malformed request line) are
answered by the server itself: they must still be problem documents with a request id,
and must never echo the refused bytes. A client that sends its headers a byte at a time
is cut off after ``DOCKYARD_HEADER_READ_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dockyard.api import errors
from dockyard.testbed.cluster import free_port

HEADER_READ_TIMEOUT = 1.0
SECRET = "s3cr3t-token-value"


@pytest.fixture(scope="module")
def api_port(
    tmp_path_factory: pytest.TempPathFactory, testbed_env: dict[str, str], crds_installed: None
) -> Iterator[int]:
    """``dockyard api`` in development mode on loopback, with a short header deadline."""
    port = free_port()
    env = {
        **testbed_env,
        "DOCKYARD_MODE": "development",
        "DOCKYARD_METRICS_PORT": str(free_port()),
        "DOCKYARD_HEADER_READ_TIMEOUT": str(HEADER_READ_TIMEOUT),
    }
    log = tmp_path_factory.mktemp("api") / "api.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dockyard.cli", "api", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_until_serving(port, process, log)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_serving(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    import http.client

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dockyard api exited:\n{log.read_text()}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.2)
    raise AssertionError(f"dockyard api did not serve within 60s:\n{log.read_text()}")


async def _exchange(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole response (the server closes after a parser error)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def _problem(headers: dict[str, str], body: bytes) -> dict[str, Any]:
    assert headers["content-type"].startswith(errors.PROBLEM_JSON), (headers, body[:200])
    document: dict[str, Any] = json.loads(body)
    assert document["type"].startswith(errors.TYPE_BASE)
    assert document["requestId"]
    assert headers["x-request-id"] == document["requestId"]
    return document


async def test_an_oversized_header_is_a_problem_without_its_bytes(api_port: int) -> None:
    raw = (
        b"GET /api/v1/me HTTP/1.1\r\nHost: api\r\n"
        + f"Authorization: Bearer {SECRET}{'x' * 64 * 1024}\r\n\r\n".encode()
    )
    status, headers, body = await _exchange(api_port, raw)
    assert status in (400, 431)
    document = _problem(headers, body)
    assert document["status"] == status
    assert SECRET.encode() not in body


async def test_too_many_headers_is_a_problem(api_port: int) -> None:
    lines = b"".join(f"X-H{i}: v\r\n".encode() for i in range(500))
    status, headers, body = await _exchange(
        api_port, b"GET /healthz HTTP/1.1\r\nHost: api\r\n" + lines + b"\r\n"
    )
    assert status in (400, 431)
    _problem(headers, body)


async def test_a_malformed_request_line_is_a_400_problem(api_port: int) -> None:
    status, headers, body = await _exchange(api_port, b"GET\x01 /\x7f HTTP/1.1\r\n\r\n")
    assert status == 400
    document = _problem(headers, body)
    assert document["type"] == errors.TYPE_BASE + "bad-request"


async def test_a_bad_header_is_a_400_problem(api_port: int) -> None:
    status, headers, body = await _exchange(
        api_port, b"GET /healthz HTTP/1.1\r\nHost: api\r\nBad Header\r\n\r\n"
    )
    assert status == 400
    _problem(headers, body)


async def test_a_token_of_bytes_that_are_not_utf8_is_a_401_not_a_500(api_port: int) -> None:
    status, headers, body = await _exchange(
        api_port,
        b"GET /api/v1/me HTTP/1.1\r\nHost: api\r\nConnection: close\r\n"
        b"Authorization: Bearer \xff\xfe\xc3\r\n\r\n",
    )
    assert status == 401, body[:300]
    assert _problem(headers, body)["type"] == errors.TYPE_BASE + "unauthorized"


async def test_a_client_trickling_its_headers_is_cut_off(api_port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api_port)
    started = time.monotonic()
    closed_after: float | None = None
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Slow: ")
        # One byte every 0.1 s for up to 20 s: the server must hang up long before.
        for _ in range(200):
            try:
                writer.write(b"a")
                await writer.drain()
                data = await asyncio.wait_for(reader.read(1), timeout=0.1)
            except TimeoutError:
                continue
            except ConnectionError:
                data = b""
            if data == b"" or reader.at_eof():
                closed_after = time.monotonic() - started
                break
            # a response (a 408 problem) is fine too, as long as the connection then ends
            await asyncio.wait_for(reader.read(), timeout=5)
            closed_after = time.monotonic() - started
            break
    finally:
        writer.close()
    assert closed_after is not None, "the server kept a trickling client for 20 s"
    assert closed_after < HEADER_READ_TIMEOUT + 3


async def test_a_keep_alive_connection_still_serves_requests(api_port: int) -> None:
    """The header deadline does not cut a client that sends each request promptly."""
    reader, writer = await asyncio.open_connection("127.0.0.1", api_port)
    try:
        for _ in range(3):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: api\r\n\r\n")
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), timeout=10)
            assert b" 200 " in status_line
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            await asyncio.sleep(HEADER_READ_TIMEOUT * 1.5)
    finally:
        writer.close()
