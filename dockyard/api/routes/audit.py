"""``GET /api/v1/audit-events``: the audit trail, for admins, newest first, page by page.

Who may read it is RBAC's call: the operation needs ``list`` on ``auditevents`` in the
``dockyard.io`` group, which only the admin ClusterRole grants.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from multidict import MultiMapping
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic import ValidationError as PydanticValidationError

from dockyard.api import errors, keys
from dockyard.api.audit.events import CURSOR_MAX_LENGTH, AuditEventList, Cursor, InvalidCursor
from dockyard.api.audit.repository import PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX, AuditLog
from dockyard.api.auth import Permission
from dockyard.api.openapi import Operation, OperationRegistry
from dockyard.api.routes.pages import page_cursor, page_size, query_parameters
from dockyard.core.audit_rows import Source

# A query string turns an unencoded "+" into a space: "...T10:00:00 02:00" is what a
# caller typed as "+02:00", so the offset's sign is put back before parsing.
_SPACE_BEFORE_OFFSET = re.compile(r"^(.*\d) (\d{2}(?::?\d{2})?)$")
_NUMERIC = re.compile(r"^[+-]?\d+(\.\d+)?$")


class AuditQuery(BaseModel):
    """The query parameters of ``GET /api/v1/audit-events``; unknown ones are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    actor: str | None = Field(
        default=None, min_length=1, max_length=256, description="only this user's events"
    )
    resource: str | None = Field(
        default=None,
        min_length=1,
        max_length=63,
        description="only events on this plural resource, e.g. environments",
    )
    namespace: str | None = Field(
        default=None, min_length=1, max_length=63, description="only events in this namespace"
    )
    name: str | None = Field(
        default=None, min_length=1, max_length=253, description="only events on this object"
    )
    source: Source | None = Field(
        default=None,
        description="only events that came through this door: rest, kubectl or operator",
    )
    since: AwareDatetime | None = Field(
        default=None,
        description="only events at or after this instant (ISO 8601 with offset, e.g. "
        "2025-01-31T00:00:00Z)",
    )
    until: AwareDatetime | None = Field(
        default=None, description="only events at or before this instant (ISO 8601 with offset)"
    )
    limit: int = page_size(PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX)
    cursor: str | None = page_cursor(CURSOR_MAX_LENGTH)

    @field_validator("since", "until", mode="before")
    @classmethod
    def _iso_8601(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        # Pydantic would read digits as a Unix time; the contract is ISO 8601 only.
        if _NUMERIC.match(value):
            raise ValueError(
                "expected an ISO 8601 date-time with offset, e.g. 2025-01-31T00:00:00Z"
            )
        return _SPACE_BEFORE_OFFSET.sub(r"\1+\2", value)

    @field_validator("since", "until")
    @classmethod
    def _in_utc_range(cls, value: datetime | None) -> datetime | None:
        # PostgreSQL compares in UTC: year 1 with a positive offset (or 9999 with a
        # negative one) has no UTC instant Python can send it, and would be a 500.
        if value is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError("out of range once converted to UTC") from None
        return value

    @field_validator("actor", "resource", "namespace", "name")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        # PostgreSQL's text cannot hold NUL: the query would fail there, a 500.
        if value is not None and "\x00" in value:
            raise ValueError("must not contain a NUL character (%00)")
        return value

    @field_validator("until")
    @classmethod
    def _not_before_since(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        since = info.data.get("since")
        if value is not None and since is not None and value < since:
            raise ValueError("must not be before since")
        return value

    @field_validator("cursor")
    @classmethod
    def _known_cursor(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                Cursor.decode(value)
            except InvalidCursor:
                raise ValueError(
                    "not a cursor returned by this API; start again without it"
                ) from None
        return value


def parse_query(query: MultiMapping[str]) -> AuditQuery:
    """Validate the query string; 422 with the parameter names as field paths."""
    repeated = sorted({key for key in query if len(query.getall(key)) > 1})
    if repeated:
        raise errors.validation_failed(
            [errors.FieldError(field=key, message="given more than once") for key in repeated]
        )
    try:
        return AuditQuery.model_validate(dict(query))
    except PydanticValidationError as exc:
        raise errors.from_validation_error(exc) from None


async def list_audit_events(request: web.Request) -> web.Response:
    query = parse_query(request.query)
    # The query's fields are the listing's filters, limit and cursor, by the same names.
    page = await AuditLog(request.app[keys.DB_POOL]).list(**query.model_dump())
    return web.json_response(page.model_dump(mode="json"))


def register(registry: OperationRegistry) -> None:
    registry.add(
        Operation(
            "GET",
            "/api/v1/audit-events",
            "listAuditEvents",
            "List audit events, newest first",
            "audit",
            list_audit_events,
            response_model=AuditEventList,
            permission=Permission(verb="list", resource="auditevents"),
            sensitive=True,  # who watched the watchers
            responses={
                401: "No valid bearer token",
                403: "The caller may not list auditevents (admins only)",
                422: "An unknown, repeated or invalid query parameter",
            },
            description="Every mutating request, every request denied with 401 or 403 and "
            "the sensitive reads (this one included) are recorded (see docs/audit.md). "
            "Pages are keyset-paginated: pass a page's nextCursor as ?cursor= with the same "
            "filters for the next one.",
            parameters=query_parameters(AuditQuery),
        )
    )
