"""What the audit trail holds: one row (``AuditEvent``), a page of rows, and where a
page ended (``Cursor``). The outcomes are explained in the package's docstring."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from dockyard.api import cursors
from dockyard.api.cursors import InvalidCursor

# A cursor is a base64 of a timestamp and an id; anything much longer was not ours.
CURSOR_MAX_LENGTH = 200


class Outcome(StrEnum):
    """How a recorded request ended; see the module docstring for each meaning."""

    # The docstring is published in the OpenAPI document as it is: "the module" is the
    # package, dockyard.api.audit.

    SUCCEEDED = "succeeded"
    DENIED = "denied"
    FAILED = "failed"
    ALLOWED = "allowed"


class AuditEvent(BaseModel):
    """One row of the audit trail."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True, frozen=True
    )

    id: int = Field(description="increasing with insertion; ties on occurredAt are ordered by it")
    occurred_at: datetime = Field(description="when the request was answered (RFC 3339)")
    actor: str = Field(description="the caller's user name, or system:anonymous")
    groups: list[str] = Field(description="the caller's groups when authenticated")
    action: str = Field(
        description="method and route template, then op=<operationId> and verb=<RBAC verb> "
        "when known, e.g. 'GET /api/v1/audit-events op=listAuditEvents verb=list'"
    )
    resource: str = Field(description="plural resource (dockyard.io), empty when unknown")
    namespace: str | None = Field(description="the object's namespace, if any")
    name: str | None = Field(description="the object's name, if any")
    outcome: Outcome = Field(description="succeeded, denied, failed or allowed (unknown end)")
    status_code: int | None = Field(description="the HTTP status answered, if any")
    request_id: str | None = Field(description="the request's X-Request-Id")
    trace_id: str | None = Field(description="the request's trace id, when traced")
    source_ip: str | None = Field(description="the client's address")
    source: str = Field(
        default="rest",
        description="the door: rest (this API), kubectl (any other client, reported by "
        "the apiserver's audit webhook) or operator (the operator's own action)",
    )
    diff: dict[str, Any] | None = Field(
        description="for updates: JSON Pointer path to {from, to}; a key is absent when "
        "the field was absent on that side; secrets redacted"
    )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AuditEvent:
        source_ip = row["source_ip"]
        return cls(
            id=row["id"],
            occurred_at=row["occurred_at"],
            actor=row["actor"],
            groups=list(row["groups"]),
            action=row["action"],
            resource=row["resource"],
            namespace=row["namespace"],
            name=row["name"],
            outcome=Outcome(row["outcome"]),
            status_code=row["status_code"],
            request_id=row["request_id"],
            trace_id=row["trace_id"],
            source_ip=str(source_ip) if source_ip is not None else None,
            diff=row["diff"],
            source=row["source"],
        )


class AuditEventList(BaseModel):
    """A page of audit events, newest first."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True
    )

    items: list[AuditEvent] = Field(description="at most `limit` events, newest first")
    next_cursor: str | None = Field(
        description="pass as ?cursor= for the next page; null on the last page"
    )


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the (occurred_at, id) of its last row, opaque to clients."""

    occurred_at: datetime
    id: int

    def encode(self) -> str:
        return cursors.encode([self.occurred_at.isoformat(), self.id])

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """The cursor ``encode`` made; ``InvalidCursor`` for any other token.

        Its id is a row id, a bigint, and its instant one that exists in UTC too (an
        offset can carry year 1 or 9999 out of Python's range): either would otherwise
        reach PostgreSQL and fail there, a 500 instead of the 422 of a foreign cursor.
        """
        if not token or len(token) > CURSOR_MAX_LENGTH:
            raise InvalidCursor("not a cursor returned by this API")
        try:
            when, ident = cursors.decode(token)
            occurred_at = datetime.fromisoformat(when)
            # bool is an int to Python; a cursor never holds one.
            if occurred_at.tzinfo is None or type(ident) is not int or not 1 <= ident < 2**63:
                raise InvalidCursor("not a cursor returned by this API")
            occurred_at.astimezone(UTC)
        except (ValueError, TypeError, OverflowError):  # InvalidCursor is a ValueError
            raise InvalidCursor("not a cursor returned by this API") from None
        return cls(occurred_at=occurred_at, id=ident)


__all__ = [
    "CURSOR_MAX_LENGTH",
    "AuditEvent",
    "AuditEventList",
    "Cursor",
    "InvalidCursor",
    "Outcome",
]
