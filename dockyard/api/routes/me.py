"""``GET /api/v1/me``: who the caller is and what they may do, for the frontend to render."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from pydantic import BaseModel, Field

from dockyard.api import errors, keys
from dockyard.api.auth import GROUP, Principal
from dockyard.api.openapi import Operation, OperationRegistry
from dockyard.api.paths import DNS_LABEL

RESOURCES = (
    "environments",
    "backups",
    "backupschedules",
    "restores",
    "restoredrills",
    "scalingpolicies",
    "ratelimitpolicies",
    "webhooks",
    "auditevents",
)
# Cluster-scoped: reviewed without a namespace, so only cluster-wide bindings grant them.
CLUSTER_RESOURCES = ("backupstores",)
VERBS = ("get", "list", "watch", "create", "patch", "delete")


class ResourceAccess(BaseModel):
    """The verbs the caller may use on one kind of resource."""

    resource: str = Field(description="the resource (plural), in the dockyard.io group")
    verbs: list[str] = Field(description="the allowed verbs")


class Me(BaseModel):
    """The caller's identity and permissions in one namespace."""

    user: str = Field(description="the user name the Kubernetes API knows")
    groups: list[str] = Field(description="the caller's groups")
    namespace: str = Field(description="the namespace the permissions below apply to")
    permissions: list[ResourceAccess] = Field(description="allowed verbs per resource")
    cluster: list[ResourceAccess] = Field(
        description="allowed verbs per cluster-scoped resource (backupstores), the same in "
        "every namespace: only cluster-wide bindings grant them"
    )


PAIRS = (*((r, v) for r in RESOURCES for v in VERBS), ("restores", "approve"))
CLUSTER_PAIRS = tuple((r, v) for r in CLUSTER_RESOURCES for v in VERBS)


def _nothing_allowed() -> list[ResourceAccess]:
    return [ResourceAccess(resource=r, verbs=[]) for r in RESOURCES]


def _access(
    resources: tuple[str, ...],
    pairs: tuple[tuple[str, str], ...],
    allowed: Mapping[tuple[str, str], bool],
) -> list[ResourceAccess]:
    return [
        ResourceAccess(resource=r, verbs=[v for rr, v in pairs if rr == r and allowed[(rr, v)]])
        for r in resources
    ]


async def get_me(request: web.Request) -> web.Response:
    principal: Principal = request[keys.PRINCIPAL]
    namespace = request.query.get("namespace", "default")
    if len(namespace) > DNS_LABEL.max_length:
        raise errors.validation_failed(
            [errors.FieldError(field="query.namespace", message="at most 63 characters")]
        )

    authorizer = request.app[keys.AUTHORIZER]
    fanout = request.app[keys.SETTINGS].authz_fanout_concurrency

    async def body(permissions: list[ResourceAccess]) -> bytes:
        cluster = await authorizer.matrix(
            principal, CLUSTER_PAIRS, namespace="", concurrency=fanout
        )
        me = Me(
            user=principal.user,
            groups=list(principal.groups),
            namespace=namespace,
            permissions=permissions,
            cluster=_access(CLUSTER_RESOURCES, CLUSTER_PAIRS, cluster.allowed),
        )
        return me.model_dump_json().encode()

    if not DNS_LABEL.matches(namespace):
        # No such namespace can exist: nothing is allowed there, and no review is spent on it
        # (only the cluster-wide ones).
        return web.Response(body=await body(_nothing_allowed()), content_type="application/json")
    matrix = await authorizer.matrix(principal, PAIRS, namespace=namespace, concurrency=fanout)
    # Rendered once per cached matrix (one caller, one namespace), with the cluster-wide
    # decisions of that moment: a warm /me only looks up its decisions and sends the bytes
    # it sent before. So a cluster-wide grant shows within two cache lifetimes.
    rendered = matrix.rendered.get("me")
    if rendered is None:
        permissions = _access(RESOURCES, PAIRS, matrix.allowed)
        rendered = matrix.rendered["me"] = await body(permissions)
    return web.Response(body=rendered, content_type="application/json")


def register(registry: OperationRegistry) -> None:
    registry.add(
        Operation(
            "GET",
            "/api/v1/me",
            "getMe",
            "The caller's identity and permissions",
            "identity",
            get_me,
            response_model=Me,
            responses={401: "No valid bearer token", 422: "?namespace= is over 63 characters"},
            description=f"Permissions are checked with SubjectAccessReviews in the {GROUP} "
            "group for the namespace given by ?namespace= (default: default); those on "
            "cluster-scoped resources (cluster) without a namespace.",
            parameters=(
                {
                    "name": "namespace",
                    "in": "query",
                    "required": False,
                    "description": "a namespace name (DNS-1123 label); any other value "
                    "has no permissions",
                    "schema": {"type": "string", "maxLength": 63},
                },
            ),
        )
    )
