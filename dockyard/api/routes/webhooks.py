"""Webhooks over REST: the objects kubectl sees, with the contract of every kind,
``GET .../webhooks/{name}/deliveries`` and ``POST .../webhooks/{name}/redeliver``.

The deliveries are the Webhook's, newest first, all of them or one state's (``?state=
dead`` lists the dead letters, whose ``eventId`` redelivery takes), each with its
attempts, last HTTP status and error, from the platform database
(``dockyard.api.delivery_history``). Reading them needs ``get`` on the Webhook.

Redelivery makes the Webhook's dead letters (deliveries given up after
``DOCKYARD_WEBHOOK_DEAD_LETTER_AFTER``) pending again, all of them or one event's
(``{"eventId": "evt_..."}``); the operator's dispatcher then delivers them with a fresh
dead-letter clock. It needs ``patch`` on the Webhook.

The revival is one transaction of its own; its audit row (with the revived event ids)
is not in it. The audit middleware first makes sure the trail can be written (503
otherwise, before anything is revived) and writes the row after the revival committed,
as for every request; should PostgreSQL fail in between, the revival stands and the
lost row is logged as ``audit.write_failed``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dockyard.api import cursors, errors, keys
from dockyard.api.bodies import read_json
from dockyard.api.delivery_history import FIRST, DeliveryHistory, DeliveryState, WebhookDelivery
from dockyard.api.openapi import OperationRegistry
from dockyard.api.routes.kinds import plain_kind
from dockyard.api.routes.models import NewObjectMeta, name_field
from dockyard.api.routes.pages import page_cursor, page_size, parse_query, query_parameters
from dockyard.core import webhook_deliveries
from dockyard.core.models.webhook import Webhook


class WebhookMetaInput(NewObjectMeta):
    """The metadata a client may set on a new webhook."""

    name: str = name_field("unique in the namespace")


ROUTES = plain_kind(
    Webhook,
    WebhookMetaInput,
    keys.WEBHOOK_CACHE,
    spec="where to deliver which events, and how to sign them",
    objects="webhooks",
)


DELIVERIES_LIMIT_MAX = 100


class DeliveriesQuery(BaseModel):
    """Query parameters of a webhook's deliveries."""

    model_config = ConfigDict(extra="forbid")

    limit: int = page_size(20, DELIVERIES_LIMIT_MAX)
    cursor: str | None = page_cursor(64)
    state: DeliveryState | None = Field(
        default=None, description="only the deliveries in this state (dead: the dead letters)"
    )


class WebhookDeliveryList(BaseModel):
    """A page of a webhook's deliveries, newest first."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    webhook: str = Field(description="the webhook's name")
    items: list[WebhookDelivery] = Field(description="the deliveries on this page")
    next_cursor: str | None = Field(
        default=None, alias="nextCursor", description="pass as ?cursor= for the next page"
    )


def _row_id(position: Any) -> int:
    """The row id a deliveries cursor holds: a bigint, as the column is (a larger one
    would fail in PostgreSQL, a 500 instead of the 422 of any other foreign cursor)."""
    [row] = position
    # bool is an int to Python; a cursor never holds one.
    if type(row) is not int or not 1 <= row < 2**63:
        raise ValueError("not a delivery cursor")
    return row


async def list_deliveries(request: web.Request) -> web.Response:
    query = parse_query(request, DeliveriesQuery)
    below = cursors.read(query.cursor, _row_id) if query.cursor else FIRST
    webhook = await ROUTES.cached(request)
    history = DeliveryHistory(request.app[keys.DB_POOL])
    page = await history.page(
        webhook["metadata"]["uid"], below=below, limit=query.limit, state=query.state
    )
    body = WebhookDeliveryList(
        webhook=request.match_info["name"],
        items=page.items,
        next_cursor=cursors.encode([page.next]) if page.next is not None else None,
    )
    return web.json_response(body.model_dump(mode="json", by_alias=True, exclude_none=True))


class RedeliverRequest(BaseModel):
    """Which dead letters to deliver again."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    event_id: str | None = Field(
        default=None,
        alias="eventId",
        pattern=r"^evt_[0-9a-f]{32}$",
        description="only this event's; every dead letter of the webhook when absent",
    )


class Redelivery(BaseModel):
    """The dead letters made pending again."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    event_ids: list[str] = Field(alias="eventIds", description="their event ids")


async def redeliver(request: web.Request) -> web.Response:
    webhook = await ROUTES.cached(request)
    raw = await read_json(request) if request.can_read_body else {}
    try:
        asked = RedeliverRequest.model_validate(raw)
    except ValidationError as exc:
        raise errors.from_validation_error(exc, prefix="body") from None
    pool = request.app[keys.DB_POOL]
    async with pool.acquire() as conn, conn.transaction():
        revived = await webhook_deliveries.redeliver(
            conn, webhook["metadata"]["uid"], asked.event_id
        )
    request[keys.AUDIT] = {"redelivered": revived}
    body = Redelivery(event_ids=revived).model_dump(mode="json", by_alias=True)
    return web.json_response(body, status=202)


def register(registry: OperationRegistry) -> None:
    ROUTES.register(registry)
    registry.add(
        ROUTES.object_operation(
            "GET",
            "deliveries",
            "listWebhookDeliveries",
            "A webhook's deliveries, newest first",
            list_deliveries,
            "get",
            response_model=WebhookDeliveryList,
            description="Each event's delivery to the webhook: its state, attempts, last HTTP "
            "status and error, and when it is tried next. ?state=dead lists the dead letters, "
            "whose eventId POST .../redeliver takes.",
            parameters=query_parameters(DeliveriesQuery),
        )
    )
    registry.add(
        ROUTES.object_operation(
            "POST",
            "redeliver",
            "redeliverWebhook",
            "Deliver a webhook's dead letters again",
            redeliver,
            "patch",
            request_model=RedeliverRequest,
            request_optional=True,
            response_model=Redelivery,
            responses={202: "The dead letters are pending again (their event ids)"},
            description="Needs patch on the webhook. Dead letters are deliveries given up "
            "after DOCKYARD_WEBHOOK_DEAD_LETTER_AFTER; they are delivered again, with a fresh "
            "dead-letter clock. An empty list: there were none (or none of eventId).",
        )
    )
