"""The one way the operator changes Kubernetes objects: apply, patch, create and delete.

Every write of the operator goes through this module, and so does the meaning of the
answers that are not errors:

- **apply** (server-side): reconcilers compute whole manifests
  (``dockyard.operator.builders``) and hand them here. Idempotent: the operator's field
  manager owns every field it sets, ``force`` takes back fields someone changed by hand,
  and fields it stops setting are removed. A child is applied only over nothing or
  over an object its owner controls: an object of that name made by hand or by another
  controller raises ``ChildConflict`` (:func:`check_claim`) and is left as it is, since a
  forced apply would take it over and the owner's deletion would then delete it.
- **patch** (JSON merge patch, the status subresource included): 404 means the object
  was deleted meanwhile, which is no error (its finalizer or its garbage collection
  does the rest); the caller learns it from the ``False`` it gets back. Writes are last
  write wins: a status write carries no more than the resourceVersion it was just read
  at, which binds it to its object (``uid``), so that an object made again under the
  name never takes another's status; it reads again on 409 (:func:`patch_status`). A
  patch of a custom resource names its object's uid too (:func:`merge_patch`).
- **create**: 409 means an earlier pass created it already (names are deterministic),
  which is no error either. :func:`create_object` gives the object as the create
  answered it, for a caller that must know the uid it made.
- **delete**: an object already gone (404), or whose name now belongs to another object
  (409 on the uid precondition), counts as not deleted by this call. A child that
  should no longer exist is deleted only when the owner controls it.

The paths come from ``dockyard.core.resources``, the one table of resource types.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import NAMESPACES, ChildRef, Manifest, ResourceType, resource_type

FIELD_MANAGER: Final = "dockyard-operator"
# Reads and writes a uid-bound status patch tries before a 409 is the caller's, and
# the longest pause (seconds) before each retry, times the attempts made.
STATUS_ATTEMPTS: Final = 5
STATUS_RETRY_PAUSE: Final = 0.05
# Objects one page of ``paged`` asks for.
PAGE_SIZE: Final = 500


def object_path(manifest: Mapping[str, Any], subresource: str | None = None) -> str:
    """The API path of the object a manifest describes."""
    meta = manifest["metadata"]
    rtype = resource_type(manifest["apiVersion"], manifest["kind"])
    return rtype.path(meta["namespace"], meta["name"], subresource)


class Change(StrEnum):
    """What applying a manifest did to the object."""

    CREATED = "Created"
    UPDATED = "Updated"
    UNCHANGED = "Unchanged"


@dataclass(frozen=True, slots=True)
class Applied:
    """One applied child: what happened to it, and the object as the API server returned it."""

    ref: ChildRef
    change: Change
    object: Manifest


class ChildConflict(Exception):
    """An object has the name of a child, and the child's owner does not control it."""

    reason: Final = "ChildConflict"

    def __init__(self, manifest: Mapping[str, Any], existing: Mapping[str, Any]) -> None:
        meta = manifest["metadata"]
        owner = next(r for r in meta["ownerReferences"] if r.get("controller"))
        holder = next(
            (
                f"{r.get('kind')} {r.get('name')}"
                for r in existing.get("metadata", {}).get("ownerReferences", ())
                if r.get("controller")
            ),
            None,
        )
        # Another owner is named only when it lives in this namespace: a name the tenant
        # could list anyway.
        whose = f"it belongs to {holder}" if holder else "it was not made by Dockyard"
        self.message = (
            f"{manifest['kind']} {meta['name']} exists and is not this {owner['kind']}'s "
            f"({whose}); it is left as it is. Rename the {owner['kind']}, or have that "
            "object removed."
        )
        super().__init__(self.message)


def manifest_controller(manifest: Mapping[str, Any]) -> str | None:
    """The uid of the owner a manifest names as its controller, if it names one."""
    for ref in manifest.get("metadata", {}).get("ownerReferences", ()):
        if ref.get("controller"):
            return str(ref.get("uid"))
    return None


def check_claim(existing: Mapping[str, Any] | None, manifest: Mapping[str, Any]) -> None:
    """``ChildConflict`` unless ``manifest`` may be applied over ``existing``: there is
    nothing there, or what is there is controlled by the manifest's own controller."""
    owner = manifest_controller(manifest)
    if existing is None or owner is None or controlled_by(existing, owner):
        return
    raise ChildConflict(manifest, existing)


async def apply(kube: KubeClient, manifest: Manifest) -> Applied:
    """Server-side apply ``manifest`` and report whether that created or changed the object.

    The object is read first to refuse taking over one the manifest's owner does not
    control (``ChildConflict``), and to tell the caller what the apply did (a child that
    was missing, or that differed, is drift when the spec did not change).
    """
    path = object_path(manifest)
    before = await get(kube, path)
    check_claim(before, manifest)
    after = await kube.apply(path, manifest, field_manager=FIELD_MANAGER)
    if before is None:
        change = Change.CREATED
    elif revision(before) != revision(after):
        change = Change.UPDATED
    else:
        change = Change.UNCHANGED
    return Applied(ChildRef.of(manifest), change, after)


async def apply_as(
    kube: KubeClient, manifest: Manifest, *, field_manager: str = FIELD_MANAGER
) -> Manifest:
    """Server-side apply ``manifest`` as ``field_manager``, without reading it first.

    For objects whose change the caller does not report (a runner Job, its identity,
    a field handed over to another manager); returns the object as stored.
    """
    return await kube.apply(object_path(manifest), manifest, field_manager=field_manager)


async def create(kube: KubeClient, manifest: Manifest) -> bool:
    """Create ``manifest`` (cluster-scoped when it has no namespace); ``False`` when an
    object of that name exists already (409)."""
    return await create_object(kube, manifest) is not None


async def create_object(kube: KubeClient, manifest: Manifest) -> Manifest | None:
    """Create ``manifest`` as :func:`create` does: the object as the API server answered
    the create (its ``metadata.uid`` is the one this call made, which a read afterwards
    cannot promise: the name may have been deleted and taken again in between), or
    ``None`` when an object of that name exists already (409)."""
    meta = manifest["metadata"]
    rtype = resource_type(manifest["apiVersion"], manifest["kind"])
    namespace = meta.get("namespace")
    path = rtype.path(namespace) if namespace else rtype.cluster_path()
    try:
        return await kube.create(path, manifest)
    except KubeError as exc:
        if exc.status == 409:
            return None
        raise


async def merge_patch(
    kube: KubeClient, path: str, body: Mapping[str, Any], *, uid: str | None = None
) -> bool:
    """JSON merge patch the object at ``path``; ``False`` when it is gone (404).

    With ``uid``, only that object: ``False`` too when the name now belongs to another.
    The patch carries the uid, which the apiserver refuses to change (422 on
    ``metadata.uid``). Not for the status subresource, which drops it: :func:`patch_status`.
    """
    if uid:
        body = {**body, "metadata": {**(body.get("metadata") or {}), "uid": uid}}
    try:
        await kube.merge_patch(path, body)
    except KubeError as exc:
        if exc.status == 404 or (uid and _refused_field(exc, "metadata.uid")):
            return False
        raise
    return True


def _refused_field(exc: KubeError, field: str) -> bool:
    """Whether the apiserver refused the request as invalid for ``field``."""
    causes = (exc.body.get("details") or {}).get("causes") or []
    return exc.status == 422 and any(cause.get("field") == field for cause in causes)


async def patch_status(
    kube: KubeClient,
    rtype: ResourceType,
    namespace: str | None,
    name: str,
    status: Mapping[str, Any],
    *,
    uid: str | None,
    only_if: Callable[[Mapping[str, Any]], bool] | None = None,
) -> bool:
    """Merge ``status`` into the status subresource of the object ``uid``; ``False`` when
    it is gone or the name now belongs to another object, or when ``only_if`` (asked of
    the object as read before each attempt) says the write no longer applies.

    The status subresource drops ``metadata.uid`` from a merge patch, but keeps
    ``metadata.resourceVersion`` as a precondition: the object is read, its uid checked,
    and the patch sent with the version read, so an object made again under the name in
    between answers 409 instead of taking the status. A 409 from any other write in
    between reads again, after a short jittered pause (the last write still wins);
    after ``STATUS_ATTEMPTS`` the 409 is raised. A uid is required: a status written
    for whatever object has the name is what this guards against.
    """
    if not uid:
        raise ValueError(f"a status write names its object's uid ({rtype.kind} {name})")
    path = rtype.path(namespace, name, "status")
    attempts = 0
    while True:
        found = await get(kube, rtype.path(namespace, name))
        meta = (found or {}).get("metadata") or {}
        if meta.get("uid") != uid or (only_if is not None and not only_if(found or {})):
            return False
        version = {"resourceVersion": meta.get("resourceVersion")}
        attempts += 1
        try:
            await kube.merge_patch(path, {"metadata": version, "status": status})
        except KubeError as exc:
            if exc.status == 404:
                return False
            if exc.status != 409 or attempts == STATUS_ATTEMPTS:
                raise
            pause = random.uniform(0, STATUS_RETRY_PAUSE * attempts)  # noqa: S311  # nosec B311
            await asyncio.sleep(pause)  # jitter, not a secret
            continue
        return True


def revision(obj: Mapping[str, Any]) -> tuple[Any, ...]:
    """What changes when an object's desired state does, but not when only its status does.

    Kinds with a ``generation`` bump it on spec changes only; for the others (Secrets,
    Services, ServiceAccounts) the operator never writes status, so the resourceVersion
    serves. Labels and owner references count, as the operator sets them too.
    """
    meta = obj.get("metadata", {})
    version = meta.get("generation") or meta.get("resourceVersion")
    return (version, meta.get("labels"), meta.get("ownerReferences"))


async def get(kube: KubeClient, path: str) -> Manifest | None:
    """The object at ``path``, or ``None`` when there is none."""
    try:
        return await kube.get(path)
    except KubeError as exc:
        if exc.status == 404:
            return None
        raise


async def items(
    kube: KubeClient,
    rtype: ResourceType,
    namespace: str | None,
    *,
    params: Mapping[str, str] | None = None,
) -> list[Manifest]:
    """The objects of ``rtype`` in ``namespace`` (of a cluster-scoped kind with None); none
    when the kind is not installed (404). One request: for a kind that may be large
    across every namespace, ``paged``."""
    return [item async for item in paged(kube, rtype, namespace, params=params, limit=None)]


async def paged(
    kube: KubeClient,
    rtype: ResourceType,
    namespace: str | None,
    *,
    params: Mapping[str, str] | None = None,
    limit: int | None = PAGE_SIZE,
    absent_is_empty: bool = True,
) -> AsyncIterator[Manifest]:
    """``items``, ``limit`` at a time (the apiserver's ``continue``), so that a kind
    listed across every namespace is never held whole; ``limit`` None: one request.
    ``absent_is_empty`` False: a kind not installed (404) raises, for a caller that
    must not mistake it for "there are none"."""
    path = rtype.path(namespace) if namespace is not None else rtype.cluster_path()
    token: str | None = None
    while True:
        asked = dict(params or {})
        if limit is not None:
            asked["limit"] = str(limit)
        if token is not None:
            asked["continue"] = token
        try:
            listing = await kube.get(path, params=asked or params)
        except KubeError as exc:
            if exc.status == 404 and absent_is_empty:
                return
            raise
        for item in listing.get("items") or ():
            yield item
        token = (listing.get("metadata") or {}).get("continue") or None
        if token is None or limit is None:
            return


async def delete(
    kube: KubeClient, path: str, *, uid: str | None = None, resource_version: str | None = None
) -> bool:
    """Delete the object at ``path`` (only if its uid is ``uid``, and only if it is still
    at ``resource_version``, when given: a decision made on what was read).

    Returns whether this call deleted it: ``False`` when it was already gone (404), or
    when a precondition failed: the name now belongs to another object, or the object
    changed since it was read.
    """
    options: Manifest = {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "propagationPolicy": "Background",
    }
    preconditions = {"uid": uid, "resourceVersion": resource_version}
    if any(preconditions.values()):
        options["preconditions"] = {k: v for k, v in preconditions.items() if v}
    try:
        await kube.delete(path, body=options)
    except KubeError as exc:
        if exc.status in (404, 409):
            return False
        raise
    return True


async def delete_child(kube: KubeClient, ref: ChildRef, *, namespace: str, owner_uid: str) -> bool:
    """Delete a child that should no longer exist, if the owner controls it.

    An object of that name that the owner does not control (made by hand, or by another
    controller) is left alone: deleting it would be a surprise, not a repair.
    """
    path = resource_type(ref.api_version, ref.kind).path(namespace, ref.name)
    current = await get(kube, path)
    if current is None or not controlled_by(current, owner_uid):
        return False
    return await delete(kube, path, uid=current["metadata"].get("uid"))


async def namespace_uid(kube: KubeClient, namespace: str) -> str:
    """The uid of the namespace now named ``namespace`` ("" if there is none): what tells
    it from an earlier namespace of that name, as a namespace's name may be used again."""
    found = await get(kube, NAMESPACES.path(None, namespace))
    return str(((found or {}).get("metadata") or {}).get("uid") or "")


def namespace_terminating(exc: KubeError) -> bool:
    """Whether the API server refused a write because the namespace is being deleted.

    Everything in it is about to go, the owner included; there is nothing to repair.
    """
    causes = exc.body.get("details", {}).get("causes", ())
    return exc.status == 403 and any(c.get("reason") == "NamespaceTerminating" for c in causes)


def controlled_by(obj: Mapping[str, Any], owner_uid: str) -> bool:
    """Whether ``owner_uid`` is the controller owner of ``obj``."""
    return any(
        ref.get("uid") == owner_uid and ref.get("controller")
        for ref in obj.get("metadata", {}).get("ownerReferences", ())
    )


def controller_of(obj: Mapping[str, Any], kind: str) -> str | None:
    """The name of the ``kind`` (in Dockyard's API group) that controls ``obj``, if any."""
    for ref in obj.get("metadata", {}).get("ownerReferences", ()):
        if (
            ref.get("controller")
            and ref.get("kind") == kind
            and ref.get("apiVersion") == (API_VERSION)
        ):
            name = ref.get("name")
            return str(name) if name else None
    return None
