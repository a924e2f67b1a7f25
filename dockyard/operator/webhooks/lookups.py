"""``NameLookups``: the webhook deliveries' DNS, in threads of their own.

Without aiodns, aiohttp resolves names with ``getaddrinfo`` in the event loop's default
thread pool, which the operator shares with ``asyncio.to_thread`` (backup runs),
asyncpg's connects and the S3 endpoint check. A lookup cannot be cancelled: a name
whose DNS never answers holds its thread until the C library gives up, so a handful of
Webhooks on such names would take every thread of that pool and stall the rest of the
operator. Here:

- lookups run in a small pool of their own (``LOOKUP_THREADS``), owned and shut down
  by the dispatcher, so a stuck lookup can slow only webhook deliveries;
- a lookup starts only when a thread is free, rather than queueing behind stuck ones;
- concurrent lookups of one name are one lookup, until its thread returns: a stuck name
  holds one thread however many deliveries ask for it;
- a caller waits ``timeout`` seconds at most, then fails as an unresolved name does
  (a failed attempt, retried with backoff).

The addresses found are judged by the SSRF guard (``GuardedResolver``) that wraps this.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from typing import Final

from aiohttp.abc import AbstractResolver, ResolveResult

LOOKUP_THREADS: Final = 4
_Key = tuple[str, int, int]
# As aiohttp's own resolver: addresses its connector uses without resolving them again.
_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
_NUMERIC_NAME = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV


class NameLookups(AbstractResolver):
    """An aiohttp resolver with its own ``threads`` and a ``timeout`` per lookup."""

    def __init__(self, timeout: float, threads: int = LOOKUP_THREADS) -> None:
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="webhook-dns")
        self._free = asyncio.Semaphore(threads)
        self._running: dict[_Key, asyncio.Task[list[ResolveResult]]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        key = (host, port, int(family))
        lookup = self._running.get(key)
        if lookup is None:
            lookup = asyncio.create_task(self._look_up(key), name=f"webhook-dns {host}")
            self._running[key] = lookup
            lookup.add_done_callback(partial(self._ended, key))
        try:
            return await asyncio.wait_for(asyncio.shield(lookup), self._timeout)
        except TimeoutError:
            raise socket.gaierror(
                socket.EAI_AGAIN, f"the name lookup took longer than {self._timeout:g} s"
            ) from None

    async def _look_up(self, key: _Key) -> list[ResolveResult]:
        await self._free.acquire()
        try:
            job = self._pool.submit(_getaddrinfo, *key)
        except BaseException:
            self._free.release()
            raise
        # The thread is free when the lookup returns, not when its waiters give up.
        job.add_done_callback(partial(_release, asyncio.get_running_loop(), self._free))
        return await asyncio.wrap_future(job)

    def _ended(self, key: _Key, lookup: asyncio.Task[list[ResolveResult]]) -> None:
        if self._running.get(key) is lookup:
            del self._running[key]
        if not lookup.cancelled():
            lookup.exception()  # retrieved: its waiters, if any are left, got it

    async def close(self) -> None:
        for lookup in list(self._running.values()):
            lookup.cancel()
        # A thread stuck in getaddrinfo cannot be stopped; it ends when the C library
        # gives up. Nothing waits for it here.
        self._pool.shutdown(wait=False, cancel_futures=True)


def _release(
    loop: asyncio.AbstractEventLoop, free: asyncio.Semaphore, _job: Future[object]
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(free.release)


def _getaddrinfo(host: str, port: int, family: int) -> list[ResolveResult]:
    """What aiohttp's ``ThreadedResolver`` answers, looked up in the calling thread."""
    found: list[ResolveResult] = []
    infos = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM, 0, socket.AI_ADDRCONFIG)
    for kind, _, proto, _, address in infos:
        if kind == socket.AF_INET6:
            if len(address) < 3:
                continue  # IPv6 not supported by this Python
            if address[3]:  # a scope (link-local): the address with its zone
                numeric, service = socket.getnameinfo(address[:4], _NUMERIC_NAME)
                where, at = numeric, int(service)
            else:
                where, at = str(address[0]), int(address[1])
        elif kind == socket.AF_INET:
            where, at = str(address[0]), int(address[1])
        else:
            continue
        found.append(
            ResolveResult(
                hostname=host, host=where, port=at, family=kind, proto=proto, flags=_NUMERIC
            )
        )
    return found
