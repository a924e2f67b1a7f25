"""Each S3 endpoint has a circuit breaker: once it has refused connections a few times in
a row, calls to it fail at once, and other endpoints are not affected.

The endpoints are loopback ports with nothing listening (connections refused at once).
"""

from __future__ import annotations

import socket
import time

import pytest
from prometheus_client import CollectorRegistry

from dockyard.core.breakers import Breakers, Dependency
from dockyard.runner import StorageError
from dockyard.runner.s3 import S3Credentials, S3Store


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again on leaving: nothing listens


def _store(endpoint: str, breakers: Breakers) -> S3Store:
    return S3Store(
        "bucket",
        endpoint_url=endpoint,
        region="us-east-1",
        credentials=S3Credentials("id", "secret"),
        part_timeout=2.0,
        breakers=breakers,
        attempts=1,  # no retries inside botocore: each call is one connection attempt
    )


async def test_an_endpoint_that_refuses_connections_is_refused_at_once_after_the_threshold() -> (
    None
):
    registry = CollectorRegistry()
    breakers = Breakers(failure_threshold=2, open_seconds=60, registry=registry)
    ports = {_closed_port()}
    while len(ports) < 2:  # the system may hand out the port it just freed
        ports.add(_closed_port())
    dead, other = (f"http://127.0.0.1:{port}" for port in sorted(ports))
    async with _store(dead, breakers) as store:
        for _ in range(2):
            with pytest.raises(StorageError, match="S3 endpoint is unavailable"):
                await store.size("shop/a.dkbk")
        started = time.monotonic()
        with pytest.raises(StorageError, match="circuit breaker open"):
            await store.size("shop/a.dkbk")
        assert time.monotonic() - started < 0.1  # no connection tried
    assert breakers.is_open(Dependency.S3, dead)
    assert (
        registry.get_sample_value("dockyard_dependency_breaker_state", {"dependency": f"s3:{dead}"})
        == 2
    )
    # Another tenant's endpoint keeps its own, closed breaker: its call is tried.
    async with _store(other, breakers) as store:
        with pytest.raises(StorageError, match="connection failed"):
            await store.size("shop/a.dkbk")
    assert not breakers.is_open(Dependency.S3, other)
