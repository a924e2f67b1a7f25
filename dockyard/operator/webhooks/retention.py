"""``DeliveryRetention``: what the platform database keeps of events and deliveries.

A minute after start-up, then hourly, one pass:

1. finds the Webhooks the database still holds deliveries or a cursor for that the
   apiserver no longer has: deleted while no operator watched, so their DELETED event
   never came. The database is read first, then the apiserver: a Webhook made in
   between has no rows yet, and one that had rows and is not listed is gone for good
   (uids are never reused). One is forgotten when two passes in a row found it so: an
   hour's grace for rows written by hand or restored with the database;
2. forgets those, and the deleted Webhooks whose forgetting failed before (the database
   was out when their DELETED event came);
3. purges finished deliveries and events older than ``DOCKYARD_EVENT_RETENTION_DAYS``.

Purging twice is harmless, so every replica does it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import aiohttp
import asyncpg

from dockyard.core import webhook_deliveries as store
from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.resources import WEBHOOKS
from dockyard.core.settings import Settings

logger = logging.getLogger(__name__)

RETENTION_FIRST_DELAY: Final = 60.0
RETENTION_INTERVAL: Final = 3600.0
_DATABASE_ERRORS: Final = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class DeliveryRetention:
    """Forgets deleted Webhooks' deliveries and purges old rows; one per dispatcher."""

    def __init__(self, kube: KubeClient, pool: asyncpg.Pool, settings: Settings) -> None:
        self.kube = kube
        self.pool = pool
        self.settings = settings
        # Deleted Webhooks whose deliveries could not be forgotten yet (the database was
        # out); each pass tries again.
        self.unforgotten: set[str] = set()
        # Webhooks the last pass found gone: the next forgets those it finds gone again.
        self.suspects: set[str] = set()

    async def forget(self, uid: str) -> None:
        """A Webhook was deleted: forget its deliveries and cursor, now or on a later pass."""
        self.unforgotten.add(uid)
        await self.forget_deleted()

    async def forget_deleted(self) -> None:
        """Forget the deliveries of every deleted Webhook not forgotten yet; one whose
        forget fails is tried again by the next pass."""
        for uid in sorted(self.unforgotten):
            try:
                await store.forget(self.pool, uid)
            except _DATABASE_ERRORS as exc:
                logger.warning(
                    "deleted webhook's deliveries kept until the next retention pass",
                    extra={"webhook_uid": uid, "error": type(exc).__name__},
                )
                return
            self.unforgotten.discard(uid)

    async def find_orphans(self) -> None:
        """Note the Webhooks the database holds rows for and the apiserver no longer has,
        as suspects on a first pass, to be forgotten on the second."""
        try:
            held = await store.webhook_uids(self.pool)
            if not held:
                return
            listing = await self.kube.get(WEBHOOKS.cluster_path())
        except (*_DATABASE_ERRORS, KubeError, aiohttp.ClientError) as exc:
            # A 404 too: with the kind not installed, nothing says which Webhooks are gone.
            logger.warning(
                "deleted webhooks not looked for this retention pass",
                extra={"error": type(exc).__name__},
            )
            return
        if (live := _listed_uids(listing)) is None:
            logger.warning("deleted webhooks not looked for: the answer is no full WebhookList")
            return
        orphans = held - live
        if confirmed := orphans & self.suspects:
            logger.info(
                "forgetting the deliveries of webhooks deleted while no operator watched",
                extra={"webhooks": len(confirmed)},
            )
            self.unforgotten |= confirmed
        self.suspects = orphans - confirmed

    async def run_once(self) -> None:
        await self.find_orphans()
        await self.forget_deleted()
        before = datetime.now(UTC) - timedelta(days=self.settings.event_retention_days)
        try:
            deliveries, events = await store.purge(self.pool, before)
        except _DATABASE_ERRORS as exc:
            logger.error("event retention failed", extra={"error": type(exc).__name__})
        else:
            logger.info(
                "event retention purged old rows",
                extra={"event": "events.purged", "deliveries": deliveries, "events": events},
            )

    async def run_periodically(self) -> None:
        await asyncio.sleep(RETENTION_FIRST_DELAY)
        while True:
            try:
                await self.run_once()
            except Exception:  # one bad pass must not end retention for good
                logger.exception("event retention pass failed; the next one tries again")
            await asyncio.sleep(RETENTION_INTERVAL)


def _listed_uids(listing: Mapping[str, Any]) -> set[str] | None:
    """The uids of a complete list of Webhooks; ``None`` for anything else, such as a
    proxy's page the client read as a message, or a list cut into pages."""
    items = listing.get("items")
    more = (listing.get("metadata") or {}).get("continue")
    if listing.get("kind") != "WebhookList" or not isinstance(items, list) or more:
        return None
    uids: set[str] = set()
    for item in items:
        meta = item.get("metadata") if isinstance(item, dict) else None
        uid = meta.get("uid") if isinstance(meta, dict) else None
        if not isinstance(uid, str) or not uid:
            return None
        uids.add(uid)
    return uids
