"""The REST routes of a namespaced Dockyard kind served from a watch cache, declared once.

A kind describes itself with ``KindRoutes`` (its models and its cache) and gets the
same five operations as every other kind that does: list (with ``labelSelector``), get,
create (``Idempotency-Key``), JSON merge patch and delete (both with ``If-Match``), under
``/api/v1/namespaces/{namespace}/<plural>``. Reads come from the cache; writes go to the
apiserver as the caller, so RBAC, the schema and the CEL rules decide as they do for
kubectl, and a write waits until the cache has caught up with it (read-your-writes).
The per-object details (ETag, If-Match, merge patch, the caller's token) are ``objects``'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, cast

from aiohttp import web
from pydantic import BaseModel, ValidationError

from dockyard.api import errors, keys
from dockyard.api.audit import spec_diff
from dockyard.api.auth import Permission
from dockyard.api.bodies import read_json
from dockyard.api.cache import WatchCache
from dockyard.api.idempotency import IdempotencyStore, request_hash, validate_key
from dockyard.api.openapi import Operation, OperationRegistry
from dockyard.api.routes.objects import caller, if_match, merge, public, respond
from dockyard.core import selectors
from dockyard.core.kube import KubeError
from dockyard.core.models.common import CustomResource
from dockyard.core.resources import ResourceType, resource_type

PATCHABLE = frozenset({"spec", "metadata"})
PATCHABLE_METADATA = frozenset({"labels", "annotations"})
MERGE_PATCH_TYPES = frozenset({"application/merge-patch+json", "application/json"})
COMMON_RESPONSES = {401: "No valid bearer token", 403: "Not allowed", 422: "Invalid request"}


class CreateBody(Protocol):
    """What a kind's create model holds: the new object's metadata and spec."""

    metadata: BaseModel
    spec: BaseModel


@dataclass(frozen=True)
class KindRoutes:
    """One kind's REST routes.

    ``create_model`` validates POST bodies (``metadata`` and ``spec``), ``list_model``
    describes list answers (``items`` and ``resourceVersion``), and ``spec_model``
    validates a patched spec before it is sent. ``plural_title`` (``ScalingPolicies``)
    and ``noun`` (``scaling policy``) name the operations.
    """

    model: type[CustomResource]
    spec_model: type[BaseModel]
    create_model: type[BaseModel]
    list_model: type[BaseModel]
    cache: web.AppKey[WatchCache]
    plural_title: str
    noun: str

    @property
    def plural(self) -> str:
        return self.model.crd.plural

    @property
    def kind(self) -> str:
        return self.model.crd.kind

    @property
    def resource(self) -> ResourceType:
        return resource_type(self.model.crd.api_version, self.kind)

    def _not_found(self, namespace: str, name: str) -> errors.Problem:
        return errors.not_found(f"{self.kind} {namespace}/{name} does not exist.")

    # -- handlers -------------------------------------------------------------------------

    async def list_namespaced(self, request: web.Request) -> web.Response:
        namespace = request.match_info["namespace"]
        unknown = set(request.query) - {"labelSelector"}
        if unknown:
            raise errors.validation_failed(
                [
                    errors.FieldError(field=f"query.{k}", message="unknown parameter")
                    for k in sorted(unknown)
                ]
            )
        requirements = None
        selector = request.query.get("labelSelector")
        if selector:
            try:
                requirements = selectors.parse(selector[:1024])
            except selectors.SelectorError as exc:
                raise errors.validation_failed(
                    [errors.FieldError(field="query.labelSelector", message=str(exc))]
                ) from None
        cache = request.app[self.cache]
        await cache.wait_synced()
        items = cache.list(
            namespaces={namespace},
            predicate=None
            if requirements is None
            else lambda o: selectors.matches(requirements, o["metadata"].get("labels") or {}),
        )
        return web.json_response(
            {"items": [public(o) for o in items], "resourceVersion": str(cache.resource_version)}
        )

    async def get_one(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        cache = request.app[self.cache]
        await cache.wait_synced()
        obj = cache.get(namespace, name)
        if obj is None:
            raise self._not_found(namespace, name)
        return respond(obj)

    async def create(self, request: web.Request) -> web.Response:
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
            created = await self._create(request, namespace, raw)
            if store is not None and key is not None:
                await store.complete(actor=actor, key=key, status=201, body=public(created))
        except BaseException:
            # Only a success is replayed: a failure frees the key for the retry.
            if store is not None and key is not None:
                await store.release(actor=actor, key=key)
            raise
        return respond(created, status=201)

    async def _create(self, request: web.Request, namespace: str, raw: object) -> dict[str, Any]:
        try:
            body = cast(CreateBody, self.create_model.model_validate(raw))
        except ValidationError as exc:
            raise errors.from_validation_error(exc) from None
        manifest = {
            "apiVersion": self.model.crd.api_version,
            "kind": self.kind,
            "metadata": body.metadata.model_dump(exclude_defaults=True),
            "spec": body.spec.model_dump(mode="json", exclude_none=True, by_alias=True),
        }
        created = await request.app[keys.KUBE].create(
            self.resource.path(namespace), manifest, as_caller=caller(request)
        )
        request[keys.AUDIT] = spec_diff(None, created.get("spec"))
        await request.app[self.cache].wait_for_version(created["metadata"]["resourceVersion"])
        return created

    async def patch(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        raw = await read_json(request, allowed=MERGE_PATCH_TYPES)
        if not isinstance(raw, dict):
            raise errors.validation_failed(
                [errors.FieldError(field="(body)", message="a JSON merge patch must be an object")]
            )
        problems = _patch_problems(raw)
        if problems:
            raise errors.validation_failed(problems)
        cache = request.app[self.cache]
        await cache.wait_synced()
        current = cache.get(namespace, name)
        if current is None:
            raise self._not_found(namespace, name)
        expected = if_match(request)
        if "spec" in raw:
            try:
                self.spec_model.model_validate(merge(current.get("spec"), raw["spec"]))
            except ValidationError as exc:
                raise errors.from_validation_error(exc, prefix="spec") from None
        body = dict(raw)
        if expected is not None:
            body["metadata"] = {**(raw.get("metadata") or {}), "resourceVersion": expected}
        try:
            updated = await request.app[keys.KUBE].merge_patch(
                self.resource.path(namespace, name), body, as_caller=caller(request)
            )
        except KubeError as exc:
            if exc.status == 409 and expected is not None:
                raise errors.precondition_failed(
                    f"If-Match {expected} no longer matches {self.kind} {namespace}/{name}; "
                    "re-read it and retry."
                ) from None
            raise
        request[keys.AUDIT] = spec_diff(current.get("spec"), updated.get("spec"))
        await cache.wait_for_version(updated["metadata"]["resourceVersion"])
        return respond(updated)

    async def delete(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        expected = if_match(request)
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if expected is not None:
            options["preconditions"] = {"resourceVersion": expected}
        try:
            await request.app[keys.KUBE].request(
                "DELETE",
                self.resource.path(namespace, name),
                body=options,
                as_caller=caller(request),
            )
        except KubeError as exc:
            if exc.status == 409 and expected is not None:
                raise errors.precondition_failed(
                    f"If-Match {expected} no longer matches {self.kind} {namespace}/{name}."
                ) from None
            raise
        return web.Response(status=204)

    # -- the contract ---------------------------------------------------------------------

    def register(self, registry: OperationRegistry) -> None:
        many = f"/api/v1/namespaces/{{namespace}}/{self.plural}"
        one = many + "/{name}"
        tag = self.plural
        missing = {404: f"No such {self.noun}"}
        registry.add(
            Operation(
                "GET",
                many,
                f"listNamespaced{self.plural_title}",
                f"{self.plural_title} in a namespace",
                tag,
                self.list_namespaced,
                response_model=self.list_model,
                responses=COMMON_RESPONSES,
                permission=Permission("list", self.plural),
                description="Filter: labelSelector.",
            )
        )
        registry.add(
            Operation(
                "POST",
                many,
                f"create{self.kind}",
                f"Create a {self.noun}",
                tag,
                self.create,
                request_model=self.create_model,
                response_model=self.model,
                responses={
                    **COMMON_RESPONSES,
                    201: "Created",
                    409: "Already exists",
                    413: "Body too large",
                    415: "Not JSON",
                },
                permission=Permission("create", self.plural),
                description="Send Idempotency-Key to make retries safe.",
            )
        )
        registry.add(
            Operation(
                "GET",
                one,
                f"get{self.kind}",
                f"Read a {self.noun}",
                tag,
                self.get_one,
                response_model=self.model,
                responses={**COMMON_RESPONSES, **missing},
                permission=Permission("get", self.plural),
            )
        )
        registry.add(
            Operation(
                "PATCH",
                one,
                f"patch{self.kind}",
                f"Change a {self.noun} (JSON merge patch)",
                tag,
                self.patch,
                response_model=self.model,
                responses={**COMMON_RESPONSES, **missing, 412: "If-Match does not match"},
                permission=Permission("patch", self.plural),
            )
        )
        registry.add(
            Operation(
                "DELETE",
                one,
                f"delete{self.kind}",
                f"Delete a {self.noun}",
                tag,
                self.delete,
                responses={
                    **COMMON_RESPONSES,
                    **missing,
                    204: "Deleted",
                    412: "If-Match does not match",
                },
                permission=Permission("delete", self.plural),
            )
        )


def _patch_problems(raw: dict[str, Any]) -> list[errors.FieldError]:
    """The parts of a merge patch this API does not let clients change."""
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


__all__ = ["CreateBody", "KindRoutes"]
