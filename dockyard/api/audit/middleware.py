"""``audit_trail``: the middleware that records every mutating request, every request
denied with 401 or 403, and the allowed reads ``DOCKYARD_AUDIT_READS`` asks for (by
default the sensitive ones, ``Operation.sensitive``), with its outcome (``Outcome``,
explained in the package's docstring), in the audit trail.

It sits just outside authentication, so it sees the principal when there is one and
the refusal when there is none; the row is written after the handler answered, within
``WRITE_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from dockyard.api import errors, keys, middlewares, transport
from dockyard.api.audit.events import Outcome
from dockyard.api.audit.repository import AuditLog
from dockyard.api.auth import Principal
from dockyard.api.openapi import Operation
from dockyard.core import logs
from dockyard.core.kube import KubeError

logger = logging.getLogger(__name__)

MUTATING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READ_METHODS = frozenset({"GET"})  # routes are GET only: aiohttp answers HEAD 405
DENIED_STATUSES = frozenset({401, 403})
ANONYMOUS = "system:anonymous"

# The write happens after the handler answered: a slow or unreachable database must
# delay that answer by a bounded time only (the failure is then logged, not hidden).
WRITE_TIMEOUT_SECONDS = 5.0


def outcome_of(status: int | None) -> Outcome:
    """The outcome of a request that was answered (or raised) with ``status``."""
    if status is None:
        return Outcome.FAILED
    if status in DENIED_STATUSES:
        return Outcome.DENIED
    return Outcome.SUCCEEDED if status < 400 else Outcome.FAILED


def is_audited(
    method: str, status: int | None, operation: Operation | None = None, reads: str = "none"
) -> bool:
    """Mutating requests are always recorded, and any request denied. A read (``GET``)
    of ``operation`` is recorded as ``reads`` says: ``sensitive`` ones, ``all``
    that need a token (not probes, nor the OpenAPI document), or ``none``."""
    if method.upper() in MUTATING_METHODS or status in DENIED_STATUSES:
        return True
    if method.upper() not in READ_METHODS or operation is None or not operation.audited:
        return False
    if reads == "all":
        return operation.authenticated
    return reads == "sensitive" and operation.sensitive


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

    A mutating request first makes sure the trail can be written: with PostgreSQL down,
    hung or its breaker open, it is refused with 503 (``DependencyUnavailable``) before
    anything changes, rather than changing the cluster unaudited.
    """
    if request.method.upper() in MUTATING_METHODS:
        await _trail_is_writable(request)
    reads = request.app[keys.SETTINGS].audit_reads

    def audited(status: int | None) -> bool:
        return is_audited(request.method, status, _operation(request), reads)

    try:
        response = await handler(request)
    except asyncio.CancelledError:
        if audited(None):
            principal = request.get(keys.PRINCIPAL)
            outcome = Outcome.ALLOWED if principal is not None else Outcome.FAILED
            # The task is being cancelled: shield the write so the trail still gets it.
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(_write(request, status=None, outcome=outcome))
        raise
    except Exception as exc:
        status = _status_of(exc)
        if audited(status):
            await _write(request, status=status, outcome=outcome_of(status))
        raise
    if audited(response.status):
        await _write(request, status=response.status, outcome=outcome_of(response.status))
    return response


async def _trail_is_writable(request: web.Request) -> None:
    """One round trip through the pool, within the database's deadlines (and breaker).

    PostgreSQL can still fail between this and the row's write; that rare loss is
    logged as ``audit.write_failed``.
    """
    await request.app[keys.DB_POOL].fetchval("SELECT 1")


def _operation(request: web.Request) -> Operation | None:
    """The operation the request was routed to, if any."""
    found: Operation | None = request.get(keys.OPERATION) or request.app[keys.OPERATIONS].get(
        request.match_info.route.name or ""
    )
    return found


async def _write(request: web.Request, *, status: int | None, outcome: Outcome) -> None:
    principal: Principal | None = request.get(keys.PRINCIPAL)
    operation = _operation(request)
    if operation is not None and not operation.audited and outcome is not Outcome.DENIED:
        return  # it writes audit rows of its own (the apiserver's reports)
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
                name=request.match_info.get("name") or request.get(keys.AUDIT_NAME),
                outcome=outcome,
                status_code=status,
                request_id=request_id,
                trace_id=logs.trace_id_var.get(),
                source_ip=_source_ip(request, settings.trusted_proxies),
                diff=request.get(keys.AUDIT),
                # Announced only by a request that succeeded, with its row.
                events=request.get(keys.EVENTS, ()) if outcome is Outcome.SUCCEEDED else (),
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
