"""``Dispatcher``: delivers the event log to the Webhooks, one pass every interval.

A pass:

1. fans out the events logged since each ready Webhook's cursor into deliveries;
2. claims due deliveries (``webhook_deliveries.claim``: one replica per attempt) into
   the free slots of ``Flights`` (``flights.CONCURRENCY`` in all), shared among the
   namespaces that have deliveries due, and starts each without waiting for it;
3. writes each Webhook's status when what it shows changed.

Each delivery is signed as Standard Webhooks says (``webhook-id`` is the event's id, so
a receiver deduplicates on it), and its result recorded: delivered on a 2xx; otherwise
retried after an exponential backoff with jitter, or given up (a dead letter) once the
delivery has been due for ``DOCKYARD_WEBHOOK_DEAD_LETTER_AFTER`` (time parked, its
Webhook suspended or not Ready, is not counted: ``webhook_deliveries.wake``).

Each endpoint has a circuit breaker of its own (purgatory, through ``Breakers``): after
``DOCKYARD_WEBHOOK_BREAKER_FAILURES`` failures in a row, its deliveries wait out
``DOCKYARD_WEBHOOK_BREAKER_OPEN_SECONDS`` without an attempt (none is counted as one),
then one is let through. Every connection goes through the SSRF guard's resolver: a
name that resolves to a private, loopback or link-local address is refused unless the
settings allow it. Names are looked up in threads of the dispatcher's own
(``NameLookups``), never in the event loop's shared pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp
import asyncpg

from dockyard.core import webhook_deliveries as store
from dockyard.core.breakers import Breakers, Dependency, DependencyUnavailable
from dockyard.core.kube import KubeClient
from dockyard.core.metrics import OperatorMetrics
from dockyard.core.models.common import ObjectMeta
from dockyard.core.models.webhook import Webhook, WebhookStatus
from dockyard.core.settings import Settings
from dockyard.core.tasks import cancel_and_wait
from dockyard.operator.store import InvalidObject, KindStore
from dockyard.operator.webhooks.failures import (
    DeliveryFailed,
    backoff,
    describe,
    refused_address,
    trips_breaker,
)
from dockyard.operator.webhooks.flights import CONCURRENCY, Flights
from dockyard.operator.webhooks.lookups import NameLookups, asking_for
from dockyard.operator.webhooks.retention import DeliveryRetention
from dockyard.operator.webhooks.statuses import Statuses
from dockyard.operator.webhooks.targets import (
    Target,
    TargetRefused,
    check_events,
    check_url,
    read_signer,
)
from dockyard.runner.endpoints import EndpointPolicy, GuardedResolver

logger = logging.getLogger(__name__)

USER_AGENT: Final = "dockyard-webhooks"
# How long a suspended Webhook's delivery is parked before it is looked at again.
SUSPENDED_RECHECK: Final = 300.0
# Of a receiver's answer, at most this much of the body is read (it is not kept).
RESPONSE_READ_LIMIT: Final = 64 * 1024
_DATABASE_ERRORS: Final = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)
# At a stop, the deliveries in flight get this long past the delivery timeout to record
# their results; a release gets this long too.
LANDING_MARGIN: Final = 1.0


class Dispatcher:
    def __init__(
        self,
        kube: KubeClient,
        pool: asyncpg.Pool,
        settings: Settings,
        metrics: OperatorMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.metrics = metrics
        self.pool = pool
        self.settings = settings
        self.targets: dict[str, Target] = {}
        # Webhooks ``check`` refused (not Ready): their deliveries stay parked.
        self._refused: set[str] = set()
        self.policy = EndpointPolicy.of(
            settings.webhook_allow_http,
            settings.webhook_allowed_networks,
            label="webhook URL",
            settings="DOCKYARD_WEBHOOK",
        )
        self.breakers = Breakers(
            failure_threshold=settings.webhook_breaker_failures,
            open_seconds=settings.webhook_breaker_open_seconds,
            is_failure=trips_breaker,
        )
        self.webhooks = KindStore(kube, Webhook)
        self._session: aiohttp.ClientSession | None = None
        self._lookups: NameLookups | None = None
        self.flights = Flights()
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._retention: asyncio.Task[None] | None = None
        self.statuses = Statuses(self.webhooks, self.breakers, metrics)
        self.retention = DeliveryRetention(kube, pool, settings)

    # -- life cycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._lookups = NameLookups(timeout=self.settings.webhook_timeout)
        connector = aiohttp.TCPConnector(
            resolver=GuardedResolver(self.policy, self._lookups), limit=CONCURRENCY
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.webhook_timeout),
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            auto_decompress=False,
            # One session serves every tenant's receivers: a cookie one of them set (for
            # Domain=com, say, which aiohttp's jar takes) would ride along with the others'
            # deliveries, swelling their headers until their servers refuse them.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")
        self._retention = asyncio.create_task(
            self.retention.run_periodically(), name="event-retention"
        )

    async def close(self) -> None:
        """Stop claiming, let the deliveries in flight end (each takes the delivery
        timeout at most), and let go of any still in flight after that (``_attempt``).

        A pass under way ends first: cut short between its claim and the start of what
        it claimed, those deliveries would wait out their lease."""
        within = self.settings.webhook_timeout + LANDING_MARGIN
        self._stopping.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=within)
        for task in (self._task, self._retention):
            await cancel_and_wait(task)
        if stopped := await self.flights.land(within):
            logger.warning("webhook deliveries stopped at shutdown", extra={"count": stopped})
        if self._session is not None:
            await self._session.close()
        if self._lookups is not None:
            await self._lookups.close()

    async def check(self, body: dict[str, Any]) -> None:
        """Check a created, changed or resumed Webhook; deliver to it only if it passes.

        ``Ready`` says which: True, or False with the reason (``URLRefused``,
        ``UnknownEventType``, ``SecretNotFound``, ``InvalidSecret``) and what to fix.
        A check that fails otherwise (the apiserver or the database out) stops
        deliveries to the Webhook until one succeeds (Kopf retries it): the spec it last
        passed with, perhaps an old URL or not yet ``suspend``, is not delivered to.
        Nor is one whose spec, which the apiserver let by, the models refuse (``InvalidSpec``).
        """
        uid = str(body["metadata"].get("uid") or "")
        try:
            webhook = self.webhooks.parse(body)
        except InvalidObject as invalid:
            self._drop(uid)
            self._refused.add(uid)
            await store.park(self.pool, uid, store.NOT_READY, SUSPENDED_RECHECK)
            verdict = (False, "InvalidSpec", invalid.problem)
            await self.statuses.ready(
                ObjectMeta.model_validate(body["metadata"]), WebhookStatus(), verdict
            )
            return
        try:
            await self._check(webhook)
        except BaseException:
            current = self.targets.get(uid)
            if current is None or current.spec != webhook.spec:
                self._drop(uid)
                self._refused.add(uid)  # its deliveries are parked as they come up
            raise

    async def _check(self, webhook: Webhook) -> None:
        meta = webhook.metadata
        namespace, name, uid = meta.namespace or "", meta.name or "", meta.uid or ""
        generation = meta.generation or 0
        try:
            check_events(webhook.spec)
            check_url(self.policy, webhook.spec.url)
            signer = await read_signer(self.kube, namespace, webhook.spec)
        except TargetRefused as refused:
            self._drop(uid)  # not delivered to until fixed; its deliveries wait, parked
            self._refused.add(uid)
            await store.park(self.pool, uid, store.NOT_READY, SUSPENDED_RECHECK)
            ready = (False, refused.reason, refused.message)
        else:
            self._refused.discard(uid)
            await store.start(self.pool, uid, meta.creation_timestamp or datetime.now(UTC))
            if webhook.spec.suspend:
                # Every pending row marked parked now, claimed ones too: a resume's wake
                # then finds each, and a claim parked after it does not stick.
                await store.park(self.pool, uid, store.SUSPENDED, SUSPENDED_RECHECK)
            else:
                await store.wake(self.pool, uid)  # what was parked is due again, from now
            self.targets[uid] = Target(
                uid, namespace, name, generation, webhook.spec, signer,
                everywhere=namespace == self.settings.namespace,
                created=meta.creation_timestamp,
            )  # fmt: skip
            scope = "every namespace" if namespace == self.settings.namespace else namespace
            ready = (True, "Accepted", f"Delivering {', '.join(webhook.spec.events)} of {scope}.")
        await self.statuses.ready(meta, webhook.status, ready)

    def _drop(self, uid: str) -> None:
        target = self.targets.pop(uid, None)
        self.statuses.forget(uid)
        self.breakers.forget(Dependency.WEBHOOK, uid)
        if target is not None and self.metrics is not None:
            self.metrics.forget_webhook(target.namespace, target.name)

    def _known(self, target: Target) -> bool:
        """Whether ``target``'s Webhook is still here; a delivery that was in flight when
        it was removed must not bring back what ``_drop`` forgot."""
        if target.uid in self.targets:
            return True
        self._drop(target.uid)
        return False

    async def remove(self, uid: str) -> None:
        """A Webhook was deleted: forget it, here and its deliveries in the database."""
        self._drop(uid)
        self._refused.discard(uid)
        await self.retention.forget(uid)

    def _count(self, target: Target, result: str) -> None:
        if self.metrics is not None:
            self.metrics.deliveries.labels(target.namespace, target.name, result).inc()

    # -- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except _DATABASE_ERRORS as exc:
                logger.warning("webhook pass failed", extra={"error": type(exc).__name__})
            except Exception:
                logger.exception("webhook pass failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.webhook_interval):
                    await self._stopping.wait()

    async def run_once(self) -> None:
        """One pass: fan out, claim into the free slots and start, show."""
        if not self.targets:
            return  # no Webhook: an idle operator asks the database nothing
        ready = [t for t in self.targets.values() if not t.spec.suspend]
        for target in ready:
            await store.fan_out(
                self.pool,
                target.uid,
                target.namespace,
                target.name,
                lambda row, t=target: t.wants(row.type, row.namespace, row.occurred_at),  # type: ignore[misc]
            )
        await self._claim({t.namespace for t in self.targets.values()})
        await self._show()

    async def _claim(self, namespaces: set[str]) -> None:
        """Claim due deliveries into the free slots, the namespaces with fewest in flight
        first (``Flights.offers``), and start each."""
        for offered, most in self.flights.offers(namespaces):
            room = min(self.flights.free(), most)
            if room <= 0:
                return
            claimed = await store.claim(
                self.pool, offered, room, lease=self._lease(), everywhere=self.settings.namespace
            )
            for delivery in claimed:
                self.flights.launch(delivery.namespace, self._attempt(delivery))

    async def _attempt(self, delivery: store.Claimed) -> None:
        """Deliver, and record any outcome: an unexpected error as a failed attempt; a
        database out leaves the delivery to its lease. Cut short (the replica stopping),
        it lets go of the claim, so that the next replica need not wait out the lease."""
        try:
            try:
                await self._deliver(delivery)
            except asyncio.CancelledError:
                await self._release(delivery)
                raise
            except _DATABASE_ERRORS:
                raise
            except Exception as exc:
                logger.exception("webhook delivery failed unexpectedly")
                await store.retry(self.pool, delivery.id, self._lease(), None, describe(exc))
        except _DATABASE_ERRORS as exc:
            logger.warning(
                "webhook delivery not recorded; its lease brings it back",
                extra={"event_id": delivery.event_id, "error": type(exc).__name__},
            )

    async def _release(self, delivery: store.Claimed) -> None:
        try:
            async with asyncio.timeout(LANDING_MARGIN):
                await store.release(self.pool, delivery)
        except _DATABASE_ERRORS as exc:
            logger.warning(
                "webhook delivery not released; its lease brings it back",
                extra={"event_id": delivery.event_id, "error": type(exc).__name__},
            )

    def _lease(self) -> float:
        # Longer than an attempt can take, so no other replica retries one in flight.
        return self.settings.webhook_timeout * 2 + 5

    # -- one delivery -------------------------------------------------------------------

    async def _deliver(self, delivery: store.Claimed) -> None:
        target = self.targets.get(delivery.webhook_uid)
        if target is None or target.spec.suspend:
            # Suspended or not Ready: kept, not given up; parked for long, so that its
            # backlog takes no other delivery's place in a batch, until ``check`` wakes it.
            # Deleted, not checked yet, or woken since the claim: again soon, uncounted.
            parked = store.SUSPENDED if target is not None else store.NOT_READY
            held = target is not None or delivery.webhook_uid in self._refused
            if not (held and await store.park_one(self.pool, delivery, SUSPENDED_RECHECK, parked)):
                await store.postpone(self.pool, delivery.id, self._lease())
            return
        status: int | None = None
        try:
            async with self.breakers.guard(Dependency.WEBHOOK, target.uid):
                status = await self._post(target, delivery)
        except DependencyUnavailable as exc:
            cause = exc.__cause__
            if cause is None:
                await self._held_back(target, delivery, exc.reason, exc.retry_after)
                return
            if isinstance(cause, DeliveryFailed):
                status = cause.recorded
            elif (refused := refused_address(cause)) is not None:
                logger.debug(
                    "webhook host refused",
                    extra={"host": refused.host, "address": refused.address},
                )
            await self._failed(target, delivery, status, describe(cause), exc.retry_after)
            return
        # The POST may have brought a removed Webhook's breaker back. Before any await:
        # the guard has just closed the breaker, and a status shown meanwhile (by the next
        # pass, deliveries being in flight across passes) must not say Closed beside the
        # failures of before.
        if self._known(target):
            self.statuses.delivered(target, delivery, status)
        await store.delivered(self.pool, delivery.id, status)
        if self._known(target):  # it may have been removed while the row was written
            self._count(target, "delivered")

    async def _post(self, target: Target, delivery: store.Claimed) -> int:
        if self._session is None:
            raise RuntimeError("the dispatcher was not started")
        payload = json.dumps(delivery.body, separators=(",", ":"), sort_keys=True)
        now = datetime.now(UTC)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": target.signer.sign(delivery.event_id, now, payload),
        }
        # Its name lookup counts against its namespace's share of the lookup threads.
        with asking_for(target.namespace):
            async with self._session.post(
                target.spec.url, data=payload.encode(), headers=headers, allow_redirects=False
            ) as response:
                # The receiver's answer is its status; of its body, at most a bounded
                # part is read (never decompressed), so that no receiver can fill the
                # operator's memory. The connection is dropped rather than drained past.
                await response.content.read(RESPONSE_READ_LIMIT)
                if not 200 <= response.status < 300:
                    raise DeliveryFailed(response.status)
                return response.status

    async def _failed(
        self,
        target: Target,
        delivery: store.Claimed,
        status: int | None,
        error: str,
        breaker_wait: float,
    ) -> None:
        if self._known(target):
            self._count(target, "failed")
            self.statuses.failed(target, delivery, status, error)
        if self._overdue(delivery):
            await self._give_up(target, delivery, status, error)
            return
        delay = backoff(
            delivery.attempt, self.settings.webhook_backoff_base, self.settings.webhook_backoff_max
        )
        if self.breakers.is_open(Dependency.WEBHOOK, target.uid):
            delay = max(delay, breaker_wait)
        await store.retry(self.pool, delivery.id, delay, status, error)

    async def _held_back(
        self, target: Target, delivery: store.Claimed, reason: str, breaker_wait: float
    ) -> None:
        """The open breaker refused the delivery: no attempt reached the receiver, so the
        status keeps the last real one. The row still counts the claim, so its backoff
        grows as a failed attempt's would: a dead endpoint's backlog spreads out rather
        than fall due all at once each time the breaker half-opens, ahead of every newer
        delivery of its namespace. Given up once due past the dead-letter window."""
        self._known(target)  # the guard may have brought a removed Webhook's breaker back
        if self._overdue(delivery):
            await self._give_up(target, delivery, None, reason)
            return
        delay = backoff(
            delivery.attempt, self.settings.webhook_backoff_base, self.settings.webhook_backoff_max
        )
        await store.retry(self.pool, delivery.id, max(delay, breaker_wait), None, reason)

    def _overdue(self, delivery: store.Claimed) -> bool:
        due_for = (datetime.now(UTC) - delivery.due_since).total_seconds()
        return due_for >= self.settings.webhook_dead_letter_after

    async def _give_up(
        self, target: Target, delivery: store.Claimed, status: int | None, error: str
    ) -> None:
        await store.give_up(self.pool, delivery.id, status, error)
        if self._known(target):
            self._count(target, "dead_lettered")
        logger.warning(
            "webhook delivery given up",
            extra={"webhook": f"{target.namespace}/{target.name}",
                   "event_id": delivery.event_id, "attempts": delivery.attempt},
        )  # fmt: skip

    # -- status -------------------------------------------------------------------------

    async def _show(self) -> None:
        if self.targets:
            await self.statuses.show(
                self.targets, await store.counts(self.pool, list(self.targets))
            )
