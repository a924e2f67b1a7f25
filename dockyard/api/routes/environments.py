"""Environments over REST: the same objects kubectl sees, read from the watch cache and
written to the apiserver as the caller.

The contract of every kind (``kinds.KindRoutes``): ``ETag`` is the resourceVersion and
``If-Match`` a precondition the apiserver enforces (412), POST honours
``Idempotency-Key``, and errors from pydantic and from the apiserver (CEL messages
included) come out as one problem+json with field paths. On top of it:

- lists are paged by namespace and name (``limit``, ``cursor``) and filtered by
  ``labelSelector``, ``tier`` and ``phase``;
- ``GET /api/v1/environments`` lists every namespace the caller may list, checking
  namespaces a bounded number at a time (``fanout``): when it left some unchecked, the
  page stops at the last one checked and ``nextCursor`` goes on from there;
- a delete answers 202 with the object, which lives on while its finalizer runs the
  deletion policy (foreground propagation);
- ``GET /api/v1/events`` streams the changes the caller may watch (``events``).
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from dockyard.api import fanout, keys
from dockyard.api.auth import Permission
from dockyard.api.openapi import Operation, OperationRegistry, replace
from dockyard.api.paths import DNS_LABEL
from dockyard.api.routes.contract import COMMON_RESPONSES
from dockyard.api.routes.events import stream_events
from dockyard.api.routes.kinds import KindRoutes
from dockyard.api.routes.models import NewObjectMeta, create_body, list_body, name_field
from dockyard.api.routes.objects import public
from dockyard.api.routes.pages import (
    LabelSelector,
    Predicate,
    label_filter,
    page,
    page_cursor,
    page_size,
    parse_query,
    query_parameters,
)
from dockyard.core.models.environment import ENVIRONMENT_NAME, Environment

# Sorts after every object name (DNS subdomains use [a-z0-9.-]): "past this namespace".
_PAST_NAMESPACE = "~"


class ObjectMetaInput(NewObjectMeta):
    """The metadata a client may set on a new environment."""

    # The published pattern is still API 1.x's DNS-1123 label (narrowing it breaks the
    # contract); the first letter is refused below, as the CRD refuses it, with the reason.
    name: str = name_field(
        "DNS-1035 label (a DNS-1123 label beginning with a letter), unique in the namespace",
        max_length=ENVIRONMENT_NAME.max_length,
        pattern=DNS_LABEL.pattern,
    )

    @field_validator("name")
    @classmethod
    def _a_service_name(cls, name: str) -> str:
        if re.fullmatch(ENVIRONMENT_NAME.pattern, name) is None:
            raise ValueError(ENVIRONMENT_NAME.requirement)
        return name


EnvironmentCreate = create_body(
    Environment,
    ObjectMetaInput,
    doc="The body of ``POST .../environments``.",
    spec="the desired environment",
)
EnvironmentList = list_body(
    Environment,
    doc="A page of environments, ordered by namespace and name.",
    items="the environments on this page",
)


class ListQuery(BaseModel):
    """Query parameters of the environment lists."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    limit: int = page_size(50, 500)
    cursor: str | None = page_cursor(512)
    label_selector: LabelSelector = None
    tier: str | None = Field(
        default=None, pattern="^(development|staging|production)$", description="only this tier"
    )
    phase: str | None = Field(default=None, max_length=32, description="only this phase")

    def predicates(self) -> list[Predicate]:
        predicates: list[Predicate] = []
        if self.label_selector:
            predicates.append(label_filter(self.label_selector))
        if self.tier:
            predicates.append(lambda o: o.get("spec", {}).get("tier") == self.tier)
        if self.phase:
            predicates.append(lambda o: (o.get("status") or {}).get("phase") == self.phase)
        return predicates

    def after(self, request: web.Request) -> tuple[str, str] | None:
        """The (namespace, name) the cursor says the previous page ended at.

        Cursors are sealed (``cursors.Sealer``): the all-namespaces list's may name a
        namespace its caller cannot read, the last one it checked.
        """
        if not self.cursor:
            return None
        return request.app[keys.CURSORS].open(self.cursor, _position)


def _position(value: Any) -> tuple[str, str]:
    namespace, name = value
    return str(namespace), str(name)


class EnvironmentRoutes(KindRoutes):
    """``KindRoutes`` with paged lists, the all-namespaces list, 202 deletes and events."""

    async def list_namespaced(self, request: web.Request) -> web.Response:
        return await self._page(
            request, fanout.Readable(frozenset({request.match_info["namespace"]}))
        )

    async def list_all(self, request: web.Request) -> web.Response:
        cache = await self.synced(request)
        after = parse_query(request, ListQuery).after(request)
        # Namespaces a page after the cursor could hold: none before its own, nor its own
        # once the cursor is past it.
        candidates = [
            ns for ns in cache.namespaces() if after is None or (ns, _PAST_NAMESPACE) > after
        ]
        readable = await fanout.readable_namespaces(
            request, Permission("list", self.plural), candidates
        )
        return await self._page(request, readable)

    async def _page(self, request: web.Request, readable: fanout.Readable) -> web.Response:
        """A page of the environments in ``readable``; when it left namespaces unchecked,
        the list stops at the last one checked and ``nextCursor`` goes on from there."""
        query = parse_query(request, ListQuery)
        cache = await self.synced(request)
        predicates = query.predicates()
        after = query.after(request)
        through = readable.checked_through
        matched = cache.list(
            namespaces=set(readable.namespaces) if readable.namespaces is not None else None,
            predicate=lambda o: (
                all(p(o) for p in predicates)
                and (after is None or (o["metadata"]["namespace"], o["metadata"]["name"]) > after)
                and (through is None or o["metadata"]["namespace"] <= through)
            ),
        )
        shown = matched[: query.limit]
        sealer = request.app[keys.CURSORS]
        next_cursor = None
        if len(matched) > query.limit:
            last = shown[-1]["metadata"]
            next_cursor = sealer.seal([last["namespace"], last["name"]])
        elif through is not None:
            next_cursor = sealer.seal([through, _PAST_NAMESPACE])
        return page(shown, next_cursor, cache.resource_version)

    async def delete(self, request: web.Request) -> web.Response:
        # In the background: the children go once the Environment has, after its finalizer
        # applied the deletion policy. (In the foreground they would go first, the database
        # Secret with them, and a Snapshot policy's final Backup could not log in.)
        result = await self._delete(request, propagationPolicy="Background")
        # The object lives on while its finalizer runs the deletion policy: 202 says so.
        return web.json_response(
            public(result) if result.get("kind") == self.kind else result, status=202
        )

    def operations(self) -> list[Operation]:
        every_namespace = Operation(
            "GET",
            "/api/v1/environments",
            "listEnvironments",
            "Environments in every namespace the caller may list",
            self.plural,
            self.list_all,
            response_model=self.list_model,
            responses=COMMON_RESPONSES,
            access="any authenticated user; it lists the namespaces where they may list "
            "environments",
            description="Filters: labelSelector, tier, phase; cursor pagination.",
            parameters=query_parameters(ListQuery),
        )
        operations = replace(
            super().operations(),
            self.list_namespaced,
            description="",
            parameters=query_parameters(ListQuery),
        )
        operations = replace(
            operations,
            self.delete,
            responses={
                **COMMON_RESPONSES,
                202: "Deletion started",
                404: "No such environment",
                412: "If-Match does not match",
            },
        )
        events = Operation(
            "GET",
            "/api/v1/events",
            "streamEvents",
            "Server-sent events: Dockyard events of every kind, and environment changes",
            "events",
            stream_events,
            access="any authenticated user; it shows each event only if they may watch its "
            "kind in its namespace",
            responses={
                401: "No valid bearer token",
                403: "Not allowed to watch environments in ?namespace=",
                422: "Last-Event-ID (or ?lastEventId=) is not an id from this stream",
                429: "Rate limited (a RateLimitPolicy), or the caller already holds "
                "DOCKYARD_STREAMS_PER_USER open streams on this replica; see Retry-After",
            },
            description="text/event-stream. Dockyard events (event: backup.completed, "
            "restore.approved, ...; data: the body of specs/events/<type>.json) come from "
            "the durable event log with id: <seq>; reconnect with Last-Event-ID to get every "
            "event after it. Live environment changes (event: ADDED, MODIFIED, DELETED; data: "
            "{type, object}) carry no id and are not replayed. Each event is shown only if "
            "the caller may watch its kind in its namespace; ?namespace= narrows it. The "
            "stream re-checks the caller's token and permission periodically and, once "
            "either is gone, or the client falls too far behind, ends with an 'error' event "
            "whose data is a problem document. A replay of the log asks about at most "
            "DOCKYARD_STREAM_REVIEWS new (kind, namespace) pairs per re-check interval, "
            "then waits for the next: later events come later, none is lost.",
            parameters=(
                {
                    "name": "namespace",
                    "in": "query",
                    "required": False,
                    "description": "only this namespace's events",
                    "schema": DNS_LABEL.schema(),
                },
                {
                    "name": "lastEventId",
                    "in": "query",
                    "required": False,
                    "description": "resume after this event id (for clients that cannot "
                    "set the Last-Event-ID header)",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                },
                {
                    "name": "Last-Event-ID",
                    "in": "header",
                    "required": False,
                    "description": "resume after this event id",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
                },
            ),
        )
        return [every_namespace, *operations, events]


ROUTES = EnvironmentRoutes(Environment, EnvironmentCreate, EnvironmentList, keys.ENVIRONMENT_CACHE)


def register(registry: OperationRegistry) -> None:
    ROUTES.register(registry)
