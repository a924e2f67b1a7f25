"""Reading a Webhook's deliveries from the platform database (``webhook_deliveries``).

The operator's dispatcher writes them (``dockyard.core.webhook_deliveries``); the API
only reads them, newest first, all of them or those in one state, paged by row id: a
page is one range scan of an index of migration 0012 however many a Webhook has had.
They are keyed by the Webhook's uid, so a Webhook made again under an old name does not
show its predecessor's deliveries. Retention (``DOCKYARD_EVENT_RETENTION_DAYS``) removes
finished ones with their events.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

import asyncpg
from pydantic import BaseModel, ConfigDict, Field

_COLUMNS = """
SELECT d.id, d.event_id, e.type, e.occurred_at, d.state, d.attempts, d.due_since, d.next_at,
       d.last_status, d.last_error, d.delivered_at
FROM webhook_deliveries d JOIN events e ON e.seq = d.event_seq
"""
_SQL_ANY = _COLUMNS + "WHERE d.webhook_uid = $1 AND d.id < $2 ORDER BY d.id DESC LIMIT $3"
_SQL_STATE = (
    _COLUMNS + "WHERE d.webhook_uid = $1 AND d.state = $4 AND d.id < $2 ORDER BY d.id DESC LIMIT $3"
)
FIRST: Final = 2**63 - 1
"""Above every row id: where the first page starts."""


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class WebhookDelivery(BaseModel):
    """One event's delivery to the Webhook."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    event_id: str = Field(
        alias="eventId", description="the event's id: the webhook-id header, on every retry"
    )
    type: str = Field(description="the event's type")
    occurred_at: datetime = Field(alias="occurredAt", description="when the event happened")
    state: DeliveryState = Field(
        description="pending (to be tried, or being tried), delivered (a 2xx answer) or dead "
        "(given up after DOCKYARD_WEBHOOK_DEAD_LETTER_AFTER; POST .../redeliver revives it)"
    )
    attempts: int = Field(
        ge=0,
        description="attempts made; one the open breaker held back counts, as its backoff does",
    )
    due_since: datetime = Field(
        alias="dueSince",
        description="since when it has been due: the dead-letter window counts from here",
    )
    next_attempt_at: datetime | None = Field(
        default=None, alias="nextAttemptAt", description="when it is tried next (pending only)"
    )
    delivered_at: datetime | None = Field(
        default=None, alias="deliveredAt", description="when the receiver accepted it"
    )
    last_status: int | None = Field(
        default=None, alias="lastStatus", description="the receiver's last HTTP status"
    )
    last_error: str | None = Field(
        default=None, alias="lastError", description="why the last attempt failed, or is held"
    )


@dataclass(frozen=True, slots=True)
class DeliveryPage:
    """One page of deliveries, and the row id to continue below (None on the last page)."""

    items: list[WebhookDelivery]
    next: int | None


class DeliveryHistory:
    """The ``webhook_deliveries`` table, read-only."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def page(
        self, webhook_uid: str, *, below: int, limit: int, state: DeliveryState | None = None
    ) -> DeliveryPage:
        """The Webhook's deliveries with ids ``below``, newest first, ``limit`` at most."""
        if state is None:
            rows = await self.pool.fetch(_SQL_ANY, webhook_uid, below, limit + 1)
        else:
            rows = await self.pool.fetch(_SQL_STATE, webhook_uid, below, limit + 1, state)
        shown = rows[:limit]
        items = [WebhookDelivery.model_validate(_fields(row)) for row in shown]
        more = len(rows) > limit
        return DeliveryPage(items, int(shown[-1]["id"]) if more else None)


def _fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as the model's fields: its columns are named as they are, but for when it
    is tried next, which only a pending delivery has."""
    fields = dict(row)
    del fields["id"]
    next_at = fields.pop("next_at")
    fields["next_attempt_at"] = next_at if row["state"] == DeliveryState.PENDING else None
    return fields


__all__ = ["FIRST", "DeliveryHistory", "DeliveryPage", "DeliveryState", "WebhookDelivery"]
