"""``POST /api/v1/audit/kubernetes``: the kube-apiserver's audit webhook backend.

The apiserver (``--audit-webhook-config-file``, see ``manifests/audit/``) posts batches
of ``audit.k8s.io/v1`` events here. Each write to a ``dockyard.io`` object that did not
come through Dockyard itself (this API, the operator, Kopf, the runners, which audit
their own) becomes an audit row with source ``kubectl``: the user, the verb, the object
and the response code. A batch sent again is recorded once (by ``auditID``).

The apiserver authenticates with the bearer token ``DOCKYARD_AUDIT_SINK_TOKEN`` (its
webhook kubeconfig holds the same); without the setting the endpoint is off (404). It is
not a user-facing operation: no SubjectAccessReview, and it is kept out of the public
OpenAPI contract's clients (tag ``internal``).
"""

from __future__ import annotations

import hmac
import logging
from datetime import datetime
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dockyard.api import errors, keys
from dockyard.api.auth import bearer_token
from dockyard.api.bodies import read_json
from dockyard.api.openapi import Operation, OperationRegistry
from dockyard.core import audit_rows
from dockyard.core.audit_rows import AuditRow, Source

logger = logging.getLogger(__name__)

GROUP: Final = "dockyard.io"
WRITES: Final = frozenset({"create", "update", "patch", "delete", "deletecollection"})
# Dockyard's own clients: their writes are audited where they are made.
OWN_AGENTS: Final = ("dockyard", "kopf/")
MAX_BATCH: Final = 1000


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ReportedUser(_Loose):
    username: str = Field(default="unknown", max_length=256)
    groups: list[str] = Field(default_factory=list, max_length=64)


class ReportedObject(_Loose):
    api_group: str = Field(default="", alias="apiGroup", max_length=253)
    resource: str = Field(default="", max_length=63)
    subresource: str | None = Field(default=None, max_length=63)
    namespace: str | None = Field(default=None, max_length=63)
    name: str | None = Field(default=None, max_length=253)


class ReportedStatus(_Loose):
    code: int | None = Field(default=None, ge=100, le=599)


class ReportedEvent(_Loose):
    """One ``audit.k8s.io/v1`` Event, as much of it as the trail keeps."""

    audit_id: str = Field(alias="auditID", max_length=64)
    stage: str = Field(max_length=32)
    verb: str = Field(max_length=32)
    user: ReportedUser = Field(default_factory=ReportedUser)
    user_agent: str = Field(default="", alias="userAgent", max_length=1024)
    source_ips: list[str] = Field(default_factory=list, alias="sourceIPs", max_length=16)
    object_ref: ReportedObject | None = Field(default=None, alias="objectRef")
    response_status: ReportedStatus | None = Field(default=None, alias="responseStatus")
    stage_timestamp: datetime | None = Field(default=None, alias="stageTimestamp")

    def row(self) -> AuditRow | None:
        """The audit row of a client's write to a Dockyard object, else None."""
        ref = self.object_ref
        if (
            self.stage != "ResponseComplete"
            or ref is None
            or ref.api_group != GROUP
            or self.verb not in WRITES
            or self.user_agent.startswith(OWN_AGENTS)
        ):
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
            source_ip=self.source_ips[0] if self.source_ips else None,
            occurred_at=self.stage_timestamp,
            source=Source.KUBECTL,
        )


class ReportedBatch(_Loose):
    items: list[ReportedEvent] = Field(default_factory=list, max_length=MAX_BATCH)


class Recorded(BaseModel):
    recorded: int = Field(description="rows added (a batch sent again adds none)")


async def ingest(request: web.Request) -> web.Response:
    expected = request.app[keys.SETTINGS].audit_sink_token
    if expected is None:
        raise errors.not_found("The apiserver audit sink is not enabled.")
    token = bearer_token(request.headers.get("Authorization")) or ""
    if not hmac.compare_digest(token.encode(), expected.get_secret_value().encode()):
        logger.warning("audit sink: a batch with a wrong token was refused")
        raise errors.unauthorized("This endpoint takes the apiserver's audit sink token.")
    try:
        batch = ReportedBatch.model_validate(await read_json(request))
    except ValidationError as exc:
        raise errors.from_validation_error(exc, prefix="body") from None
    rows = [row for event in batch.items if (row := event.row()) is not None]
    recorded = 0
    if rows:
        async with request.app[keys.DB_POOL].acquire() as conn, conn.transaction():
            recorded = await audit_rows.insert_reported(conn, rows)
    body: dict[str, Any] = Recorded(recorded=recorded).model_dump()
    return web.json_response(body)


def register(registry: OperationRegistry) -> None:
    registry.add(
        Operation(
            "POST",
            "/api/v1/audit/kubernetes",
            "ingestKubernetesAudit",
            "Receive the kube-apiserver's audit events (its webhook backend)",
            "internal",
            ingest,
            request_model=ReportedBatch,
            response_model=Recorded,
            authenticated=False,
            audited=False,
            responses={
                401: "Not the apiserver's audit sink token",
                404: "The audit sink is not enabled (DOCKYARD_AUDIT_SINK_TOKEN unset)",
                422: "Not an audit.k8s.io/v1 EventList",
            },
            description="For the kube-apiserver only (--audit-webhook-config-file; see "
            "docs/audit.md). Writes to dockyard.io objects made by clients other than "
            "Dockyard become audit rows with source kubectl, once per auditID.",
        )
    )
