"""Every error the API returns, as RFC 9457 problem details (``application/problem+json``).

Handlers raise ``Problem`` (or let a known exception escape); one middleware renders it.
Each kind of problem has a stable ``type`` URI that clients can switch on, and no
problem ever carries a stack trace, SQL or a secret: details are written for clients.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple, TypedDict, Unpack

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://dockyard.io/problems/"


class ProblemOptions(TypedDict, total=False):
    """What a problem may carry besides its detail (``Problem``'s keyword arguments)."""

    status: int
    title: str
    errors: Iterable[FieldError]
    headers: Mapping[str, str]
    dependency: str


@dataclass(frozen=True, slots=True)
class ProblemType:
    """A kind of problem: its status, the slug of its stable ``type`` URI and its title.

    Calling it makes a :class:`Problem` of this type with this time's detail. Every type is
    declared below, once: docs/api.md lists them all (a unit test holds it to this list),
    and the OpenAPI document's ``ProblemDetail.type`` names them.
    """

    status: int
    slug: str
    title: str
    passthrough: bool = False
    """The status is the upstream's (the apiserver's, aiohttp's), not ``status``."""

    @property
    def uri(self) -> str:
        return TYPE_BASE + self.slug

    def __call__(self, detail: str, **options: Unpack[ProblemOptions]) -> Problem:
        return Problem(self, detail, **options)


# -- every kind of problem the API answers with ----------------------------------------------

BAD_REQUEST = ProblemType(400, "bad-request", "Bad Request")
INVALID_NAME = ProblemType(400, "invalid-name", "Invalid Name")
BODY_TOO_DEEP = ProblemType(400, "body-too-deep", "Body Too Deep")
UNAUTHORIZED = ProblemType(401, "unauthorized", "Unauthorized")
FORBIDDEN = ProblemType(403, "forbidden", "Forbidden")
HTTPS_REQUIRED = ProblemType(403, "https-required", "HTTPS Required")
CORS_ORIGIN_NOT_ALLOWED = ProblemType(403, "cors-origin-not-allowed", "Origin Not Allowed")
APPROVAL_BY_REQUESTER = ProblemType(403, "approval-by-requester", "Approval By Requester")
NOT_FOUND = ProblemType(404, "not-found", "Not Found")
METHOD_NOT_ALLOWED = ProblemType(405, "method-not-allowed", "Method Not Allowed")
REQUEST_TIMEOUT = ProblemType(408, "request-timeout", "Request Timeout")
CONFLICT = ProblemType(409, "conflict", "Conflict")
PLAN_NOT_READY = ProblemType(409, "plan-not-ready", "Plan Not Ready")
NOT_AWAITING_APPROVAL = ProblemType(409, "not-awaiting-approval", "Not Awaiting Approval")
REQUESTER_UNKNOWN = ProblemType(409, "requester-unknown", "Requester Unknown")
PRECONDITION_FAILED = ProblemType(412, "precondition-failed", "Precondition Failed")
PRECONDITION_REQUIRED = ProblemType(428, "precondition-required", "Precondition Required")
PAYLOAD_TOO_LARGE = ProblemType(413, "payload-too-large", "Payload Too Large")
URI_TOO_LONG = ProblemType(414, "uri-too-long", "URI Too Long")
UNSUPPORTED_MEDIA_TYPE = ProblemType(415, "unsupported-media-type", "Unsupported Media Type")
VALIDATION_FAILED = ProblemType(422, "validation-failed", "Validation Failed")
IDEMPOTENCY_KEY_REUSED = ProblemType(422, "idempotency-key-reused", "Idempotency Key Reused")
TOO_MANY_REQUESTS = ProblemType(429, "too-many-requests", "Too Many Requests")
HEADER_FIELDS_TOO_LARGE = ProblemType(
    431, "header-fields-too-large", "Request Header Fields Too Large"
)
INTERNAL_ERROR = ProblemType(500, "internal-error", "Internal Server Error")
DEPENDENCY_UNAVAILABLE = ProblemType(503, "dependency-unavailable", "Service Unavailable")
STREAM_TOO_SLOW = ProblemType(503, "stream-too-slow", "Stream Too Slow")
KUBERNETES_ERROR = ProblemType(400, "kubernetes-error", "Bad Request", passthrough=True)
"""The apiserver refused the request for a reason with no type of its own here."""
HTTP_ERROR = ProblemType(400, "http-error", "Bad Request", passthrough=True)
"""aiohttp refused the request with a status that has no type of its own here."""

PROBLEM_TYPES: Final[Mapping[str, ProblemType]] = {
    kind.slug: kind for kind in globals().values() if isinstance(kind, ProblemType)
}


class FieldError(BaseModel):
    """One invalid field of a request."""

    field: str = Field(description="JSON path of the field, e.g. spec.database.deletionPolicy")
    message: str = Field(description="what is wrong with it")


class InvalidField(NamedTuple):
    """An invalid field before a problem lists it. A tuple costs a fraction of a
    ``FieldError`` (a pydantic model), so a caller finding thousands of them (a body of
    unknown keys) makes these, and only the ones listed become ``FieldError``s."""

    field: str
    message: str


MAX_FIELD_ERRORS: Final = 50
"""The most invalid fields one problem lists. A 1 MiB body can hold 100,000 unknown keys;
listing each cost a replica most of a second of its event loop and sent megabytes back."""

MORE_FIELDS: Final = "(more)"
"""The ``field`` of the last entry of a problem that lists ``MAX_FIELD_ERRORS`` and left
some out: its message says how many."""


class ProblemDetail(BaseModel):
    """An RFC 9457 problem document, as every error response carries."""

    type: str = Field(
        description=(
            f"a stable URI naming the kind of problem: {TYPE_BASE}<slug>, with one of the "
            f"slugs {', '.join(sorted(PROBLEM_TYPES))} (docs/api.md says when each is sent)"
        )
    )
    title: str = Field(description="a short summary of the kind of problem")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong this time, for a person")
    instance: str | None = Field(default=None, description="the request path")
    request_id: str | None = Field(
        default=None, alias="requestId", description="quote it when reporting a problem"
    )
    errors: list[FieldError] | None = Field(
        default=None, description="the invalid fields, for validation problems"
    )
    dependency: str | None = Field(default=None, description="the dependency that is down")

    model_config = {"populate_by_name": True, "serialize_by_alias": True}


class Problem(Exception):
    """An error for the client: its status, its stable type and a human detail."""

    def __init__(
        self,
        kind: ProblemType,
        detail: str,
        *,
        status: int | None = None,
        title: str | None = None,
        errors: Iterable[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        dependency: str | None = None,
    ) -> None:
        if (status is not None or title is not None) and not kind.passthrough:
            raise ValueError(f"problem type {kind.slug} has a fixed status and title")
        super().__init__(detail)
        self.kind = kind
        self.status = kind.status if status is None else status
        self.title = kind.title if title is None else title
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})
        self.dependency = dependency

    @property
    def slug(self) -> str:
        return self.kind.slug

    @property
    def type(self) -> str:
        return self.kind.uri

    def document(self, *, instance: str | None, request_id: str | None) -> ProblemDetail:
        return ProblemDetail(
            type=self.type,
            title=self.title,
            status=self.status,
            detail=self.detail,
            instance=instance,
            request_id=request_id,
            errors=self.errors,
            dependency=self.dependency,
        )


def render(problem: Problem, request: web.Request, request_id: str | None) -> web.Response:
    body = problem.document(instance=request.path, request_id=request_id)
    return web.Response(
        status=problem.status,
        text=json.dumps(body.model_dump(mode="json", exclude_none=True)),
        content_type=PROBLEM_JSON,
        headers=problem.headers,
    )


# -- the problems the chassis raises -------------------------------------------------------


def not_found(detail: str = "No such resource.") -> Problem:
    return NOT_FOUND(detail)


def method_not_allowed(method: str, allowed: Iterable[str]) -> Problem:
    allow = ", ".join(sorted(allowed))
    return METHOD_NOT_ALLOWED(
        f"{method} is not allowed here; use {allow}.", headers={"Allow": allow}
    )


def payload_too_large(limit: int) -> Problem:
    return PAYLOAD_TOO_LARGE(f"The request body exceeds the limit of {limit} bytes.")


def unsupported_media_type(got: str) -> Problem:
    return UNSUPPORTED_MEDIA_TYPE(f"Send application/json (got {got or 'no Content-Type'}).")


def validation_failed(
    errors: Iterable[FieldError | InvalidField],
    detail: str | None = None,
    *,
    total: int | None = None,
) -> Problem:
    """422 listing the invalid fields ``errors``: the first ``MAX_FIELD_ERRORS``, then, if
    there were more, an entry ``(more)`` saying how many. Only the listed are taken from
    ``errors`` when the caller gives their ``total``; otherwise the rest are counted here."""
    remaining = iter(errors)
    listed = [
        FieldError(field=error.field, message=error.message)
        for error in itertools.islice(remaining, MAX_FIELD_ERRORS)
    ]
    if total is None:
        total = len(listed) + sum(1 for _ in remaining)
    summary = detail or "; ".join(f"{e.field}: {e.message}" for e in listed[:5])
    if total > len(listed):
        left_out = total - len(listed)
        listed.append(
            FieldError(field=MORE_FIELDS, message=f"{left_out} more invalid fields not listed")
        )
    return VALIDATION_FAILED(summary, errors=listed)


def from_validation_error(exc: ValidationError, prefix: str = "") -> Problem:
    found = exc.errors(include_url=False, include_input=False)
    return validation_failed(
        (InvalidField(field_path(err["loc"], prefix), err["msg"]) for err in found),
        total=len(found),
    )


def field_path(loc: Iterable[Any], prefix: str = "") -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or "(body)"


def unauthorized(detail: str = "A valid bearer token is required.") -> Problem:
    return UNAUTHORIZED(detail, headers={"WWW-Authenticate": 'Bearer realm="dockyard"'})


def forbidden(detail: str) -> Problem:
    return FORBIDDEN(detail)


def conflict(detail: str) -> Problem:
    return CONFLICT(detail)


def precondition_failed(detail: str) -> Problem:
    return PRECONDITION_FAILED(detail)


def too_many_requests(retry_after: int, detail: str = "Rate limit exceeded.") -> Problem:
    return TOO_MANY_REQUESTS(detail, headers={"Retry-After": str(max(1, retry_after))})


def dependency_unavailable(name: str, retry_after: float = 5.0) -> Problem:
    return DEPENDENCY_UNAVAILABLE(
        f"A dependency is unavailable: {name}. Retry later.",
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
        dependency=name,
    )


def internal_error() -> Problem:
    return INTERNAL_ERROR("The server failed to handle the request; quote the request id.")
