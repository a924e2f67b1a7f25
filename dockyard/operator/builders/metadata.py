"""What every child object carries, whichever kind owns it.

This module owns the shape of a manifest (``Manifest``), how a child is named without
its content (``ChildRef``), the owner reference that ties a child to its custom
resource (so Kubernetes' garbage collector removes it with its owner), and the
recommended ``app.kubernetes.io`` labels by which the operator and people find them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from dockyard.core.models.common import CustomResource
from dockyard.core.resources import Manifest

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "dockyard"
PART_OF_LABEL: Final = "app.kubernetes.io/part-of"
NAME_LABEL: Final = "app.kubernetes.io/name"
INSTANCE_LABEL: Final = "app.kubernetes.io/instance"


@dataclass(frozen=True, slots=True)
class Owner:
    """The identity of a custom resource as its children refer to it."""

    api_version: str
    kind: str
    name: str
    namespace: str
    uid: str

    @classmethod
    def of(cls, resource: CustomResource) -> Owner:
        """The owner identity of an object read from the API server.

        Raises ``ValueError`` when the object lacks a name, namespace or uid, which only
        objects that were never stored do.
        """
        meta = resource.metadata
        if not (meta.name and meta.namespace and meta.uid):
            raise ValueError(f"{resource.kind} has no name, namespace or uid yet")
        return cls(resource.api_version, resource.kind, meta.name, meta.namespace, meta.uid)

    def reference(self) -> Manifest:
        """The owner reference of a child this resource controls.

        ``controller`` makes it the one owner that manages the child;
        ``blockOwnerDeletion`` makes a foreground deletion of the owner wait for it.
        """
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def recommended_labels(instance: str, **extra: str) -> dict[str, str]:
    """Kubernetes' recommended labels for one of Dockyard's children, plus ``extra``."""
    return {
        NAME_LABEL: instance,
        INSTANCE_LABEL: instance,
        MANAGED_BY_LABEL: MANAGED_BY,
        PART_OF_LABEL: MANAGED_BY,
        **extra,
    }


def child_metadata(owner: Owner, name: str, labels: dict[str, str]) -> Manifest:
    """``metadata`` of a child: its name, the owner's namespace, labels and owner reference."""
    return {
        "name": name,
        "namespace": owner.namespace,
        "labels": dict(labels),
        "ownerReferences": [owner.reference()],
    }
