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
  (a failed attempt, retried with backoff); a lookup all of whose callers gave up
  before it got a thread is dropped, not run for nobody;
- one namespace's lookups (the namespace of the delivery that asked first, from
  ``asking_for``) hold at most ``NAMESPACE_THREADS`` of the threads: a tenant whose
  Webhooks name hosts that never answer stalls its own lookups, not everyone's; a
  namespace's share is forgotten once no lookup holds or waits for it.

The addresses found are judged by the SSRF guard (``GuardedResolver``) that wraps this.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Final

from aiohttp.abc import AbstractResolver, ResolveResult

LOOKUP_THREADS: Final = 4
NAMESPACE_THREADS: Final = 2
# The namespace of the delivery whose connection asks for a name (set by the dispatcher
# around its POST; a task's context follows it into aiohttp's connector).
_NAMESPACE: ContextVar[str] = ContextVar("webhook_lookup_namespace", default="")
_Key = tuple[str, int, int]
# As aiohttp's own resolver: addresses its connector uses without resolving them again.
_NUMERIC = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
_NUMERIC_NAME = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV


@dataclass
class _Share:
    """One namespace's share of the lookup threads, and how many lookups hold or wait
    for it."""

    threads: asyncio.Semaphore
    users: int = 0


class NameLookups(AbstractResolver):
    """An aiohttp resolver with its own ``threads`` and a ``timeout`` per lookup."""

    def __init__(
        self, timeout: float, threads: int = LOOKUP_THREADS, share: int = NAMESPACE_THREADS
    ) -> None:
        self._timeout = timeout
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="webhook-dns")
        self._free = asyncio.Semaphore(threads)
        self._share = share
        # Dropped when no lookup holds or waits for it: namespaces long gone leave nothing.
        self._shares: dict[str, _Share] = {}
        self._running: dict[_Key, asyncio.Task[list[ResolveResult]]] = {}
        self._waiting: dict[_Key, int] = {}
        self._started: set[_Key] = set()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        key = (host, port, int(family))
        lookup = self._running.get(key)
        if lookup is None:
            lookup = asyncio.create_task(
                self._look_up(key, _NAMESPACE.get()), name=f"webhook-dns {host}"
            )
            self._running[key] = lookup
            lookup.add_done_callback(partial(self._ended, key))
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with asyncio.timeout(self._timeout):
                return await asyncio.shield(lookup)
        except TimeoutError:
            raise socket.gaierror(
                socket.EAI_AGAIN, f"the name lookup took longer than {self._timeout:g} s"
            ) from None
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]
                if key not in self._started:
                    lookup.cancel()  # still queued for a thread, and nobody waits for it

    async def _look_up(self, key: _Key, namespace: str) -> list[ResolveResult]:
        share = self._join(namespace)
        loop = asyncio.get_running_loop()
        try:
            await share.acquire()
        except BaseException:
            self._leave(namespace, held=False)
            raise
        try:
            await self._free.acquire()
        except BaseException:
            self._leave(namespace)
            raise
        try:
            job = self._pool.submit(_getaddrinfo, *key)
        except BaseException:
            self._free.release()
            self._leave(namespace)
            raise
        self._started.add(key)
        # The threads are free when the lookup returns, not when its waiters give up.
        job.add_done_callback(partial(_release, loop, self._free.release))
        job.add_done_callback(partial(_release, loop, partial(self._leave, namespace)))
        return await asyncio.wrap_future(job)

    def _join(self, namespace: str) -> asyncio.Semaphore:
        """``namespace``'s share, counted as used by one more lookup until ``_leave``."""
        share = self._shares.get(namespace)
        if share is None:
            share = self._shares[namespace] = _Share(asyncio.Semaphore(self._share))
        share.users += 1
        return share.threads

    def _leave(self, namespace: str, held: bool = True) -> None:
        share = self._shares[namespace]
        if held:
            share.threads.release()
        share.users -= 1
        if not share.users:
            del self._shares[namespace]

    def _ended(self, key: _Key, lookup: asyncio.Task[list[ResolveResult]]) -> None:
        if self._running.get(key) is lookup:
            del self._running[key]
            self._started.discard(key)
        if not lookup.cancelled():
            lookup.exception()  # retrieved: its waiters, if any are left, got it

    async def close(self) -> None:
        for lookup in list(self._running.values()):
            lookup.cancel()
        # A thread stuck in getaddrinfo cannot be stopped; it ends when the C library
        # gives up. Nothing waits for it here.
        self._pool.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def asking_for(namespace: str) -> Iterator[None]:
    """Name lookups made within count against ``namespace``'s share of the threads."""
    token = _NAMESPACE.set(namespace)
    try:
        yield
    finally:
        _NAMESPACE.reset(token)


def _release(
    loop: asyncio.AbstractEventLoop, release: Callable[[], None], _job: Future[object]
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(release)


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
