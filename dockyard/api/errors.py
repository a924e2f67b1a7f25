"""Every error the API returns, as RFC 9457 problem details (``application/problem+json``).

Handlers raise ``Problem`` (or let a known exception escape); one middleware renders it.
Each kind of problem has a stable ``type`` URI that clients can switch on, and no
problem ever carries a stack trace, SQL or a secret: details are written for clients.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://dockyard.io/problems/"


class FieldError(BaseModel):
    """One invalid field of a request."""

    field: str = Field(description="JSON path of the field, e.g. spec.database.deletionPolicy")
    message: str = Field(description="what is wrong with it")


class ProblemDetail(BaseModel):
    """An RFC 9457 problem document, as every error response carries."""

    type: str = Field(description="a stable URI naming the kind of problem")
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
        status: int,
        slug: str,
        title: str,
        detail: str,
        *,
        errors: Iterable[FieldError] | None = None,
        headers: Mapping[str, str] | None = None,
        dependency: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = dict(headers or {})
        self.dependency = dependency

    @property
    def type(self) -> str:
        return TYPE_BASE + self.slug

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
    return Problem(404, "not-found", "Not Found", detail)


def method_not_allowed(method: str, allowed: Iterable[str]) -> Problem:
    allow = ", ".join(sorted(allowed))
    return Problem(
        405,
        "method-not-allowed",
        "Method Not Allowed",
        f"{method} is not allowed here; use {allow}.",
        headers={"Allow": allow},
    )


def payload_too_large(limit: int) -> Problem:
    return Problem(
        413,
        "payload-too-large",
        "Payload Too Large",
        f"The request body exceeds the limit of {limit} bytes.",
    )


def unsupported_media_type(got: str) -> Problem:
    return Problem(
        415,
        "unsupported-media-type",
        "Unsupported Media Type",
        f"Send application/json (got {got or 'no Content-Type'}).",
    )


def validation_failed(errors: list[FieldError], detail: str | None = None) -> Problem:
    summary = detail or "; ".join(f"{e.field}: {e.message}" for e in errors[:5])
    return Problem(422, "validation-failed", "Validation Failed", summary, errors=errors)


def from_validation_error(exc: ValidationError, prefix: str = "") -> Problem:
    errors = [
        FieldError(field=field_path(err["loc"], prefix), message=err["msg"])
        for err in exc.errors(include_url=False, include_input=False)
    ]
    return validation_failed(errors)


def field_path(loc: Iterable[Any], prefix: str = "") -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or "(body)"


def unauthorized(detail: str = "A valid bearer token is required.") -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Unauthorized",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="dockyard"'},
    )


def forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", "Forbidden", detail)


def conflict(detail: str) -> Problem:
    return Problem(409, "conflict", "Conflict", detail)


def precondition_failed(detail: str) -> Problem:
    return Problem(412, "precondition-failed", "Precondition Failed", detail)


def too_many_requests(retry_after: int, detail: str = "Rate limit exceeded.") -> Problem:
    return Problem(
        429,
        "too-many-requests",
        "Too Many Requests",
        detail,
        headers={"Retry-After": str(max(1, retry_after))},
    )


def dependency_unavailable(name: str, retry_after: float = 5.0) -> Problem:
    return Problem(
        503,
        "dependency-unavailable",
        "Service Unavailable",
        f"A dependency is unavailable: {name}. Retry later.",
        headers={"Retry-After": str(max(1, math.ceil(retry_after)))},
        dependency=name,
    )


def internal_error() -> Problem:
    return Problem(
        500,
        "internal-error",
        "Internal Server Error",
        "The server failed to handle the request; quote the request id.",
    )
