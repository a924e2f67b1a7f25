"""The Webhook kind: where Dockyard's events are delivered, signed.

A Webhook in the platform namespace (``dockyard-system``) receives every namespace's
events; one elsewhere receives its own namespace's. Deliveries follow the Standard
Webhooks specification (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``),
signed with the secret that ``spec.secretRef`` names (``whsec_<base64>``). The
operator's dispatcher (``dockyard.operator.webhooks``) delivers them and writes the
status: the last delivery, consecutive failures, the endpoint's breaker and the
dead letters.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Final

from pydantic import Field

from dockyard.core.events import EventType
from dockyard.core.models.common import CRModel, CustomResource, status_field
from dockyard.core.models.declarations import CRDInfo, PrinterColumn
from dockyard.core.models.references import SecretKeyReference
from dockyard.core.models.status import Status

URL_MAX_LENGTH: Final = 2048
EVERY_EVENT: Final = "*"
EVENT_PATTERN: Final = r"^(\*|[a-z]+\.[a-z_]+)$"


class BreakerState(StrEnum):
    """The endpoint's circuit breaker, as the dispatcher last saw it."""

    CLOSED = "Closed"
    OPEN = "Open"
    HALF_OPEN = "HalfOpen"


class WebhookConditionType(StrEnum):
    READY = "Ready"
    """The URL is allowed (https, not a private address unless the operator allows it)
    and the signing secret is readable (False with the reason when not)."""


class WebhookSpec(CRModel):
    """Where to deliver which events, and how to sign them."""

    url: str = Field(max_length=URL_MAX_LENGTH, pattern=r"^https?://[^\s/?#]+([/?#]\S*)?$")
    """The receiver's URL. https only, and no private, loopback or link-local address, unless the
    operator's settings allow them (DOCKYARD_WEBHOOK_ALLOW_HTTP,
    DOCKYARD_WEBHOOK_ALLOWED_NETWORKS)."""
    events: list[Annotated[str, Field(max_length=64, pattern=EVENT_PATTERN)]] = Field(
        min_length=1,
        max_length=len(EventType) + 1,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Event types to deliver (specs/events/), or '*' for every type. Unknown types are refused in
    the Ready condition."""
    secret_ref: SecretKeyReference
    """The Secret key holding the signing secret, in the Standard Webhooks form whsec_<base64>, in
    the Webhook's namespace. The key (the decoded base64) is at least 24 bytes long; a shorter one
    is refused (Ready=False, InvalidSecret)."""
    suspend: bool = False
    """Stop delivering. Events logged meanwhile are delivered on resume if it comes within
    DOCKYARD_EVENT_RETENTION_DAYS (default 30) of when each was logged: older ones are purged from
    the event log undelivered. The same holds while the Webhook is not Ready."""

    def wants(self, event_type: str) -> bool:
        return EVERY_EVENT in self.events or event_type in self.events


class LastDelivery(CRModel):
    """The dispatcher's last attempt at this endpoint."""

    event_id: str = Field(max_length=64)
    """The event's id (webhook-id)."""
    type: str = Field(max_length=64)
    """The event's type."""
    at: datetime
    """When the attempt ended."""
    succeeded: bool
    """Whether the receiver answered 2xx."""
    status_code: int | None = Field(default=None, ge=100, le=599)
    """The receiver's HTTP status, if any; one outside 100-599 is given in error only."""
    error: str | None = Field(default=None, max_length=512)
    """Why it failed, when it failed."""


class WebhookStatus(Status):
    """The observed state of a webhook, written by the operator."""

    field_descriptions: ClassVar[Mapping[str, str]] = {
        "conditions": "Current conditions: Ready (the URL and secret are usable).",
    }

    last_delivery: LastDelivery | None = None
    """The last delivery attempt."""
    consecutive_failures: int = Field(default=0, ge=0)
    """Failed attempts since the last success (deliveries the open breaker held back were not
    attempted and are not counted)."""
    breaker: BreakerState = BreakerState.CLOSED
    """The endpoint's circuit breaker: Open while deliveries are held back."""
    pending: int = Field(default=0, ge=0)
    """Deliveries waiting or being retried."""
    dead_letters: int = Field(default=0, ge=0)
    """Deliveries given up after DOCKYARD_WEBHOOK_DEAD_LETTER_AFTER; redeliver them with POST
    .../webhooks/{name}/redeliver."""


class Webhook(CustomResource):
    """A Webhook delivers Dockyard's events (specs/events/) to an HTTPS endpoint, signed
    as the Standard Webhooks specification says."""

    crd = CRDInfo(
        kind="Webhook",
        plural="webhooks",
        short_names=("dywh",),
        printer_columns=(
            PrinterColumn("URL", "string", ".spec.url", "Where events are delivered."),
            PrinterColumn("Breaker", "string", ".status.breaker", "The endpoint's breaker."),
            PrinterColumn(
                "Failures", "integer", ".status.consecutiveFailures", "Failures in a row."
            ),
            PrinterColumn("Dead", "integer", ".status.deadLetters", "Deliveries given up."),
        ),
    )

    spec: WebhookSpec
    """Where to deliver which events, and how to sign."""
    status: WebhookStatus = status_field(
        WebhookStatus, "The observed state of the webhook, written by the operator."
    )


__all__ = [
    "EVERY_EVENT",
    "BreakerState",
    "LastDelivery",
    "Webhook",
    "WebhookConditionType",
    "WebhookSpec",
    "WebhookStatus",
]
