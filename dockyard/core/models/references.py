"""References from one Dockyard object to another, and to Secrets, by name.

This module owns the small reference shapes that kinds share (``environmentRef``,
``backupRef``, a key of a Secret, a whole Secret) and the name types they are made of
(``ObjectName``, ``SecretDataKey``), which other fields naming an object reuse. Every
reference is namespace-local: an object never points into another namespace, which
keeps RBAC on namespaces meaningful.
"""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field

from dockyard.core.models.common import CRModel

# An RFC 1123 subdomain, as Kubernetes object names are.
OBJECT_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A key of a Secret's data, as Kubernetes allows it.
DATA_KEY_PATTERN: Final = r"^[-._a-zA-Z0-9]+$"

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=OBJECT_NAME_PATTERN)]
"""The name of a Kubernetes object (an RFC 1123 subdomain); the field describes whose."""
SecretDataKey = Annotated[str, Field(min_length=1, max_length=253, pattern=DATA_KEY_PATTERN)]
"""A key of a Secret's data."""


class EnvironmentReference(CRModel):
    """An Environment in the same namespace."""

    name: ObjectName
    """Name of the Environment, in this object's namespace."""


class BackupReference(CRModel):
    """A Backup in the same namespace."""

    name: ObjectName
    """Name of the Backup, in this object's namespace."""


class StoreReference(CRModel):
    """A BackupStore (cluster-scoped)."""

    name: ObjectName
    """Name of the BackupStore."""


class SecretKeyReference(CRModel):
    """One key of a Secret in the same namespace."""

    name: ObjectName
    """Name of the Secret, in this object's namespace."""
    key: SecretDataKey
    """The key within the Secret's data that holds the value."""


class SecretReference(CRModel):
    """A whole Secret in the same namespace."""

    name: ObjectName
    """Name of the Secret, in this object's namespace."""


__all__ = [
    "DATA_KEY_PATTERN",
    "OBJECT_NAME_PATTERN",
    "BackupReference",
    "EnvironmentReference",
    "ObjectName",
    "SecretDataKey",
    "SecretKeyReference",
    "SecretReference",
    "StoreReference",
]
