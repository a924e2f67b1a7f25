"""Environments over REST: the same objects kubectl sees, read from the watch cache and
written to the apiserver as the caller.

``ETag`` is the object's resourceVersion; ``If-Match`` on PATCH and DELETE becomes a
resourceVersion precondition the apiserver enforces (412 when it fails). POST honours
``Idempotency-Key``. Errors from pydantic and from the apiserver (CEL messages included)
come out as one problem+json with field paths.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dockyard.api import errors, fanout, keys
from dockyard.api.audit import spec_diff
from dockyard.api.auth import Permission
from dockyard.api.bodies import read_json
from dockyard.api.idempotency import IdempotencyStore, request_hash, validate_key
from dockyard.api.openapi import Operation, OperationRegistry
from dockyard.api.routes.events import stream_events
from dockyard.api.routes.objects import caller as _caller
from dockyard.api.routes.objects import if_match as _if_match
from dockyard.api.routes.objects import merge as _merge
from dockyard.api.routes.objects import public as _public
from dockyard.api.routes.objects import respond as _respond
from dockyard.core import selectors
from dockyard.core.kube import KubeError
from dockyard.core.models.common import API_VERSION
from dockyard.core.models.environment import Environment, EnvironmentSpec

RESOURCE = "environments"
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$"


class ObjectMetaInput(BaseModel):
    """The metadata a client may set on a new environment."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=53,
        pattern=NAME_PATTERN,
        description="DNS-1123 label, unique in the namespace",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Kubernetes labels"
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Kubernetes annotations"
    )


class EnvironmentCreate(BaseModel):
    """The body of ``POST .../environments``."""

    model_config = ConfigDict(extra="forbid")

    api_version: str | None = Field(
        default=None, alias="apiVersion", description=f"optional; {API_VERSION}"
    )
    kind: str | None = Field(default=None, description="optional; Environment")
    metadata: ObjectMetaInput = Field(description="name, labels and annotations")
    spec: EnvironmentSpec = Field(description="the desired environment")


class EnvironmentList(BaseModel):
    """A page of environments, ordered by namespace and name."""

    items: list[Environment] = Field(description="the environments on this page")
    next_cursor: str | None = Field(
        default=None, alias="nextCursor", description="pass as ?cursor= for the next page"
    )
    resource_version: str = Field(
        alias="resourceVersion", description="the cache's resourceVersion for this list"
    )

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class ListQuery(BaseModel):
    """Query parameters of the environment lists."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    limit: int = Field(default=50, ge=1, le=500, description="page size")
    cursor: str | None = Field(default=None, max_length=512, description="from nextCursor")
    label_selector: str | None = Field(
        default=None,
        alias="labelSelector",
        max_length=1024,
        description="a Kubernetes label selector",
    )
    tier: str | None = Field(
        default=None, pattern="^(development|staging|production)$", description="only this tier"
    )
    phase: str | None = Field(default=None, max_length=32, description="only this phase")


# -- helpers ------------------------------------------------------------------------------


def _path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/dockyard.io/v1alpha1/namespaces/{namespace}/{RESOURCE}"
    return f"{base}/{name}" if name else base


def _query(request: web.Request) -> ListQuery:
    try:
        return ListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise errors.from_validation_error(exc, prefix="query") from None


def _filters(query: ListQuery) -> list[Any]:
    predicates: list[Any] = []
    if query.label_selector:
        try:
            requirements = selectors.parse(query.label_selector)
        except selectors.SelectorError as exc:
            raise errors.validation_failed(
                [errors.FieldError(field="query.labelSelector", message=str(exc))]
            ) from None
        predicates.append(
            lambda o: selectors.matches(requirements, o["metadata"].get("labels") or {})
        )
    if query.tier:
        predicates.append(lambda o: o.get("spec", {}).get("tier") == query.tier)
    if query.phase:
        predicates.append(lambda o: (o.get("status") or {}).get("phase") == query.phase)
    return predicates


def _encode_cursor(namespace: str, name: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([namespace, name]).encode()).decode().rstrip("=")


# Sorts after every object name (DNS subdomains use [a-z0-9.-]): "past this namespace".
_PAST_NAMESPACE = "~"


def _decode_cursor(cursor: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        namespace, name = json.loads(raw)
        return str(namespace), str(name)
    except (ValueError, binascii.Error, TypeError) as exc:
        raise errors.validation_failed(
            [errors.FieldError(field="query.cursor", message="not a cursor this API issued")]
        ) from exc


async def _page(request: web.Request, readable: fanout.Readable) -> web.Response:
    """A page of the environments in ``readable``; when it left namespaces unchecked, the
    list stops at the last one checked and ``nextCursor`` goes on from there."""
    query = _query(request)
    cache = request.app[keys.ENVIRONMENT_CACHE]
    await cache.wait_synced()
    predicates = _filters(query)
    after = _decode_cursor(query.cursor) if query.cursor else None
    through = readable.checked_through
    matched = cache.list(
        namespaces=set(readable.namespaces) if readable.namespaces is not None else None,
        predicate=lambda o: (
            all(p(o) for p in predicates)
            and (after is None or (o["metadata"]["namespace"], o["metadata"]["name"]) > after)
            and (through is None or o["metadata"]["namespace"] <= through)
        ),
    )
    page = matched[: query.limit]
    next_cursor = None
    if len(matched) > query.limit:
        last = page[-1]["metadata"]
        next_cursor = _encode_cursor(last["namespace"], last["name"])
    elif through is not None:
        next_cursor = _encode_cursor(through, _PAST_NAMESPACE)
    body = EnvironmentList(
        items=[],
        next_cursor=next_cursor,
        resource_version=str(cache.resource_version),
    ).model_dump(mode="json", by_alias=True)
    body["items"] = [_public(o) for o in page]
    return web.json_response(body)


# -- handlers -------------------------------------------------------------------------------


async def list_namespaced(request: web.Request) -> web.Response:
    return await _page(request, fanout.Readable(frozenset({request.match_info["namespace"]})))


async def list_all(request: web.Request) -> web.Response:
    cache = request.app[keys.ENVIRONMENT_CACHE]
    await cache.wait_synced()
    cursor = _query(request).cursor
    after = _decode_cursor(cursor) if cursor else None
    # Namespaces a page after the cursor could hold: none before its own, nor its own
    # once the cursor is past it.
    candidates = [ns for ns in cache.namespaces() if after is None or (ns, _PAST_NAMESPACE) > after]
    readable = await fanout.readable_namespaces(request, Permission("list", RESOURCE), candidates)
    return await _page(request, readable)


async def get_one(request: web.Request) -> web.Response:
    cache = request.app[keys.ENVIRONMENT_CACHE]
    await cache.wait_synced()
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    obj = cache.get(namespace, name)
    if obj is None:
        raise errors.not_found(f"Environment {namespace}/{name} does not exist.")
    return _respond(obj)


async def create(request: web.Request) -> web.Response:
    namespace = request.match_info["namespace"]
    raw = await read_json(request)
    key = request.headers.get("Idempotency-Key")
    store: IdempotencyStore | None = None
    actor = request[keys.PRINCIPAL].user
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
        try:
            body = EnvironmentCreate.model_validate(raw)
        except ValidationError as exc:
            raise errors.from_validation_error(exc) from None
        manifest = {
            "apiVersion": API_VERSION,
            "kind": "Environment",
            "metadata": body.metadata.model_dump(exclude_defaults=True),
            "spec": body.spec.model_dump(mode="json", exclude_none=True, by_alias=True),
        }
        created = await request.app[keys.KUBE].create(
            _path(namespace), manifest, as_caller=_caller(request)
        )
        request[keys.AUDIT] = spec_diff(None, created.get("spec"))
        await request.app[keys.ENVIRONMENT_CACHE].wait_for_version(
            created["metadata"]["resourceVersion"]
        )
        if store is not None and key is not None:
            await store.complete(actor=actor, key=key, status=201, body=_public(created))
    except BaseException:
        # Only a success is replayed: a failure frees the key for the retry.
        if store is not None and key is not None:
            await store.release(actor=actor, key=key)
        raise
    return _respond(created, status=201)


PATCHABLE = {"spec", "metadata"}
PATCHABLE_METADATA = {"labels", "annotations"}


async def patch(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    raw = await read_json(
        request, allowed=frozenset({"application/merge-patch+json", "application/json"})
    )
    if not isinstance(raw, dict):
        raise errors.validation_failed(
            [errors.FieldError(field="(body)", message="a JSON merge patch must be an object")]
        )
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
    if problems:
        raise errors.validation_failed(problems)
    cache = request.app[keys.ENVIRONMENT_CACHE]
    await cache.wait_synced()
    current = cache.get(namespace, name)
    if current is None:
        raise errors.not_found(f"Environment {namespace}/{name} does not exist.")
    expected = _if_match(request)
    if "spec" in raw:
        merged = _merge(current.get("spec"), raw["spec"])
        try:
            EnvironmentSpec.model_validate(merged)
        except ValidationError as exc:
            raise errors.from_validation_error(exc, prefix="spec") from None
    body = dict(raw)
    if expected is not None:
        body["metadata"] = {**metadata, "resourceVersion": expected}
    try:
        updated = await request.app[keys.KUBE].merge_patch(
            _path(namespace, name), body, as_caller=_caller(request)
        )
    except KubeError as exc:
        if exc.status == 409 and expected is not None:
            raise errors.precondition_failed(
                f"If-Match {expected} no longer matches Environment {namespace}/{name}; "
                "re-read it and retry."
            ) from None
        raise
    request[keys.AUDIT] = spec_diff(current.get("spec"), updated.get("spec"))
    await cache.wait_for_version(updated["metadata"]["resourceVersion"])
    return _respond(updated)


async def delete(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    expected = _if_match(request)
    options: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "propagationPolicy": "Foreground",
    }
    if expected is not None:
        options["preconditions"] = {"resourceVersion": expected}
    try:
        result = await request.app[keys.KUBE].request(
            "DELETE", _path(namespace, name), body=options, as_caller=_caller(request)
        )
    except KubeError as exc:
        if exc.status == 409 and expected is not None:
            raise errors.precondition_failed(
                f"If-Match {expected} no longer matches Environment {namespace}/{name}."
            ) from None
        raise
    # The object lives on while its finalizer runs the deletion policy: 202 says so.
    return web.json_response(
        _public(result) if result.get("kind") == "Environment" else result, status=202
    )


def register(registry: OperationRegistry) -> None:
    ns = "/api/v1/namespaces/{namespace}/environments"
    one = ns + "/{name}"
    common = {401: "No valid bearer token", 403: "Not allowed", 422: "Invalid request"}
    registry.add(
        Operation(
            "GET",
            "/api/v1/environments",
            "listEnvironments",
            "Environments in every namespace the caller may list",
            "environments",
            list_all,
            response_model=EnvironmentList,
            responses=common,
            description="Filters: labelSelector, tier, phase; cursor pagination.",
        )
    )
    registry.add(
        Operation(
            "GET",
            ns,
            "listNamespacedEnvironments",
            "Environments in a namespace",
            "environments",
            list_namespaced,
            response_model=EnvironmentList,
            responses=common,
            permission=Permission("list", RESOURCE),
        )
    )
    registry.add(
        Operation(
            "POST",
            ns,
            "createEnvironment",
            "Create an environment",
            "environments",
            create,
            request_model=EnvironmentCreate,
            response_model=Environment,
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
            "getEnvironment",
            "Read an environment",
            "environments",
            get_one,
            response_model=Environment,
            responses={**common, 404: "No such environment"},
            permission=Permission("get", RESOURCE),
        )
    )
    registry.add(
        Operation(
            "PATCH",
            one,
            "patchEnvironment",
            "Change an environment (JSON merge patch)",
            "environments",
            patch,
            response_model=Environment,
            responses={**common, 404: "No such environment", 412: "If-Match does not match"},
            permission=Permission("patch", RESOURCE),
        )
    )
    registry.add(
        Operation(
            "DELETE",
            one,
            "deleteEnvironment",
            "Delete an environment",
            "environments",
            delete,
            responses={
                **common,
                202: "Deletion started",
                404: "No such environment",
                412: "If-Match does not match",
            },
            permission=Permission("delete", RESOURCE),
        )
    )
    registry.add(
        Operation(
            "GET",
            "/api/v1/events",
            "streamEvents",
            "Server-sent events of environment changes",
            "events",
            stream_events,
            responses={
                401: "No valid bearer token",
                403: "Not allowed to watch environments in ?namespace=",
            },
            description="text/event-stream; one event per change the caller "
            "may watch; ?namespace= narrows it. The stream re-checks the caller's token "
            "and permission periodically and, once either is gone, ends with an "
            "'error' event whose data is a problem document.",
        )
    )
