"""The audit trail: who did what to which object, and how it ended, kept in Postgres.

This module owns the ``audit_events`` table (created by migration 0001, append-only by
trigger) and everything that reads or writes it:

- ``AuditLog``, the repository: one INSERT per event, keyset-paged listing, retention;
- ``audit_trail``, the middleware that records every mutating request and every
  request denied with 401 or 403;
- ``spec_diff``, the change map that handlers of updates put in ``request[keys.AUDIT]``;
- ``retention``, the ``cleanup_ctx`` task that purges rows past the retention period.

Outcomes, one per row:

- ``succeeded``: the request was answered with a status below 400;
- ``denied``: it was refused with 401 (no valid token) or 403 (RBAC said no), whether by
  our own TokenReview/SubjectAccessReview or by the kube-apiserver for a write made as
  the caller;
- ``failed``: it was not refused but did not succeed: any other status of 400 or more,
  or an unexpected error (then ``status_code`` is null; the client got 500 or 503), or
  a cancellation before the caller was authenticated;
- ``allowed``: an authenticated request that never got an answer because it was
  cancelled (server stopping, client gone); the change may or may not have been
  applied, so whoever reads the trail should look at the object itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from dockyard.api import errors, keys, middlewares, transport
from dockyard.api.auth import Principal
from dockyard.api.openapi import Operation
from dockyard.core import logs
from dockyard.core.kube import KubeError

logger = logging.getLogger(__name__)

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DENIED_STATUSES = frozenset({401, 403})
ANONYMOUS = "system:anonymous"

PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 200
# A cursor is a base64 of a timestamp and an id; anything much longer was not ours.
CURSOR_MAX_LENGTH = 200

# The write happens after the handler answered: a slow or unreachable database must
# delay that answer by a bounded time only (the failure is then logged, not hidden).
WRITE_TIMEOUT_SECONDS = 5.0

RETENTION_FIRST_DELAY_SECONDS = 60.0
RETENTION_INTERVAL_SECONDS = 3600.0
# Rows deleted per statement: short transactions, so a first purge of months of rows
# neither holds locks for long nor builds one huge WAL burst.
PURGE_BATCH_SIZE = 10_000
# Session advisory lock held while purging, so one API replica purges at a time
# ("dy-audit" in ASCII; the migration runner uses "dockyard").
RETENTION_LOCK_KEY = int.from_bytes(b"dy-audit", "big")

# Keys whose values never enter a diff in clear (compared with "-" and "_" removed).
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|apikey|privatekey|credentials?)$", re.I)
REDACTED = "[redacted]"


class Outcome(StrEnum):
    """How a recorded request ended; see the module docstring for each meaning."""

    SUCCEEDED = "succeeded"
    DENIED = "denied"
    FAILED = "failed"
    ALLOWED = "allowed"


def outcome_of(status: int | None) -> Outcome:
    """The outcome of a request that was answered (or raised) with ``status``."""
    if status is None:
        return Outcome.FAILED
    if status in DENIED_STATUSES:
        return Outcome.DENIED
    return Outcome.SUCCEEDED if status < 400 else Outcome.FAILED


def is_audited(method: str, status: int | None) -> bool:
    """Mutating requests are always recorded; other methods only when denied."""
    return method.upper() in MUTATING_METHODS or status in DENIED_STATUSES


# -- the rows ------------------------------------------------------------------------------


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


class InvalidCursor(ValueError):
    """A cursor that this API did not hand out (or that was altered)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended: the (occurred_at, id) of its last row, opaque to clients."""

    occurred_at: datetime
    id: int

    def encode(self) -> str:
        raw = json.dumps([self.occurred_at.isoformat(), self.id], separators=(",", ":"))
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> Cursor:
        if not token or len(token) > CURSOR_MAX_LENGTH:
            raise InvalidCursor("not a cursor returned by this API")
        try:
            raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
            when, ident = json.loads(raw)
            occurred_at = datetime.fromisoformat(when)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidCursor("not a cursor returned by this API") from None
        # bool is an int to Python; a cursor never holds one.
        if occurred_at.tzinfo is None or type(ident) is not int or ident < 1:
            raise InvalidCursor("not a cursor returned by this API")
        return cls(occurred_at=occurred_at, id=ident)


# -- the repository ------------------------------------------------------------------------

# Every statement the repository runs, in one place. Listing filters are fragments
# joined with AND, so each combination is a plain indexable query (the statement cache
# keeps each one prepared) rather than one catch-all with "$n IS NULL OR ...".
_COLUMNS = (
    "id, occurred_at, actor, groups, action, resource, namespace, name, outcome, "
    "status_code, request_id, trace_id, source_ip, diff"
)
_SQL_INSERT = """
INSERT INTO audit_events (
    occurred_at, actor, groups, action, resource, namespace, name, outcome,
    status_code, request_id, trace_id, source_ip, diff
) VALUES (COALESCE($1::timestamptz, now()), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
RETURNING id
"""
# Built from constants only: filters come from _SQL_FILTERS with $n placeholders, and
# the limit is a validated int.
_SQL_PAGE = (
    "SELECT "  # nosec B608
    + _COLUMNS
    + " FROM audit_events{where} ORDER BY occurred_at DESC, id DESC LIMIT {limit}"
)
_SQL_FILTERS = {
    "actor": "actor = {}",
    "resource": "resource = {}",
    "namespace": "namespace = {}",
    "name": "name = {}",
    "since": "occurred_at >= {}",
    "until": "occurred_at <= {}",
}
_SQL_AFTER_CURSOR = "(occurred_at, id) < ({}, {})"
_SQL_TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
_SQL_UNLOCK = "SELECT pg_advisory_unlock($1)"
_SQL_CUTOFF = "SELECT now() - make_interval(days => $1)"
# The runtime role may not DELETE audit rows: the owner's function does, and only rows
# older than the shortest retention (migration 0003).
_SQL_PURGE_BATCH = "SELECT audit_purge_before($1, $2)"


def page_query(
    *, filters: Mapping[str, object], cursor: Cursor | None, limit: int
) -> tuple[str, list[object]]:
    """The SELECT of one page and its arguments; filters whose value is None are left out."""
    conditions: list[str] = []
    args: list[object] = []
    for field, value in filters.items():
        if value is not None:
            args.append(value)
            conditions.append(_SQL_FILTERS[field].format(f"${len(args)}"))
    if cursor is not None:
        args.extend((cursor.occurred_at, cursor.id))
        conditions.append(_SQL_AFTER_CURSOR.format(f"${len(args) - 1}", f"${len(args)}"))
    args.append(limit)
    where = " WHERE " + " AND ".join(conditions) if conditions else ""
    return _SQL_PAGE.format(where=where, limit=f"${len(args)}"), args


class AuditLog:
    """The ``audit_events`` table, over a pool from ``dockyard.core.db`` (jsonb codec set)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def record(
        self,
        *,
        actor: str,
        action: str,
        resource: str,
        outcome: Outcome,
        groups: Sequence[str] = (),
        namespace: str | None = None,
        name: str | None = None,
        status_code: int | None = None,
        request_id: str | None = None,
        trace_id: str | None = None,
        source_ip: str | None = None,
        diff: Mapping[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> int:
        """Append one event (one INSERT, one round trip); returns its id.

        ``occurred_at`` defaults to the database's clock; it is given only when
        importing events or in tests and benchmarks.
        """
        ident: int = await self.pool.fetchval(
            _SQL_INSERT,
            occurred_at,
            actor,
            list(groups),
            action,
            resource,
            namespace,
            name,
            outcome.value,
            status_code,
            request_id,
            trace_id,
            source_ip,
            dict(diff) if diff is not None else None,
        )
        return ident

    async def list(
        self,
        *,
        actor: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = PAGE_SIZE_DEFAULT,
        cursor: str | None = None,
    ) -> AuditEventList:
        """A page of events, newest first, after ``cursor`` (a previous page's nextCursor).

        ``since`` and ``until`` are inclusive. Raises ``InvalidCursor`` for a cursor this
        API did not hand out and ``ValueError`` for a limit outside 1..200.
        """
        if not 1 <= limit <= PAGE_SIZE_MAX:
            raise ValueError(f"limit must be between 1 and {PAGE_SIZE_MAX}")
        after = Cursor.decode(cursor) if cursor is not None else None
        filters = {
            "actor": actor,
            "resource": resource,
            "namespace": namespace,
            "name": name,
            "since": since,
            "until": until,
        }
        # One row more than asked says whether a next page exists, without a count.
        sql, args = page_query(filters=filters, cursor=after, limit=limit + 1)
        rows = await self.pool.fetch(sql, *args)
        items = [AuditEvent.from_row(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = Cursor(occurred_at=last.occurred_at, id=last.id).encode()
        return AuditEventList(items=items, next_cursor=next_cursor)

    async def purge_older_than(
        self, *, days: int, batch_size: int = PURGE_BATCH_SIZE
    ) -> int | None:
        """Delete events older than ``days`` days; the number deleted.

        ``None`` means another process (an API replica) holds the purge lock and is
        purging now, so this one did nothing.
        """
        if days < 1 or batch_size < 1:
            raise ValueError("days and batch_size must be at least 1")
        async with self.pool.acquire() as conn:
            if not await conn.fetchval(_SQL_TRY_LOCK, RETENTION_LOCK_KEY):
                return None
            try:
                # One cutoff for every batch, so the purge ends even while rows arrive.
                cutoff = await conn.fetchval(_SQL_CUTOFF, days)
                deleted = 0
                while True:
                    batch = int(await conn.fetchval(_SQL_PURGE_BATCH, cutoff, batch_size))
                    deleted += batch
                    if batch < batch_size:
                        return deleted
            finally:
                # Should this fail, the pool's reset on release unlocks all the same.
                await conn.execute(_SQL_UNLOCK, RETENTION_LOCK_KEY)


# -- diffs of updates ----------------------------------------------------------------------


def spec_diff(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """What changed between two JSON objects, as ``{json-pointer: {"from": a, "to": b}}``.

    Objects are compared field by field; lists and scalars as whole values, as JSON
    merge patch (the API's update format) replaces lists whole. A field only in
    ``after`` has no ``from``, one only in ``before`` no ``to``, so a removal is not
    mistaken for a change to null. Paths are RFC 6901 pointers (``~`` and ``/`` in keys
    escaped). Values under secret-looking keys (password, token, ...) are redacted.
    """
    changes: dict[str, dict[str, Any]] = {}
    _compare("", before or {}, after or {}, changes, secret=False)
    return changes


def _compare(
    path: str, before: Any, after: Any, out: dict[str, dict[str, Any]], *, secret: bool
) -> None:
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        for key in sorted(set(before) | set(after), key=str):
            child = f"{path}/{_pointer_token(str(key))}"
            hidden = secret or _is_secret_key(str(key))
            if key not in after:
                out[child] = {"from": _redact(before[key], hidden)}
            elif key not in before:
                out[child] = {"to": _redact(after[key], hidden)}
            else:
                _compare(child, before[key], after[key], out, secret=hidden)
        return
    # True == 1 to Python, not to JSON.
    if isinstance(before, bool) != isinstance(after, bool) or before != after:
        out[path or "/"] = {"from": _redact(before, secret), "to": _redact(after, secret)}


def _pointer_token(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key.replace("-", "").replace("_", "")))


def _redact(value: Any, secret: bool) -> Any:
    if secret:
        return REDACTED
    if isinstance(value, Mapping):
        return {k: _redact(v, _is_secret_key(str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, False) for v in value]
    return value


# -- the middleware ------------------------------------------------------------------------


def action_of(method: str, template: str, operation: Operation | None) -> str:
    """``METHOD /route/{template}``, then ``op=<operationId>`` and ``verb=<verb>`` if known."""
    action = f"{method.upper()} {template}"
    if operation is not None:
        action += f" op={operation.operation_id}"
        if operation.permission is not None:
            action += f" verb={operation.permission.verb}"
    return action


def _status_of(exc: BaseException) -> int | None:
    """The status the problems middleware will answer for ``exc``, where it is certain."""
    if isinstance(exc, errors.Problem | web.HTTPException):
        return exc.status
    if isinstance(exc, ValidationError):
        return 422
    if isinstance(exc, KubeError):
        return middlewares.from_kube_error(exc).status
    return None  # unexpected: answered as 500, or 503 for a dependency that is down


@web.middleware
async def audit_trail(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record mutating and denied requests; sits just outside authentication.

    Errors pass through unchanged (recorded, then re-raised) so the problems middleware
    still renders them.
    """
    try:
        response = await handler(request)
    except asyncio.CancelledError:
        if is_audited(request.method, None):
            principal = request.get(keys.PRINCIPAL)
            outcome = Outcome.ALLOWED if principal is not None else Outcome.FAILED
            # The task is being cancelled: shield the write so the trail still gets it.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(_write(request, status=None, outcome=outcome))
        raise
    except Exception as exc:
        status = _status_of(exc)
        if is_audited(request.method, status):
            await _write(request, status=status, outcome=outcome_of(status))
        raise
    if is_audited(request.method, response.status):
        await _write(request, status=response.status, outcome=outcome_of(response.status))
    return response


async def _write(request: web.Request, *, status: int | None, outcome: Outcome) -> None:
    principal: Principal | None = request.get(keys.PRINCIPAL)
    operation: Operation | None = request.get(keys.OPERATION) or request.app[keys.OPERATIONS].get(
        request.match_info.route.name or ""
    )
    route = request.match_info.route.resource
    # No route matched: the raw path is all there is, bounded since the client chose it.
    template = route.canonical if route is not None else request.path[:256]
    permission = operation.permission if operation is not None else None
    actor = principal.user if principal is not None else ANONYMOUS
    action = action_of(request.method, template, operation)
    request_id: str | None = request.get(keys.REQUEST_ID)
    settings = request.app[keys.SETTINGS]
    try:
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await AuditLog(request.app[keys.DB_POOL]).record(
                actor=actor,
                groups=principal.groups if principal is not None else (),
                action=action,
                resource=permission.resource if permission is not None else "",
                namespace=request.match_info.get("namespace"),
                name=request.match_info.get("name"),
                outcome=outcome,
                status_code=status,
                request_id=request_id,
                trace_id=logs.trace_id_var.get(),
                source_ip=_source_ip(request, settings.trusted_proxies),
                diff=request.get(keys.AUDIT),
            )
    except Exception as exc:
        # The client's request is already done and must keep its answer; a lost audit
        # row is an operational fault that must be seen and counted, hence the error
        # line with a stable name that log-based metrics can count.
        logger.error(
            "audit.write_failed",
            exc_info=True,
            extra={
                "event": "audit.write_failed",
                "request_id": request_id,
                "actor": actor,
                "audit_action": action,
                "outcome": outcome.value,
                "status_code": status,
                "error": type(exc).__name__,
            },
        )


def _source_ip(request: web.Request, trusted_proxies: transport.Networks) -> str | None:
    # The column is inet: a peer that is no IP address (a unix socket) is recorded as none.
    address = transport.client_ip(request, trusted_proxies)
    ip = transport.parse_ip(address) if address else None
    return str(ip) if ip is not None else None


# -- retention -----------------------------------------------------------------------------


async def run_retention(log: AuditLog, *, days: int, first_delay: float, interval: float) -> None:
    """Purge events older than ``days`` after ``first_delay`` seconds, then every ``interval``.

    Runs until cancelled. A failed purge is logged as an error and retried at the next
    interval: retention is periodic by nature, and one bad hour must not end it.
    """
    await asyncio.sleep(first_delay)
    while True:
        try:
            deleted = await log.purge_older_than(days=days)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            logger.error(
                "audit.retention_failed",
                exc_info=True,
                extra={"event": "audit.retention_failed", "error": type(exc).__name__},
            )
        else:
            if deleted is None:
                logger.info("audit retention skipped: another replica holds the purge lock")
            else:
                logger.info(
                    "audit retention purged old events",
                    extra={"event": "audit.purged", "deleted": deleted, "retention_days": days},
                )
        await asyncio.sleep(interval)


async def retention(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: the retention task, started with the app and cancelled at shutdown.

    Must come after the database context, whose pool it uses (and which, being
    cleaned up in reverse order, closes only after this task has stopped).
    """
    task = asyncio.create_task(
        run_retention(
            AuditLog(app[keys.DB_POOL]),
            days=app[keys.SETTINGS].audit_retention_days,
            first_delay=RETENTION_FIRST_DELAY_SECONDS,
            interval=RETENTION_INTERVAL_SECONDS,
        ),
        name="dockyard-audit-retention",
    )
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
