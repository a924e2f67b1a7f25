"""An environment's children as the operator last applied them and as the watch sees them.

The operator watches its children (labelled ``app.kubernetes.io/managed-by=dockyard``)
into one Kopf index per kind (``index_child``), which Kopf fills before any handler
runs and keeps current from the same watch that reports drift. With it, a pass:

- applies a child only when its desired manifest differs from the one it last applied,
  or when the child is no longer the object it left (deleted, or its spec, labels or
  owners changed since): a pass that finds nothing to change writes nothing;
- tells what an apply did (created, updated, unchanged) from the object before it (the
  index's, or the one it last applied) and the apply's answer, without a GET first;
- deletes a child that should no longer exist only when the index holds one that the
  environment controls, without a GET first;
- reads the Deployment's replicas and rollout status from the index;
- finds the environment's ScalingPolicies, Backups and RestoreDrills in indexes by
  environment (``index_by_environment``) instead of listing them.

Without an index (a reconciler made outside Kopf), every apply and deletion asks the
apiserver first, as ``dockyard.operator.apply`` does on its own.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from dockyard.core.kube import KubeClient
from dockyard.core.resources import (
    BACKUPS,
    RESTORE_DRILLS,
    SCALING_POLICIES,
    ChildRef,
    Manifest,
    ResourceType,
    resource_type,
)
from dockyard.operator import apply as writes
from dockyard.operator.apply import Applied, Change

RELATED_TYPES: Final = (SCALING_POLICIES, BACKUPS, RESTORE_DRILLS)
"""The kinds a pass reads by environment."""

ChildKey = tuple[str, str, str]
"""A child's namespace, kind and name."""


@dataclass(frozen=True, slots=True)
class Seen:
    """What the operator needs to know of one child, as stored: small, so a thousand
    environments' children fit in the index."""

    uid: str
    revision: tuple[Any, ...]
    controller_uid: str | None
    deployment: Manifest | None = None
    """A Deployment's generation, ``spec.replicas`` and status; ``None`` for other kinds."""

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Seen:
        meta = obj.get("metadata") or {}
        controller = next(
            (r.get("uid") for r in meta.get("ownerReferences") or () if r.get("controller")),
            None,
        )
        deployment = None
        if obj.get("kind") == "Deployment":
            deployment = {
                "metadata": {"generation": meta.get("generation")},
                "spec": {"replicas": (obj.get("spec") or {}).get("replicas")},
                "status": dict(obj.get("status") or {}),
            }
        return cls(str(meta.get("uid", "")), writes.revision(obj), controller, deployment)


def index_child(
    *, namespace: str | None, name: str | None, body: Mapping[str, Any], **_: Any
) -> dict[ChildKey, Seen]:
    """Kopf's indexing function for every child kind: its key and what is known of it."""
    return {(namespace or "", str(body.get("kind")), name or ""): Seen.of(body)}


def index_id(rtype: ResourceType) -> str:
    """The id of the Kopf index of ``rtype``'s children (and its keyword in handlers)."""
    return f"children_{rtype.plural}"


def index_by_environment(
    *, namespace: str | None, body: Mapping[str, Any], **_: Any
) -> dict[tuple[str, str], Manifest]:
    """Kopf's indexing function for the kinds that name an environment (a ScalingPolicy's
    ``targetRef``, a Backup's or RestoreDrill's ``environmentRef``): the object as stored,
    under its namespace and environment."""
    spec = body.get("spec") or {}
    ref = spec.get("environmentRef") or spec.get("targetRef") or {}
    name = ref.get("name") if isinstance(ref, Mapping) else None
    if not isinstance(name, str):
        return {}
    return {(namespace or "", name): copy.deepcopy(dict(body))}


def related_index_id(rtype: ResourceType) -> str:
    """The id of the Kopf index of ``rtype``'s objects by environment."""
    return f"{rtype.plural}_by_environment"


class ChildMemory:
    """What a reconciler last applied to each child, beside Kopf's indexes of them."""

    def __init__(self) -> None:
        self._applied: dict[ChildKey, tuple[str, Seen]] = {}
        self._indexes: dict[str, Mapping[ChildKey, Iterable[Seen]]] | None = None
        self._related: dict[str, Mapping[tuple[str, str], Iterable[Manifest]]] = {}

    def watch(
        self,
        indexes: Mapping[str, Mapping[ChildKey, Iterable[Seen]]],
        related: Mapping[str, Mapping[tuple[str, str], Iterable[Manifest]]] | None = None,
    ) -> None:
        """Use Kopf's live indexes: the children's keyed by kind (see ``index_id``), the
        related kinds' by plural (see ``related_index_id``)."""
        self._indexes = dict(indexes)
        self._related = dict(related or {})

    def related(
        self, rtype: ResourceType, namespace: str, environment: str
    ) -> list[Manifest] | None:
        """The objects of ``rtype`` that name ``environment``, from the index; ``None``
        without one (the caller lists them)."""
        index = self._related.get(rtype.plural)
        if index is None:
            return None
        return list(index.get((namespace, environment), ()))

    def seen(self, namespace: str, kind: str, name: str) -> Seen | None:
        """The child as the watch last saw it; ``None``: there is none (or no index)."""
        if self._indexes is None:
            return None
        key = (namespace, kind, name)
        return next(iter(self._indexes.get(kind, {}).get(key, ())), None)

    def only_status_changed(self, body: Mapping[str, Any]) -> bool:
        """Whether ``body`` (a child as a watch event shows it) is the object this memory
        last applied, changed only where the operator does not write (its status)."""
        meta = body.get("metadata") or {}
        key = (meta.get("namespace") or "", str(body.get("kind")), meta.get("name") or "")
        remembered = self._applied.get(key)
        return remembered is not None and _same_object(remembered[1], Seen.of(body))

    def forget(self, owner_uid: str) -> None:
        """Drop what was remembered of the children of an owner that is gone."""
        for key in [
            k for k, (_, seen) in self._applied.items() if seen.controller_uid == owner_uid
        ]:
            del self._applied[key]

    async def claim(self, kube: KubeClient, manifest: Manifest) -> None:
        """``ChildConflict`` when an object of the child's name exists that its owner
        does not control. Free for a child the index holds under its owner; otherwise
        (a new child, or one made by hand, which the index never sees) one GET."""
        owner = writes.manifest_controller(manifest)
        if self._indexes is None or owner is None:
            return  # writes.apply reads the object and checks it itself
        meta = manifest["metadata"]
        current = self.seen(meta["namespace"], manifest["kind"], meta["name"])
        if current is not None and current.controller_uid == owner:
            return
        writes.check_claim(await writes.get(kube, writes.object_path(manifest)), manifest)

    async def apply(self, kube: KubeClient, manifest: Manifest) -> Applied:
        """Apply ``manifest`` unless the child is still as this memory last applied it.

        The caller has claimed it (:meth:`claim`) first, with its siblings, so that a
        conflict stops the pass before any of them is applied."""
        if self._indexes is None:
            return await writes.apply(kube, manifest)
        meta = manifest["metadata"]
        key = (meta["namespace"], manifest["kind"], meta["name"])
        digest = _digest(manifest)
        current = self.seen(*key)
        remembered = self._applied.get(key)
        if (
            remembered is not None
            and current is not None
            and remembered[0] == digest
            and _same_object(remembered[1], current)
        ):
            return Applied(ChildRef.of(manifest), Change.UNCHANGED, _object(current))
        after = await writes.apply_as(kube, manifest)
        now = Seen.of(after)
        self._applied[key] = (digest, now)
        before = current or (remembered[1] if remembered else None)
        if before is None or before.uid != now.uid:
            change = Change.CREATED
        elif before.revision != now.revision:
            change = Change.UPDATED
        else:
            change = Change.UNCHANGED
        return Applied(ChildRef.of(manifest), change, after)

    async def delete(
        self, kube: KubeClient, ref: ChildRef, *, namespace: str, owner_uid: str
    ) -> bool:
        """Delete a child that should no longer exist, if the owner controls it."""
        self._applied.pop((namespace, ref.kind, ref.name), None)
        if self._indexes is None:
            return await writes.delete_child(kube, ref, namespace=namespace, owner_uid=owner_uid)
        current = self.seen(namespace, ref.kind, ref.name)
        if current is None or current.controller_uid != owner_uid:
            return False
        path = resource_type(ref.api_version, ref.kind).path(namespace, ref.name)
        return await writes.delete(kube, path, uid=current.uid)


def _same_object(left: Seen, right: Seen) -> bool:
    return left.uid == right.uid and left.revision == right.revision


def _object(seen: Seen) -> Manifest:
    """The stored object as far as a pass reads it (the Deployment's replicas and status)."""
    return dict(seen.deployment or {})


def _digest(manifest: Manifest) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
