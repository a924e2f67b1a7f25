"""``POST /api/v1/audit/kubernetes``: the kube-apiserver's audit webhook backend.

The apiserver (``--audit-webhook-config-file``, see ``manifests/audit/``) posts batches
of ``audit.k8s.io/v1`` events here. Each write to a ``dockyard.io`` object that did not
come through Dockyard itself (this API and the operator with Kopf, which audit their
own) becomes an audit row with source ``kubectl``: the user, the verb, the object and
the response code. A batch sent again is recorded once: each row carries a digest of its
event as sent, which a resent batch repeats. Not the ``auditID`` alone: the apiserver
takes it from the request's ``Audit-ID`` header, so a client chooses it, and two of its
writes sharing one must still make two rows.

Dockyard's own writes are told apart by proof, never by the user agent, which any
client chooses: the API's calls made with a caller's token carry an ``auditID`` only
an API replica can mint (``dockyard.core.audit_ids``), each good for the first event
that carries it (``audit_rows.spend_marks``); its and the operator's calls as
themselves are made by the user names of ``OwnWriters`` (with a Dockyard user agent).
An event the trail cannot hold (too many groups, an over-long name or audit ID) is cut
to fit, and one that is no audit event is skipped, never the whole batch.

The apiserver authenticates with the bearer token ``DOCKYARD_AUDIT_SINK_TOKEN`` (its
webhook kubeconfig holds the same); without the setting the endpoint is off (404).
The apiserver does not send a refused batch again, so the sink must not refuse one for
its size or its rate: once the token is checked, a batch may be up to
``DOCKYARD_AUDIT_SINK_MAX_BYTES`` (32 MiB, not the API's 1 MiB, which any caller could
fill with a long query string in a few audited requests), and the rate limiter lets
the sink's token through (``ratelimit.middleware``). It is
not a user-facing operation: no SubjectAccessReview, and it is kept out of the public
OpenAPI contract's clients (tag ``internal``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError

from dockyard.api import errors, keys
from dockyard.api.auth import AUDIT_SINK_PATH, holds_sink_token
from dockyard.api.bodies import read_json
from dockyard.api.openapi import Operation, OperationRegistry
from dockyard.core import audit_ids, audit_rows
from dockyard.core.audit_rows import AuditRow, Source

logger = logging.getLogger(__name__)

GROUP: Final = "dockyard.io"
WRITES: Final = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# Dockyard's own clients: their writes are audited where they are made.
OWN_AGENTS: Final = ("dockyard", "kopf/")
MAX_BATCH: Final = 1000
Spent = Mapping[str, str]
"""Each mark the sink has seen, and the key of the first event that carried it."""


def _fit(limit: int) -> BeforeValidator:
    """Cut a string or a list to ``limit``: the trail keeps what fits, not nothing."""

    def cut(value: Any) -> Any:
        return value[:limit] if isinstance(value, str | list) else value

    return BeforeValidator(cut)


def _fit_last(limit: int) -> BeforeValidator:
    """Cut a list to its last ``limit`` items: where the last is the one to keep."""

    def cut(value: Any) -> Any:
        return value[-limit:] if isinstance(value, list) else value

    return BeforeValidator(cut)


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ReportedUser(_Loose):
    username: Annotated[str, _fit(256)] = Field(default="unknown", max_length=256)
    groups: Annotated[list[Annotated[str, _fit(256)]], _fit(64)] = Field(
        default_factory=list, max_length=64
    )


class ReportedObject(_Loose):
    api_group: Annotated[str, _fit(253)] = Field(default="", alias="apiGroup", max_length=253)
    resource: Annotated[str, _fit(63)] = Field(default="", max_length=63)
    subresource: Annotated[str | None, _fit(63)] = Field(default=None, max_length=63)
    namespace: Annotated[str | None, _fit(63)] = Field(default=None, max_length=63)
    name: Annotated[str | None, _fit(253)] = Field(default=None, max_length=253)


class ReportedStatus(_Loose):
    code: int | None = Field(default=None, ge=100, le=599)


class ReportedEvent(_Loose):
    """One ``audit.k8s.io/v1`` Event, as much of it as the trail keeps."""

    audit_id: Annotated[str, _fit(64)] = Field(alias="auditID", max_length=64)
    stage: str = Field(max_length=32)
    verb: str = Field(max_length=32)
    user: ReportedUser = Field(default_factory=ReportedUser)
    request_uri: Annotated[str, _fit(4096)] = Field(default="", alias="requestURI", max_length=4096)
    """As much of the URI as holds its path (only the path is read: the query may be long)."""
    user_agent: Annotated[str, _fit(1024)] = Field(default="", alias="userAgent", max_length=1024)
    source_ips: Annotated[list[str], _fit_last(16)] = Field(
        default_factory=list, alias="sourceIPs", max_length=16
    )
    """The apiserver lists the addresses of X-Forwarded-For and X-Real-Ip first, which any
    client sets as it likes, and the peer that connected to it last: the trail keeps that
    one, so a long forged list is cut from its start."""
    object_ref: ReportedObject | None = Field(default=None, alias="objectRef")
    response_status: ReportedStatus | None = Field(default=None, alias="responseStatus")
    request_received_timestamp: datetime | None = Field(
        default=None, alias="requestReceivedTimestamp"
    )
    stage_timestamp: datetime | None = Field(default=None, alias="stageTimestamp")
    _key: str = PrivateAttr(default="")
    _checked: tuple[str, str | None] | None = PrivateAttr(default=None)

    @classmethod
    def parse(cls, item: dict[str, Any]) -> ReportedEvent:
        """The event of ``item``, keyed by a digest of all of ``item``: a batch sent again
        repeats it to the byte, two requests never do (their timestamps, at the least)."""
        event = cls.model_validate(item)
        canonical = json.dumps(item, sort_keys=True, separators=(",", ":"), default=str)
        event._key = hashlib.sha256(canonical.encode()).hexdigest()
        return event

    @property
    def key(self) -> str:
        """The digest of the event as reported: the same for a batch sent again."""
        return self._key

    def is_write(self) -> bool:
        """Whether this is a completed write to a Dockyard object, which the trail keeps."""
        ref = self.object_ref
        return (
            self.stage == "ResponseComplete"
            and ref is not None
            and ref.api_group == GROUP
            and self.verb in WRITES
        )

    def mark(self, secret: str) -> str | None:
        """The API's mark on this call (its audit ID), if it carries a valid one: minted
        for this user, verb and path, at most ``audit_ids.WINDOW`` before it was received."""
        if self._checked is not None and self._checked[0] == secret:
            return self._checked[1]  # checked once per event: the sink asks twice
        call = (self.user.username, self.verb, self.request_uri, self.request_received_timestamp)
        mark = self.audit_id if audit_ids.is_own(secret, self.audit_id, *call) else None
        self._checked = (secret, mark)
        return mark

    def is_dockyards(self, own_writers: frozenset[str], secret: str, spent: Spent) -> bool:
        """Whether Dockyard made this call: the API for a caller (its mark proves it, on
        the first event that carries it: ``spent`` maps each mark to that event's key),
        or the API or the operator as itself (its user, and its user agent)."""
        mark = self.mark(secret)
        if mark is not None and spent.get(mark) == self._key:
            return True
        return self.user.username in own_writers and self.user_agent.startswith(OWN_AGENTS)

    def row(self, own_writers: frozenset[str], secret: str, spent: Spent) -> AuditRow | None:
        """The audit row of a client's write to a Dockyard object, else None (also for
        a write Dockyard made itself, which it audits where it makes it)."""
        ref = self.object_ref
        if ref is None or not self.is_write() or self.is_dockyards(own_writers, secret, spent):
            return None
        resource = ref.resource + (f"/{ref.subresource}" if ref.subresource else "")
        code = self.response_status.code if self.response_status is not None else None
        outcome = "succeeded" if code is not None and code < 400 else "failed"
        if code in (401, 403):
            outcome = "denied"
        agent = self.user_agent.split(" ", 1)[0][:64]
        return AuditRow(
            actor=self.user.username,
            groups=self.user.groups,
            action=f"{self.verb.upper()} {resource} agent={agent}",
            resource=resource,
            namespace=ref.namespace,
            name=ref.name,
            outcome=outcome,
            status_code=code,
            request_id=self.audit_id,
            source_ip=self.source_ips[-1] if self.source_ips else None,
            occurred_at=self.stage_timestamp,
            source=Source.KUBECTL,
            event_key=self._key,
        )


class ReportedBatch(_Loose):
    items: list[ReportedEvent] = Field(default_factory=list, max_length=MAX_BATCH)


class _RawBatch(_Loose):
    """What is parsed: each item on its own, so that one bad event costs only itself."""

    items: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_BATCH)


class Recorded(BaseModel):
    recorded: int = Field(description="rows added (a batch sent again adds none)")
    skipped: int = Field(
        default=0, description="events that are not audit events at all (no auditID, stage or verb)"
    )


def _events(items: list[dict[str, Any]]) -> tuple[list[ReportedEvent], int]:
    events: list[ReportedEvent] = []
    skipped = 0
    for item in items:
        try:
            events.append(ReportedEvent.parse(item))
        except ValidationError as exc:
            skipped += 1
            logger.warning(
                "audit sink: an event was skipped",
                extra={"event": "audit.sink_event_skipped",
                       "fields": sorted({".".join(map(str, e["loc"])) for e in exc.errors()})},
            )  # fmt: skip
    return events, skipped


def _rows(
    events: list[ReportedEvent], own: frozenset[str], secret: str, spent: Spent
) -> tuple[list[AuditRow], int]:
    """The rows of ``events``, and how many could not be made (each costs only itself)."""
    rows: list[AuditRow] = []
    failed = 0
    for event in events:
        try:
            row = event.row(own, secret, spent)
        except Exception:  # a bug, not the batch's fault
            logger.exception("audit sink: an event could not be recorded")
            failed += 1
            continue
        if row is not None:
            rows.append(row)
    return rows, failed


async def ingest(request: web.Request) -> web.Response:
    expected = request.app[keys.SETTINGS].audit_sink_token
    if expected is None:
        raise errors.not_found("The apiserver audit sink is not enabled.")
    if not holds_sink_token(request.headers.get("Authorization"), expected):
        logger.warning("audit sink: a batch with a wrong token was refused")
        raise errors.unauthorized("This endpoint takes the apiserver's audit sink token.")
    try:
        limit = request.app[keys.SETTINGS].audit_sink_max_bytes
        # A write with a NUL was made already: its report is taken (and stored with U+FFFD).
        raw = await read_json(request, max_bytes=limit, nul_allowed=True)
        batch = _RawBatch.model_validate(raw)
    except ValidationError as exc:
        raise errors.from_validation_error(exc, prefix="body") from None
    events, skipped = _events(batch.items)
    own = await request.app[keys.OWN_WRITERS].usernames()
    secret = expected.get_secret_value()
    marks: list[tuple[str, str]] = []
    for event in events:
        with contextlib.suppress(Exception):  # then row() below fails and says so
            if event.is_write() and (mark := event.mark(secret)) is not None:
                marks.append((mark, event.key))
    recorded, pool = 0, request.app[keys.DB_POOL]
    if not marks:  # nothing to spend: the database only if there is something to record
        rows, failed = _rows(events, own, secret, {})
        if rows:
            async with pool.acquire() as conn, conn.transaction():
                recorded = await audit_rows.insert_reported(conn, rows)
    else:
        async with pool.acquire() as conn, conn.transaction():
            rows, failed = _rows(events, own, secret, await audit_rows.spend_marks(conn, marks))
            recorded = await audit_rows.insert_reported(conn, rows)
    skipped += failed
    body: dict[str, Any] = Recorded(recorded=recorded, skipped=skipped).model_dump()
    return web.json_response(body)


def register(registry: OperationRegistry) -> None:
    registry.add(
        Operation(
            "POST",
            AUDIT_SINK_PATH,
            "ingestKubernetesAudit",
            "Receive the kube-apiserver's audit events (its webhook backend)",
            "internal",
            ingest,
            request_model=ReportedBatch,
            response_model=Recorded,
            authenticated=False,
            audited=False,
            access="the kube-apiserver's audit webhook, with DOCKYARD_AUDIT_SINK_TOKEN as its "
            "bearer token",
            responses={
                401: "Not the apiserver's audit sink token",
                404: "The audit sink is not enabled (DOCKYARD_AUDIT_SINK_TOKEN unset)",
                422: "Not an audit.k8s.io/v1 EventList (a bad event alone is skipped)",
            },
            description="For the kube-apiserver only (--audit-webhook-config-file; see "
            "docs/audit.md). Writes to dockyard.io objects made by clients other than "
            "Dockyard become audit rows with source kubectl, once per auditID.",
        )
    )
