"""The REST routes of a namespaced Dockyard kind served from a watch cache, declared once.

A kind describes itself with ``KindRoutes`` (its models and its cache) and gets the
same five operations as every other kind that does: list (with ``labelSelector``), get,
create (``Idempotency-Key``), JSON merge patch and delete (both with ``If-Match``), under
``/api/v1/namespaces/{namespace}/<plural>`` (``/api/v1/<plural>`` for a cluster-scoped
kind, such as BackupStores). Reads come from the cache; writes go to the
apiserver as the caller, so RBAC, the schema and the CEL rules decide as they do for
kubectl, and a write waits until the cache has caught up with it (read-your-writes).
The per-object details (ETag, If-Match, merge patch, the caller's token) are ``objects``'.

A kind with more to it (paged lists, extra routes, another answer to a delete) is a
subclass that overrides a handler and adjusts ``operations()``: ``recovery`` for the
backup and restore kinds, ``environments`` for Environments. The kind's names and the
operation builders are ``contract.KindContract``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from dockyard.api import errors, keys
from dockyard.api.audit.diff import spec_diff
from dockyard.api.bodies import read_json
from dockyard.api.cache import WatchCache
from dockyard.api.openapi import Operation, OperationRegistry
from dockyard.api.routes.contract import COMMON_RESPONSES, KindContract
from dockyard.api.routes.models import CreateBody, NewObjectMeta, create_body, list_body
from dockyard.api.routes.objects import (
    OPERATOR_BOOKKEEPING,
    caller,
    idempotent,
    if_match,
    merge,
    metadata_diff,
    public,
    read_merge_patch,
    respond,
)
from dockyard.api.routes.pages import LabelSelector, label_filter, parse_query, query_parameters
from dockyard.core import telemetry
from dockyard.core.kube import KubeError
from dockyard.core.models.common import CustomResource

Object = dict[str, Any]


def with_traceparent(metadata: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` with the request's trace in ``dockyard.io/traceparent``, so that the
    operator continues it for the reconcile this write causes (docs/observability.md)."""
    current = telemetry.traceparent()
    if current is None:
        return metadata
    annotations = dict(metadata.get("annotations") or {})
    annotations[telemetry.TRACEPARENT_ANNOTATION] = current
    return {**metadata, "annotations": annotations}


def _version_of(obj: Object) -> str | None:
    """The object's ``metadata.resourceVersion``."""
    version = (obj.get("metadata") or {}).get("resourceVersion")
    return str(version) if version is not None else None


# What a PATCH may hold: the fields ``objects.PATCHABLE`` names. ``null`` removes a field.
_STRING_MAP: dict[str, Any] = {
    "type": ["object", "null"],
    "additionalProperties": {"type": ["string", "null"]},
}
MERGE_PATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "metadata": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "properties": {"labels": _STRING_MAP, "annotations": _STRING_MAP},
        },
        "spec": {"type": "object", "description": "the fields of spec to change"},
    },
}


class PlainListQuery(BaseModel):
    """Query parameters of a kind's one-page list: the same selector as the paged lists
    take, refused (422), not cut short, past its length, so no filter is half applied."""

    model_config = ConfigDict(extra="forbid")

    label_selector: LabelSelector = None


@dataclass(frozen=True)
class KindRoutes(KindContract):
    """One kind's REST routes: ``model`` is its custom resource, ``cache`` its watch cache.

    ``create_model`` validates POST bodies (``metadata`` and ``spec``) and ``list_model``
    describes list answers (``items`` and ``resourceVersion``); the kind's spec model
    validates a patched spec before it is sent.
    """

    create_model: type[BaseModel]
    list_model: type[BaseModel]
    cache: web.AppKey[WatchCache]

    @staticmethod
    def where(request: web.Request) -> tuple[str | None, str]:
        """The namespace (None for a cluster-scoped kind) and name the path names."""
        return request.match_info.get("namespace"), request.match_info["name"]

    def described(self, namespace: str | None, name: str) -> str:
        """The object in words: ``Backup shop/nightly``, ``BackupStore default``."""
        return f"{self.kind} {name if namespace is None else f'{namespace}/{name}'}"

    def not_found(self, namespace: str | None, name: str) -> errors.Problem:
        return errors.not_found(f"{self.described(namespace, name)} does not exist.")

    async def synced(self, request: web.Request) -> WatchCache:
        """The kind's watch cache once it has synced, noted as what the answer is read from
        (the answer is marked stale while the apiserver is unreachable)."""
        cache = request.app[self.cache]
        await cache.wait_synced()
        request[keys.READ_FROM] = cache
        return cache

    async def cached(self, request: web.Request) -> Object:
        """The object the path names, from the cache once it has synced; 404 if none."""
        namespace, name = self.where(request)
        cache = await self.synced(request)
        obj = cache.get(namespace or "", name)
        if obj is None:
            raise self.not_found(namespace, name)
        return obj

    # -- handlers -------------------------------------------------------------------------

    async def list_namespaced(self, request: web.Request) -> web.Response:
        selector = parse_query(request, PlainListQuery).label_selector
        predicate = label_filter(selector) if selector else None
        cache = await self.synced(request)
        namespace = request.match_info.get("namespace")
        scope = None if namespace is None else {namespace}
        items = cache.list(namespaces=scope, predicate=predicate)
        return web.json_response(
            {"items": [public(o) for o in items], "resourceVersion": str(cache.resource_version)}
        )

    async def get_one(self, request: web.Request) -> web.Response:
        return respond(await self.cached(request))

    async def create(self, request: web.Request) -> web.Response:
        raw = await read_json(request)
        if isinstance(raw, dict):
            self.refuse_annotations(raw.get("metadata"))
        return await idempotent(request, raw, lambda: self._create(request, raw))

    async def _create(self, request: web.Request, raw: object) -> Object:
        try:
            body = cast(CreateBody, self.create_model.model_validate(raw))
        except ValidationError as exc:
            raise errors.from_validation_error(exc) from None
        # The path names only the collection: the row names the object by its body.
        request[keys.AUDIT_NAME] = body.metadata.name
        manifest = {
            "apiVersion": self.model.crd.api_version,
            "kind": self.kind,
            "metadata": with_traceparent(body.metadata.model_dump(exclude_defaults=True)),
            "spec": body.spec.model_dump(mode="json", exclude_none=True, by_alias=True),
        }
        created = await request.app[keys.KUBE].create(
            self.resource.path(request.match_info.get("namespace")),
            manifest,
            as_caller=caller(request),
        )
        request[keys.AUDIT] = {**spec_diff(None, created.get("spec")), **metadata_diff({}, created)}
        await request.app[self.cache].caught_up(created)
        return created

    async def patch(self, request: web.Request) -> web.Response:
        """The audit diff is taken against the version the patch applies to. With
        ``If-Match`` (or the read that cleared annotations) the patch is pinned to it.
        Without, it is first pinned to the cached object's version; a cache that was
        behind (409: someone else wrote just before) is read past, from the apiserver,
        and the patch sent again unpinned, so the client never gets a 409 it did not ask
        for (last write wins, as ever) and a change made before is not recorded as this
        caller's."""
        namespace, name = self.where(request)
        raw = await read_merge_patch(request)
        self.refuse_annotations(raw.get("metadata"))
        current = await self.cached(request)
        expected = if_match(request)
        raw, version = await self._clearing_annotations(request, raw, expected)
        pinned = expected or version
        for attempt in range(2):
            if pinned is not None and _version_of(current) != pinned:
                current = await self._fresh(request)
                if _version_of(current) != pinned:
                    raise self._changed(expected, namespace, name, clearing=version is not None)
            if "spec" in raw:
                try:
                    self.spec_model.model_validate(merge(current.get("spec"), raw["spec"]))
                except ValidationError as exc:
                    raise errors.from_validation_error(exc, prefix="spec") from None
            body = dict(raw)
            body["metadata"] = with_traceparent(dict(raw.get("metadata") or {}))
            if pinned is not None or attempt == 0:
                body["metadata"]["resourceVersion"] = pinned or _version_of(current)
            try:
                updated = await request.app[keys.KUBE].merge_patch(
                    self.resource.path(namespace, name), body, as_caller=caller(request)
                )
            except KubeError as exc:
                if exc.status != 409:
                    raise
                clearing = version is not None
                if pinned is not None or attempt == 1:  # (an unpinned patch is not refused)
                    raise self._changed(expected, namespace, name, clearing=clearing) from None
                current = await self._fresh(request)  # the cache was behind
                continue
            break
        request[keys.AUDIT] = {
            **spec_diff(current.get("spec"), updated.get("spec")),
            **metadata_diff(current, updated),
        }
        await request.app[self.cache].caught_up(updated)
        return respond(updated)

    async def _clearing_annotations(
        self, request: web.Request, raw: dict[str, Any], expected: str | None
    ) -> tuple[dict[str, Any], str | None]:
        """``raw`` with ``metadata.annotations: null`` ("remove every annotation") made
        into the removal, by name, of each annotation clients may remove, and the
        resourceVersion they were read at (None when the patch removes no such thing).

        They are read from the apiserver, as the caller, not from the cache, which may
        be behind: the patch is then sent with that version, so an annotation added since
        is never left behind unseen (the patch fails with 409 instead).
        """
        metadata = raw.get("metadata") or {}
        if "annotations" not in metadata or metadata["annotations"] is not None:
            return raw, None
        namespace, name = self.where(request)
        fresh = await request.app[keys.KUBE].get(
            self.resource.path(namespace, name), as_caller=caller(request)
        )
        version = str(fresh["metadata"]["resourceVersion"])
        if expected is not None and expected != version:
            raise self._no_longer_matches(expected, namespace, name)
        shown = fresh["metadata"].get("annotations") or {}
        cleared = {k: None for k in shown if self.refused_annotation(k) is None}
        return {**raw, "metadata": {**metadata, "annotations": cleared}}, version

    async def _fresh(self, request: web.Request) -> Object:
        """The object the path names, read from the apiserver as the caller."""
        namespace, name = self.where(request)
        found: Object = await request.app[keys.KUBE].get(
            self.resource.path(namespace, name), as_caller=caller(request)
        )
        return found

    def _changed(
        self, expected: str | None, namespace: str | None, name: str, *, clearing: bool
    ) -> errors.Problem:
        """The answer to a patch whose object changed under it (412 against the client's
        own ``If-Match``, else 409)."""
        if expected is not None:
            return self._no_longer_matches(expected, namespace, name)
        while_ = "its annotations were being removed" if clearing else "it was being patched"
        return errors.conflict(f"{self.described(namespace, name)} changed while {while_}; retry.")

    def _no_longer_matches(self, expected: str, namespace: str | None, name: str) -> errors.Problem:
        return errors.precondition_failed(
            f"If-Match {expected} no longer matches {self.described(namespace, name)}; "
            "re-read it and retry."
        )

    def refused_annotation(self, key: str) -> str | None:
        """Why clients may neither set nor remove the annotation ``key``; None if they may."""
        if key.startswith(OPERATOR_BOOKKEEPING):
            return "the operator's bookkeeping; not set or removed through this API"
        return None

    def refuse_annotations(self, metadata: object) -> None:
        """422 naming each annotation of a create's or a patch's ``metadata`` that clients
        may not write (``refused_annotation``), whatever value it is given, null included."""
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        if not isinstance(annotations, dict):
            return
        problems = [
            errors.InvalidField(f"metadata.annotations.{key}", reason)
            for key in sorted(annotations)
            if (reason := self.refused_annotation(key)) is not None
        ]
        if problems:
            raise errors.validation_failed(problems)

    async def delete(self, request: web.Request) -> web.Response:
        await self._delete(request)
        return web.Response(status=204)

    async def _delete(self, request: web.Request, **options: str) -> Object:
        """Delete the object as the caller, with ``If-Match`` as a precondition; the
        apiserver's answer (the object while finalizers run, else a Status)."""
        namespace, name = self.where(request)
        expected = if_match(request)
        body: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions", **options}
        if expected is not None:
            body["preconditions"] = {"resourceVersion": expected}
        try:
            return await request.app[keys.KUBE].request(
                "DELETE", self.resource.path(namespace, name), body=body, as_caller=caller(request)
            )
        except KubeError as exc:
            if exc.status == 409 and expected is not None:
                raise errors.precondition_failed(
                    f"If-Match {expected} no longer matches {self.described(namespace, name)}."
                ) from None
            raise

    # -- the contract ---------------------------------------------------------------------

    def register(self, registry: OperationRegistry) -> None:
        for operation in self.operations():
            registry.add(operation)

    def operations(self) -> list[Operation]:
        """The kind's operations, in the order the OpenAPI document lists them."""
        many = self.collection_path
        one = many + "/{name}"
        listed = "" if self.cluster_scoped else "Namespaced"
        where = "" if self.cluster_scoped else " in a namespace"
        a_noun = f"{'an' if self.noun[0] in 'aeiou' else 'a'} {self.noun}"
        missing = {**COMMON_RESPONSES, 404: f"No such {self.noun}"}
        changed = {**missing, 412: "If-Match does not match"}
        return [
            self.operation(
                "GET",
                many,
                f"list{listed}{self.plural_title}",
                f"{self.plural_title}{where}",
                self.list_namespaced,
                "list",
                response_model=self.list_model,
                description="Filter: labelSelector.",
                parameters=query_parameters(PlainListQuery),
            ),
            self.operation(
                "POST",
                many,
                f"create{self.kind}",
                f"Create {a_noun}",
                self.create,
                "create",
                request_model=self.create_model,
                response_model=self.model,
                responses={
                    **COMMON_RESPONSES,
                    201: "Created",
                    **({} if self.cluster_scoped else {404: "The namespace does not exist"}),
                    409: "Already exists",
                    413: "Body too large",
                    415: "Not JSON",
                },
                description="Send Idempotency-Key to make retries safe.",
            ),
            self.operation(
                "GET",
                one,
                f"get{self.kind}",
                f"Read {a_noun}",
                self.get_one,
                "get",
                response_model=self.model,
                responses=missing,
            ),
            self.operation(
                "PATCH",
                one,
                f"patch{self.kind}",
                f"Change {a_noun} (JSON merge patch)",
                self.patch,
                "patch",
                response_model=self.model,
                request_schema=MERGE_PATCH_SCHEMA,
                responses={
                    **changed,
                    409: "Changed while its annotations were being removed",
                    413: "Body too large",
                    415: "Not JSON",
                },
                description="A JSON merge patch (RFC 7396) of spec, metadata.labels and "
                "metadata.annotations; the patched spec must be valid as a whole. The "
                "operator's annotations (operator.dockyard.io/*) are refused, and "
                "`annotations: null` removes every other one (read from the apiserver as "
                "the caller, which needs `get` as well as `patch`).",
            ),
            self.operation(
                "DELETE",
                one,
                f"delete{self.kind}",
                f"Delete {a_noun}",
                self.delete,
                "delete",
                responses={**changed, 204: "Deleted"},
            ),
        ]


def plain_kind(
    model: type[CustomResource],
    metadata: type[NewObjectMeta],
    cache: web.AppKey[WatchCache],
    *,
    spec: str,
    objects: str,
) -> KindRoutes:
    """The routes of a kind with the contract and nothing more, its bodies in the words
    every such kind uses: ``spec`` says what its spec is, ``objects`` what its objects
    are called; its list is one page, ordered by name."""
    contract = KindContract(model)
    create = create_body(
        model,
        metadata,
        doc=f"The body of ``POST {contract.collection_path}``.",
        spec=spec,
    )
    where = "the cluster" if contract.cluster_scoped else "a namespace"
    listed = list_body(
        model,
        doc=f"The {objects} of {where}, ordered by name.",
        items=f"the {objects}",
        paged=False,
    )
    return KindRoutes(model, create, listed, cache)


__all__ = ["KindRoutes", "plain_kind", "with_traceparent"]
