"""Webhook deliveries look names up in threads of their own: hosts whose DNS never
answers slow only webhook deliveries, never the event loop's shared thread pool (backup
runs, asyncpg's connects); and the SSRF guard still judges every address found, without
showing the tenant the internal address it refused."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
import asyncpg
import pytest
from standardwebhooks.webhooks import Webhook as Signer

from dockyard.core import webhook_deliveries as store
from dockyard.core.kube import KubeClient
from dockyard.core.models.webhook import WebhookSpec
from dockyard.core.settings import Settings
from dockyard.operator.webhooks.dispatcher import Dispatcher
from dockyard.operator.webhooks.lookups import (
    LOOKUP_THREADS,
    NAMESPACE_THREADS,
    NameLookups,
    asking_for,
)
from dockyard.operator.webhooks.targets import Target

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# More hosts than the loop's default thread pool has threads.
SHARED_POOL_THREADS = min(32, (os.cpu_count() or 1) + 4)


class _Dns:
    """``socket.getaddrinfo`` as the test wants it: names under ``.slow.test`` never
    answer (until released), ``inside.test`` is a private address, ``outside.test`` a
    public one."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.asked: Counter[str] = Counter()
        self.waiting = 0
        self.most_waiting = 0
        self._lock = threading.Lock()

    def getaddrinfo(self, host: Any, port: Any, *_args: Any, **_kwargs: Any) -> list[Any]:
        with self._lock:
            self.asked[str(host)] += 1
        if str(host).endswith(".slow.test"):
            with self._lock:
                self.waiting += 1
                self.most_waiting = max(self.most_waiting, self.waiting)
            self.released.wait(10)
            with self._lock:
                self.waiting -= 1
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        address = "10.1.2.3" if host == "inside.test" else "93.184.216.34"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Dns]:
    fake = _Dns()
    monkeypatch.setattr(socket, "getaddrinfo", fake.getaddrinfo)
    yield fake
    fake.released.set()


class _Deliveries:
    """Stands in for the platform database: the delivery rows' writes, recorded."""

    def __init__(self) -> None:
        self.writes: list[tuple[Any, ...]] = []

    async def execute(self, *args: Any) -> str:
        self.writes.append(args)
        return "UPDATE 1"


@pytest.fixture
async def dispatcher(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Dispatcher]:
    async def no_passes(_self: Dispatcher) -> None:
        return None

    monkeypatch.setattr(Dispatcher, "_run", no_passes)
    settings = Settings(webhook_timeout=1.0, webhook_allowed_networks=[])
    made = Dispatcher(cast(KubeClient, None), cast(asyncpg.Pool, _Deliveries()), settings)
    await made.start()
    yield made
    await made.close()


def _target(host: str, uid: str = "uid-1") -> Target:
    spec = WebhookSpec.model_validate(
        {"url": f"https://{host}/hook", "events": ["*"],
         "secretRef": {"name": "hook", "key": "secret"}}
    )  # fmt: skip
    return Target(uid, "team", "hook", 1, spec, Signer(SECRET), everywhere=False)


def _claimed(uid: str = "uid-1") -> store.Claimed:
    return store.Claimed(1, uid, "team", "evt_1", 1, datetime.now(UTC), "backup.completed", {})


async def test_hosts_whose_dns_never_answers_leave_the_shared_thread_pool_free(
    dns: _Dns, dispatcher: Dispatcher
) -> None:
    hosts = [f"h{i}.slow.test" for i in range(SHARED_POOL_THREADS + 8)]
    posts = asyncio.gather(
        *(dispatcher._post(_target(host), _claimed()) for host in hosts), return_exceptions=True
    )
    await asyncio.sleep(0.2)  # every delivery is looking its host up by now

    await asyncio.wait_for(asyncio.to_thread(int), 2)

    failed = await asyncio.wait_for(posts, 5)
    assert all(isinstance(f, aiohttp.ClientError | TimeoutError) for f in failed)
    assert dns.most_waiting <= LOOKUP_THREADS


async def test_concurrent_lookups_of_one_name_are_one_lookup_and_wait_their_timeout_at_most(
    dns: _Dns,
) -> None:
    lookups = NameLookups(timeout=0.3)
    try:
        started = time.monotonic()
        answers = await asyncio.gather(
            *(lookups.resolve("one.slow.test", 443) for _ in range(10)), return_exceptions=True
        )
        assert time.monotonic() - started < 1.0
        assert all(isinstance(a, socket.gaierror) for a in answers)
        # Asked again while the first lookup is still stuck: it waits on that one.
        with pytest.raises(socket.gaierror, match=r"took longer than 0\.3 s"):
            await lookups.resolve("one.slow.test", 443)
        assert dns.asked["one.slow.test"] == 1
    finally:
        await lookups.close()


async def test_a_name_resolved_in_the_own_threads_is_still_judged_by_the_guard(
    dns: _Dns, dispatcher: Dispatcher
) -> None:
    """The address the name resolves to is refused, and the status says why without it
    (the platform's internal addresses are not the tenant's to see)."""
    target = _target("inside.test")
    dispatcher.targets[target.uid] = target

    await dispatcher._deliver(_claimed())

    last = dispatcher.statuses.last[target.uid]
    assert not last.succeeded
    assert last.error is not None
    assert "inside.test resolves to a private address" in last.error
    assert "DOCKYARD_WEBHOOK_ALLOWED_NETWORKS" in last.error
    assert "10.1.2.3" not in last.error
    assert dns.asked["inside.test"] == 1


async def test_one_namespaces_stuck_names_leave_the_other_namespaces_threads(dns: _Dns) -> None:
    """A tenant's Webhooks on names whose DNS never answers hold its own share of the
    lookup threads: another namespace's name still resolves."""
    lookups = NameLookups(timeout=0.3)
    try:
        with asking_for("tenant-a"):
            stuck = await asyncio.gather(
                *(lookups.resolve(f"h{i}.slow.test", 443) for i in range(LOOKUP_THREADS * 2)),
                return_exceptions=True,
            )
        assert all(isinstance(a, socket.gaierror) for a in stuck)
        assert dns.most_waiting <= NAMESPACE_THREADS
        with asking_for("tenant-b"):
            [found] = await lookups.resolve("outside.test", 443)
        assert found["host"] == "93.184.216.34"
    finally:
        await lookups.close()


async def test_a_lookup_whose_callers_all_gave_up_before_a_thread_was_free_is_dropped(
    dns: _Dns,
) -> None:
    lookups = NameLookups(timeout=0.2, threads=1, share=1)
    try:
        with pytest.raises(socket.gaierror):
            await lookups.resolve("first.slow.test", 443)  # holds the one thread
        with pytest.raises(socket.gaierror):
            await lookups.resolve("queued.slow.test", 443)  # never got the thread
        await asyncio.sleep(0)
        dns.released.set()  # the first lookup returns, its thread is free
        await asyncio.sleep(0.2)
        assert dns.asked["queued.slow.test"] == 0  # not run for nobody
    finally:
        await lookups.close()


async def test_a_namespaces_share_of_the_threads_is_forgotten_once_no_lookup_uses_it(
    dns: _Dns,
) -> None:
    """Every namespace that ever asked for a name would otherwise be remembered for good."""
    lookups = NameLookups(timeout=0.2, threads=1, share=1)
    try:
        for namespace in ("tenant-a", "tenant-b", "tenant-c"):
            with asking_for(namespace):
                [found] = await lookups.resolve("outside.test", 443)
            assert found["host"] == "93.184.216.34"
        with asking_for("tenant-d"), pytest.raises(socket.gaierror):
            await lookups.resolve("first.slow.test", 443)  # holds the one thread
        with asking_for("tenant-e"), pytest.raises(socket.gaierror):
            await lookups.resolve("queued.slow.test", 443)  # dropped, never got it
        await asyncio.sleep(0.05)
        assert set(lookups._shares) == {"tenant-d"}  # its thread has not returned yet
        dns.released.set()
        await asyncio.sleep(0.2)
        assert lookups._shares == {}
    finally:
        await lookups.close()
