"""Restores over REST: create, read, list, change and delete them, read their plan, and
approve or reject them.

The contract of every kind (``kinds``), the paged lists of the backup kinds
(``recovery``, filtered by ``?environment=``, source or target, and ``?phase=``), and:

- on create, ``dockyard.io/requested-by`` is set to the authenticated caller; a body
  carrying it (or ``dockyard.io/approved-by``, ``dockyard.io/approver-groups``, or the
  rejection's two annotations) is refused with 422, as is a patch that would change
  one, because the approval rule reads them as evidence of who asked and who approved
  or rejected (``dockyard.core.restore_plan``);
- ``GET .../{name}/plan`` answers the operator's ``status.plan``, or 409
  ``plan-not-ready`` while there is none;
- ``POST .../{name}/approve`` needs the custom RBAC verb ``approve`` on ``restores``
  (SubjectAccessReview). The requester is refused (403 ``approval-by-requester``), a
  restore that is not AwaitingApproval too (409 ``not-awaiting-approval``); otherwise
  ``dockyard.io/approved-by`` is set to the caller (``dockyard.io/approver-groups`` to
  the caller's groups) with a merge patch made as the caller (so it also needs
  ``patch``) and guarded by the resourceVersion the checks were made on. The operator
  verifies the approval again (SubjectAccessReview) before it touches the target;
- ``POST .../{name}/reject`` (body ``{"reason": ...}``, optional) needs the same verb, on a
  restore that is AwaitingApproval (409 otherwise): ``dockyard.io/rejected-by`` is set
  to the caller and ``dockyard.io/rejection-reason`` to the reason, written the same
  way; the operator fails the restore, reason Rejected
  (``dockyard.core.restore_rejection``). Both answer ``restore.approved`` or
  ``restore.rejected`` in the request's audit transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dockyard.api import errors, keys
from dockyard.api.bodies import read_json
from dockyard.api.openapi import OperationRegistry
from dockyard.api.routes.kinds import with_traceparent
from dockyard.api.routes.models import create_body, list_body
from dockyard.api.routes.objects import caller, etag, if_match, metadata_diff, respond
from dockyard.api.routes.recovery import MetadataInput, RecoveryKindRoutes
from dockyard.core import transitions
from dockyard.core.events import Event
from dockyard.core.kube import KubeError
from dockyard.core.models.restore import (
    APPROVED_BY_ANNOTATION,
    APPROVER_GROUPS_ANNOTATION,
    REJECTED_BY_ANNOTATION,
    REJECTION_REASON_ANNOTATION,
    REJECTION_REASON_MAX_LENGTH,
    REQUESTED_BY_ANNOTATION,
    Restore,
    RestorePhase,
    RestorePlan,
)
from dockyard.core.resources import RESTORES
from dockyard.core.restore_plan import identify_requester
from dockyard.core.restore_rejection import one_line

Object = dict[str, Any]

# The operator may write status between our read and our patch (a new resourceVersion);
# the checks are then made again on the fresh object, a few times at most.
APPROVE_ATTEMPTS = 3
# RFC 9111 warn-code 299 (miscellaneous persistent warning), as the apiserver sends them.
UNBOUND_APPROVAL_WARNING = (
    '299 - "approved without If-Match: whichever Restore has this name now; send the '
    'ETag of the Restore you read"'
)


RestoreCreate = create_body(
    Restore,
    MetadataInput,
    doc="The body of ``POST .../restores``; the server records the caller as requester.",
    spec="what to restore, where, and how carefully",
)
RestoreList = list_body(
    Restore,
    doc="A page of the restores of a namespace, ordered by name.",
    items="the restores on this page",
)


class Rejection(BaseModel):
    """The body of ``POST .../restores/{name}/reject`` (optional)."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(
        default=None,
        max_length=REJECTION_REASON_MAX_LENGTH,
        description="why, shown in the restore's status and the restore.rejected event (one line)",
    )


def _environments(obj: Object) -> frozenset[str]:
    """The environments a restore is about: its source's and its target's."""
    spec = obj.get("spec") or {}
    plan = (obj.get("status") or {}).get("plan") or {}
    names = {
        ((spec.get("source") or {}).get("environmentRef") or {}).get("name"),
        ((spec.get("target") or {}).get("environmentRef") or {}).get("name"),
        plan.get("sourceEnvironment"),
        plan.get("target"),
    }
    return frozenset(n for n in names if isinstance(n, str))


def _requested_by(request: web.Request) -> Mapping[str, str]:
    return {REQUESTED_BY_ANNOTATION: request[keys.PRINCIPAL].user}


ROUTES = RecoveryKindRoutes(
    Restore,
    RestoreCreate,
    RestoreList,
    keys.RESTORE_CACHE,
    environments_of=_environments,
    phases=RestorePhase,
    server_annotations=frozenset(
        {
            REQUESTED_BY_ANNOTATION,
            APPROVED_BY_ANNOTATION,
            APPROVER_GROUPS_ANNOTATION,
            REJECTED_BY_ANNOTATION,
            REJECTION_REASON_ANNOTATION,
        }
    ),
    stamp=_requested_by,
)


async def get_plan(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    restore = await ROUTES.cached(request)
    status = restore.get("status") or {}
    plan = status.get("plan")
    if not plan:
        why = status.get("message")
        raise errors.PLAN_NOT_READY(
            f"Restore {namespace}/{name} has no plan yet"
            + (f": {why}" if why else "; the operator writes it once source and target resolve."),
        )
    # The Restore's ETag, so that an approval can name the Restore whose plan was read.
    return web.json_response(plan, headers={"ETag": etag(restore)})


def approval_refusal(obj: Object, approver: str) -> errors.Problem | None:
    """Why ``approver`` cannot approve this restore now, or None when they can."""
    metadata = obj.get("metadata") or {}
    name = f"{metadata.get('namespace')}/{metadata.get('name')}"
    requester = identify_requester(
        metadata.get("annotations") or {}, metadata.get("managedFields") or []
    )
    if requester.is_user and requester.name == approver:
        return errors.APPROVAL_BY_REQUESTER(
            f"{approver} requested restore {name} and cannot approve it; another user must.",
        )
    phase = (obj.get("status") or {}).get("phase") or RestorePhase.PENDING
    if phase != RestorePhase.AWAITING_APPROVAL:
        return errors.NOT_AWAITING_APPROVAL(
            f"Restore {name} is {phase}, not {RestorePhase.AWAITING_APPROVAL}.",
        )
    rejected = _rejected(obj)
    if rejected is not None:
        return rejected
    if not requester.is_user:
        # The operator would refuse this approval: nothing shows it comes from someone else.
        return errors.REQUESTER_UNKNOWN(
            f"Restore {name} names no requester ({REQUESTED_BY_ANNOTATION}), so an approval "
            "cannot be shown to come from another user; recreate it through this API.",
        )
    return None


async def approve(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    principal = request[keys.PRINCIPAL]
    approver = principal.user
    # With the approver's groups, the operator's SubjectAccessReview re-check sees an
    # approve right held through a group; the admission policy pins them to the caller's.
    approval = {
        APPROVED_BY_ANNOTATION: approver,
        APPROVER_GROUPS_ANNOTATION: ",".join(principal.groups) or None,
    }
    expected = if_match(request)
    if expected is None and request.app[keys.SETTINGS].approval_requires_if_match:
        raise errors.PRECONDITION_REQUIRED(
            f"Approving Restore {namespace}/{name} needs If-Match with the ETag of the "
            "Restore you read (GET the restore or its plan): without it, a Restore deleted "
            "and made again under the name since would be the one approved."
        )
    updated = await _decide(
        request,
        approval,
        refusal=lambda current: approval_refusal(current, approver),
        announce=lambda updated: transitions.approved(updated, approver),
        verb="approved",
    )
    response = respond(updated)
    if expected is None:
        response.headers["Warning"] = UNBOUND_APPROVAL_WARNING
    return response


async def reject(request: web.Request) -> web.Response:
    raw = await read_json(request) if request.can_read_body else {}
    try:
        asked = Rejection.model_validate(raw)
    except ValidationError as exc:
        raise errors.from_validation_error(exc, prefix="body") from None
    rejecter = request[keys.PRINCIPAL].user
    reason = one_line(asked.reason or "", REJECTION_REASON_MAX_LENGTH) or None
    rejection = {REJECTED_BY_ANNOTATION: rejecter, REJECTION_REASON_ANNOTATION: reason}
    updated = await _decide(
        request,
        rejection,
        refusal=_not_awaiting,
        announce=lambda updated: transitions.rejected(updated, rejecter, reason),
        verb="rejected",
    )
    return respond(updated)


async def _decide(
    request: web.Request,
    annotations: Mapping[str, str | None],
    *,
    refusal: Callable[[Object], errors.Problem | None],
    announce: Callable[[Object], Event],
    verb: str,
) -> Object:
    """Write an approval or a rejection (``annotations``) as the caller, on the Restore
    as it is now, unless ``refusal`` says why not; guarded by the resourceVersion the
    check was made on, and by If-Match when sent."""
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    kube = request.app[keys.KUBE]
    path = RESTORES.path(namespace, name)
    expected = if_match(request)
    for _ in range(APPROVE_ATTEMPTS):
        # Fresh from the apiserver, not the cache: the decision is written back guarded
        # by this resourceVersion, so it must be the latest one.
        try:
            current = await kube.get(path, as_caller=caller(request))
        except KubeError as exc:
            if exc.status == 404:
                raise ROUTES.not_found(namespace, name) from None
            raise
        version = current["metadata"]["resourceVersion"]
        if expected is not None and expected != version:
            raise errors.precondition_failed(
                f"If-Match {expected} no longer matches Restore {namespace}/{name}."
            )
        refused = refusal(current)
        if refused is not None:
            raise refused
        patch = {
            "metadata": with_traceparent(
                {"resourceVersion": version, "annotations": dict(annotations)}
            )
        }
        try:
            updated = await kube.merge_patch(path, patch, as_caller=caller(request))
        except KubeError as exc:
            if exc.status == 409:
                continue  # changed meanwhile (the operator's status): check again
            raise
        request[keys.AUDIT] = metadata_diff(current, updated)
        request[keys.EVENTS] = [announce(updated)]
        await request.app[keys.RESTORE_CACHE].caught_up(updated)
        return updated
    raise errors.conflict(
        f"Restore {namespace}/{name} kept changing while it was being {verb}; retry."
    )


def _not_awaiting(obj: Object) -> errors.Problem | None:
    """Why this restore cannot be rejected now (it does not await approval), or None."""
    metadata = obj.get("metadata") or {}
    phase = (obj.get("status") or {}).get("phase") or RestorePhase.PENDING
    if phase != RestorePhase.AWAITING_APPROVAL:
        return errors.NOT_AWAITING_APPROVAL(
            f"Restore {metadata.get('namespace')}/{metadata.get('name')} is {phase}, not "
            f"{RestorePhase.AWAITING_APPROVAL}: only a restore awaiting approval can be "
            "rejected (delete it to withdraw it).",
        )
    return _rejected(obj)


def _rejected(obj: Object) -> errors.Problem | None:
    """A restore rejected already (the operator is about to fail it): no other answer."""
    metadata = obj.get("metadata") or {}
    rejecter = (metadata.get("annotations") or {}).get(REJECTED_BY_ANNOTATION)
    if not rejecter:
        return None
    return errors.NOT_AWAITING_APPROVAL(
        f"Restore {metadata.get('namespace')}/{metadata.get('name')} was rejected by "
        f"{rejecter}; it fails without being carried out.",
    )


def register(registry: OperationRegistry) -> None:
    ROUTES.register(registry)
    registry.add(
        ROUTES.object_operation(
            "GET",
            "plan",
            "getRestorePlan",
            "Read a restore's plan",
            get_plan,
            "get",
            response_model=RestorePlan,
            responses={409: "No plan yet"},
            sensitive=True,  # the target's tables and their sizes
            description="The backup, size, tables, target, estimated duration and whether "
            "approval is needed, as the operator resolved them (dry run or not).",
        )
    )
    registry.add(
        ROUTES.object_operation(
            "POST",
            "approve",
            "approveRestore",
            "Approve a restore awaiting approval",
            approve,
            "approve",
            response_model=Restore,
            responses={
                409: "Not awaiting approval",
                412: "If-Match does not match",
                428: "No If-Match, where the server requires one",
            },
            access="also patch on restores: the approval is written with the caller's own token",
            description="Needs the approve verb on restores (operator and admin roles), and "
            "patch to record it. The requester cannot approve (403 approval-by-requester). "
            "Sets dockyard.io/approved-by to the caller; the operator verifies it. Send "
            "If-Match with the ETag of the Restore (or of its plan) that was read: the "
            "approval is then of that Restore, not of one made again under its name since "
            "(412). Without it, the answer carries a Warning, or is 428 where the server "
            "requires If-Match (DOCKYARD_APPROVAL_REQUIRES_IF_MATCH).",
        )
    )
    registry.add(
        ROUTES.object_operation(
            "POST",
            "reject",
            "rejectRestore",
            "Reject a restore awaiting approval",
            reject,
            "approve",
            request_model=Rejection,
            request_optional=True,
            response_model=Restore,
            responses={409: "Not awaiting approval", 412: "If-Match does not match"},
            access="also patch on restores: the rejection is written with the caller's own token",
            description="Needs the approve verb on restores (operator and admin roles), and "
            "patch to record it. Sets dockyard.io/rejected-by to the caller and "
            "dockyard.io/rejection-reason to the reason; the operator fails the restore "
            "(reason Rejected) without touching its target, and records who and why in "
            "status.approval. Only a restore awaiting approval can be rejected (409). "
            "If-Match, when sent, must be the ETag of the Restore as it is (412).",
        )
    )
