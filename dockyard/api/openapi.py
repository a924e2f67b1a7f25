"""The OpenAPI 3.1 document, built from the same pydantic models that validate requests.

Each route declares an ``Operation``; the document is rendered from that registry, so a
handler cannot exist without its contract and the contract cannot drift from the code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from dockyard.api.auth import Permission
from dockyard.api.errors import PROBLEM_JSON, ProblemDetail
from dockyard.api.paths import PATH_PARAMETERS
from dockyard.api.protocol import MAX_REQUEST_LINE
from dockyard.api.transport import PROBE_PATHS

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_TITLE = "Dockyard API"
API_VERSION = "1.4.0"


@dataclass(frozen=True)
class Operation:
    """One HTTP operation: its route, its models and what it answers."""

    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    handler: Handler
    response_model: type[BaseModel] | None = None
    request_model: type[BaseModel] | None = None
    responses: dict[int, str] = field(default_factory=dict)
    authenticated: bool = True
    audited: bool = True
    """Whether the audit trail records the request itself (refusals always are)."""
    sensitive: bool = False
    """A read of something sensitive in itself (the audit trail, a webhook's URL, a store's
    storage and key references, a restore's plan of tables): the trail records it unless
    ``DOCKYARD_AUDIT_READS`` is ``none`` (docs/audit.md)."""
    permission: Permission | None = None
    access: str = ""
    """Who may call it, in words, where no one permission says so (a filtered list, the
    apiserver's audit sink). Shown as ``x-dockyard-access`` and in docs/api-operations.md."""
    description: str = ""
    parameters: tuple[dict[str, Any], ...] = ()
    request_optional: bool = False
    """Whether the body may be left out (``request_model``'s defaults apply then)."""
    request_schema: dict[str, Any] | None = None
    """A body's JSON Schema when no model describes it: a JSON merge patch, sent as
    ``application/merge-patch+json`` or ``application/json``."""
    model_statuses: frozenset[int] = frozenset()
    """Error statuses answered with ``response_model`` rather than a problem document
    (readiness's 503)."""


class OperationRegistry:
    """The operations of one API, in the order they were declared."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def add(self, operation: Operation) -> None:
        self.operations.append(operation)

    def install(self, app: web.Application) -> None:
        for op in self.operations:
            app.router.add_route(op.method.upper(), op.path, op.handler, name=op.operation_id)


def replace(operations: list[Operation], handler: Handler, **changes: Any) -> list[Operation]:
    """``operations`` with the one served by ``handler`` changed as ``changes`` say."""
    return [
        dataclasses.replace(op, **changes) if op.handler == handler else op for op in operations
    ]


def build_document(operations: Sequence[Operation]) -> dict[str, Any]:
    models: list[type[BaseModel]] = [ProblemDetail]
    for op in operations:
        for model in (op.request_model, op.response_model):
            if model is not None and model not in models:
                models.append(model)
    refs, schemas = models_json_schema(
        [(m, "serialization") for m in models], ref_template="#/components/schemas/{model}"
    )
    problem = refs[(ProblemDetail, "serialization")]
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": [op.tag],
            "responses": {},
        }
        if op.description:
            entry["description"] = op.description
        if op.permission is not None:
            entry["x-dockyard-permission"] = {
                "group": op.permission.group,
                "resource": op.permission.resource,
                "verb": op.permission.verb,
            }
        if op.access:
            entry["x-dockyard-access"] = op.access
        path_params = [
            {"name": name, "in": "path", "required": True, "schema": _path_schema(name)}
            for name in _path_params(op.path)
        ]
        if path_params or op.parameters:
            entry["parameters"] = [*path_params, *op.parameters]
        if not op.authenticated:
            entry["security"] = []
        if op.request_model is not None:
            entry["requestBody"] = {
                "required": not op.request_optional,
                "content": {
                    "application/json": {"schema": refs[(op.request_model, "serialization")]}
                },
            }
        elif op.request_schema is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {
                    media: {"schema": op.request_schema}
                    for media in ("application/merge-patch+json", "application/json")
                },
            }
        implied = {200: "OK"}
        if path_params:
            implied[400] = "A path parameter is not a Kubernetes name"
        if op.path not in PROBE_PATHS:
            implied[429] = "Rate limited (a RateLimitPolicy); see Retry-After"
        if any(parameter["in"] == "query" for parameter in op.parameters):
            implied[414] = f"The request line is over {MAX_REQUEST_LINE} bytes"
        if op.authenticated:
            implied[503] = (
                "A dependency is unavailable (the problem's dependency names it); see Retry-After"
            )
        links = _links(op, operations)
        for status, text in sorted({**implied, **op.responses}.items()):
            response: dict[str, Any] = {"description": text}
            if op.response_model is not None and (status < 400 or status in op.model_statuses):
                schema = refs[(op.response_model, "serialization")]
                response["content"] = {"application/json": {"schema": schema}}
            elif status >= 400:
                response["content"] = {PROBLEM_JSON: {"schema": problem}}
            if status == 201 and links:
                response["links"] = links
            entry["responses"][str(status)] = response
        paths.setdefault(op.path, {})[op.method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": API_TITLE,
            "version": API_VERSION,
            "description": "REST door to Dockyard's custom resources; see docs/api.md.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A Kubernetes bearer token, checked with TokenReview",
                }
            },
        },
        "security": [{"bearer": []}],
    }


def _links(op: Operation, operations: Sequence[Operation]) -> dict[str, Any]:
    """What a client can do next with the object a create answers: every operation on
    ``<collection>/{name}``, its parameters taken from the request and the answer."""
    if op.method != "POST" or 201 not in op.responses or op.path.endswith("}"):
        return {}
    one = op.path + "/{name}"
    return {
        follower.operation_id: {
            "operationId": follower.operation_id,
            "parameters": {
                **{name: f"$request.path.{name}" for name in _path_params(op.path)},
                "name": "$response.body#/metadata/name",
            },
        }
        for follower in operations
        if follower.path == one or follower.path.startswith(one + "/")
    }


def _path_schema(name: str) -> dict[str, Any]:
    rule = PATH_PARAMETERS.get(name)
    return rule.schema() if rule is not None else {"type": "string"}


def _path_params(path: str) -> list[str]:
    return [part[1:-1].split(":")[0] for part in path.split("/") if part.startswith("{")]


def render_yaml(operations: Sequence[Operation]) -> str:
    """The document as committed in ``specs/openapi.yaml`` (``app.registry()``'s operations)."""
    header = "# Generated by 'dockyard openapi' from the API's models; do not edit.\n"
    return header + yaml.safe_dump(build_document(operations), sort_keys=False, width=100)
