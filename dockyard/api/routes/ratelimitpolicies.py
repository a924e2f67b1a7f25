"""RateLimitPolicies over REST: the objects kubectl sees, read from the rate limiter's
watch cache and written to the apiserver as the caller.

The same contract as environments: ``ETag`` is the resourceVersion and ``If-Match`` a
precondition the apiserver enforces (412), POST honours ``Idempotency-Key``, and the
apiserver's schema and CEL messages come back as problem+json with field paths. Who
may change limits is RBAC's call (by default the operator and admin roles).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dockyard.api import errors, keys
from dockyard.api.audit import spec_diff
from dockyard.api.auth import Permission
from dockyard.api.bodies import read_json
from dockyard.api.idempotency import IdempotencyStore, request_hash, validate_key
from dockyard.api.openapi import Operation, OperationRegistry
from dockyard.api.routes.objects import caller, if_match, kube_path, merge, public, respond
from dockyard.core import selectors
from dockyard.core.kube import KubeError
from dockyard.core.models.common import API_VERSION
from dockyard.core.models.ratelimit import RateLimitPolicy, RateLimitPolicySpec

RESOURCE = RateLimitPolicy.crd.plural
KIND = RateLimitPolicy.crd.kind
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
PATCHABLE = frozenset({"spec", "metadata"})
PATCHABLE_METADATA = frozenset({"labels", "annotations"})


class PolicyMetaInput(BaseModel):
    """The metadata a client may set on a new policy."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=253, pattern=NAME_PATTERN, description="unique in the namespace"
    )
    labels: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Kubernetes labels"
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Kubernetes annotations"
    )


class RateLimitPolicyCreate(BaseModel):
    """The body of ``POST .../ratelimitpolicies``."""

    model_config = ConfigDict(extra="forbid")

    api_version: str | None = Field(
        default=None, alias="apiVersion", description=f"optional; {API_VERSION}"
    )
    kind: str | None = Field(default=None, description=f"optional; {KIND}")
    metadata: PolicyMetaInput = Field(description="name, labels and annotations")
    spec: RateLimitPolicySpec = Field(description="the limits")


class RateLimitPolicyList(BaseModel):
    """The policies of a namespace, ordered by name."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    items: list[RateLimitPolicy] = Field(description="the policies")
    resource_version: str = Field(
        alias="resourceVersion", description="the cache's resourceVersion for this list"
    )


def _not_found(namespace: str, name: str) -> errors.Problem:
    return errors.not_found(f"{KIND} {namespace}/{name} does not exist.")


async def list_namespaced(request: web.Request) -> web.Response:
    namespace = request.match_info["namespace"]
    selector = request.query.get("labelSelector")
    unknown = set(request.query) - {"labelSelector"}
    if unknown:
        raise errors.validation_failed(
            [errors.FieldError(field=f"query.{k}", message="unknown parameter") for k in unknown]
        )
    requirements = None
    if selector:
        try:
            requirements = selectors.parse(selector[:1024])
        except selectors.SelectorError as exc:
            raise errors.validation_failed(
                [errors.FieldError(field="query.labelSelector", message=str(exc))]
            ) from None
    cache = request.app[keys.RATE_LIMIT_POLICY_CACHE]
    await cache.wait_synced()
    items = cache.list(
        namespaces={namespace},
        predicate=None
        if requirements is None
        else lambda o: selectors.matches(requirements, o["metadata"].get("labels") or {}),
    )
    body = RateLimitPolicyList(items=[], resource_version=str(cache.resource_version)).model_dump(
        mode="json", by_alias=True
    )
    body["items"] = [public(o) for o in items]
    return web.json_response(body)


async def get_one(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    cache = request.app[keys.RATE_LIMIT_POLICY_CACHE]
    await cache.wait_synced()
    obj = cache.get(namespace, name)
    if obj is None:
        raise _not_found(namespace, name)
    return respond(obj)


async def create(request: web.Request) -> web.Response:
    namespace = request.match_info["namespace"]
    raw = await read_json(request)
    actor = request[keys.PRINCIPAL].user
    key = request.headers.get("Idempotency-Key")
    store: IdempotencyStore | None = None
    if key is not None:
        store = request.app[keys.IDEMPOTENCY]
        replay = await store.claim(
            actor=actor,
            key=validate_key(key),
            method="POST",
            path=request.path,
            digest=request_hash("POST", request.path, raw),
        )
        if replay is not None:
            return web.json_response(
                replay.body, status=replay.status, headers={"Idempotency-Replayed": "true"}
            )
    try:
        created = await _create(request, namespace, raw)
    except errors.Problem as problem:
        if store is not None and key is not None:
            if problem.status < 500:
                document = problem.document(
                    instance=request.path, request_id=request.get(keys.REQUEST_ID)
                )
                await store.complete(
                    actor=actor,
                    key=key,
                    status=problem.status,
                    body=document.model_dump(mode="json", exclude_none=True),
                )
            else:
                await store.release(actor=actor, key=key)
        raise
    except KubeError:
        if store is not None and key is not None:
            await store.release(actor=actor, key=key)
        raise
    if store is not None and key is not None:
        await store.complete(actor=actor, key=key, status=201, body=public(created))
    return respond(created, status=201)


async def _create(request: web.Request, namespace: str, raw: object) -> dict[str, Any]:
    try:
        body = RateLimitPolicyCreate.model_validate(raw)
    except ValidationError as exc:
        raise errors.from_validation_error(exc) from None
    manifest = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": body.metadata.model_dump(exclude_defaults=True),
        "spec": body.spec.model_dump(mode="json", exclude_none=True, by_alias=True),
    }
    created = await request.app[keys.KUBE].create(
        kube_path(RESOURCE, namespace), manifest, as_user=caller(request)
    )
    request[keys.AUDIT] = spec_diff(None, created.get("spec"))
    await request.app[keys.RATE_LIMIT_POLICY_CACHE].wait_for_version(
        created["metadata"]["resourceVersion"]
    )
    return created


def _patch_problems(raw: dict[str, Any]) -> list[errors.FieldError]:
    problems = [
        errors.FieldError(field=k, message="cannot be changed through this API")
        for k in raw
        if k not in PATCHABLE
    ]
    metadata = raw.get("metadata") or {}
    if not isinstance(metadata, dict):
        problems.append(errors.FieldError(field="metadata", message="must be an object"))
    else:
        problems += [
            errors.FieldError(field=f"metadata.{k}", message="cannot be changed")
            for k in metadata
            if k not in PATCHABLE_METADATA
        ]
    return problems


async def patch(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    raw = await read_json(
        request, allowed=frozenset({"application/merge-patch+json", "application/json"})
    )
    if not isinstance(raw, dict):
        raise errors.validation_failed(
            [errors.FieldError(field="(body)", message="a JSON merge patch must be an object")]
        )
    problems = _patch_problems(raw)
    if problems:
        raise errors.validation_failed(problems)
    cache = request.app[keys.RATE_LIMIT_POLICY_CACHE]
    await cache.wait_synced()
    current = cache.get(namespace, name)
    if current is None:
        raise _not_found(namespace, name)
    expected = if_match(request)
    if "spec" in raw:
        try:
            RateLimitPolicySpec.model_validate(merge(current.get("spec"), raw["spec"]))
        except ValidationError as exc:
            raise errors.from_validation_error(exc, prefix="spec") from None
    body = dict(raw)
    if expected is not None:
        body["metadata"] = {**(raw.get("metadata") or {}), "resourceVersion": expected}
    try:
        updated = await request.app[keys.KUBE].merge_patch(
            kube_path(RESOURCE, namespace, name), body, as_user=caller(request)
        )
    except KubeError as exc:
        if exc.status == 409 and expected is not None:
            raise errors.precondition_failed(
                f"If-Match {expected} no longer matches {KIND} {namespace}/{name}; "
                "re-read it and retry."
            ) from None
        raise
    request[keys.AUDIT] = spec_diff(current.get("spec"), updated.get("spec"))
    await cache.wait_for_version(updated["metadata"]["resourceVersion"])
    return respond(updated)


async def delete(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    expected = if_match(request)
    options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
    if expected is not None:
        options["preconditions"] = {"resourceVersion": expected}
    try:
        await request.app[keys.KUBE].request(
            "DELETE", kube_path(RESOURCE, namespace, name), body=options, as_user=caller(request)
        )
    except KubeError as exc:
        if exc.status == 409 and expected is not None:
            raise errors.precondition_failed(
                f"If-Match {expected} no longer matches {KIND} {namespace}/{name}."
            ) from None
        raise
    return web.Response(status=204)


def register(registry: OperationRegistry) -> None:
    many = "/api/v1/namespaces/{namespace}/ratelimitpolicies"
    one = many + "/{name}"
    tag = "ratelimitpolicies"
    common = {401: "No valid bearer token", 403: "Not allowed", 422: "Invalid request"}
    registry.add(
        Operation(
            "GET",
            many,
            "listNamespacedRateLimitPolicies",
            "Rate limit policies in a namespace",
            tag,
            list_namespaced,
            response_model=RateLimitPolicyList,
            responses=common,
            permission=Permission("list", RESOURCE),
            description="Filter: labelSelector.",
        )
    )
    registry.add(
        Operation(
            "POST",
            many,
            "createRateLimitPolicy",
            "Create a rate limit policy",
            tag,
            create,
            request_model=RateLimitPolicyCreate,
            response_model=RateLimitPolicy,
            responses={
                **common,
                201: "Created",
                409: "Already exists",
                413: "Body too large",
                415: "Not JSON",
            },
            permission=Permission("create", RESOURCE),
            description="Send Idempotency-Key to make retries safe.",
        )
    )
    registry.add(
        Operation(
            "GET",
            one,
            "getRateLimitPolicy",
            "Read a rate limit policy",
            tag,
            get_one,
            response_model=RateLimitPolicy,
            responses={**common, 404: "No such policy"},
            permission=Permission("get", RESOURCE),
        )
    )
    registry.add(
        Operation(
            "PATCH",
            one,
            "patchRateLimitPolicy",
            "Change a rate limit policy (JSON merge patch)",
            tag,
            patch,
            response_model=RateLimitPolicy,
            responses={**common, 404: "No such policy", 412: "If-Match does not match"},
            permission=Permission("patch", RESOURCE),
        )
    )
    registry.add(
        Operation(
            "DELETE",
            one,
            "deleteRateLimitPolicy",
            "Delete a rate limit policy",
            tag,
            delete,
            responses={
                **common,
                204: "Deleted",
                404: "No such policy",
                412: "If-Match does not match",
            },
            permission=Permission("delete", RESOURCE),
        )
    )
