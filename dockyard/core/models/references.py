"""References from one Dockyard object to another, and to Secrets, by name.

This module owns the small reference shapes that the backup kinds share
(``environmentRef``, ``backupRef``, a key of a Secret, a whole Secret) and the "exactly
one of these fields" rule, which the API server enforces as CEL and pydantic mirrors
with the same message, so a REST request fails as early and as clearly as ``kubectl
apply`` does. Every reference is namespace-local: an object never points into another
namespace, which keeps RBAC on namespaces meaningful.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, Field

from dockyard.core.models.common import CRModel
from dockyard.core.models.declarations import ValidationRule

# An RFC 1123 subdomain, as Kubernetes object names are.
OBJECT_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A key of a Secret's data, as Kubernetes allows it.
DATA_KEY_PATTERN: Final = r"^[-._a-zA-Z0-9]+$"


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1]


def exactly_one_rule(*wire_names: str) -> ValidationRule:
    """The CEL rule that exactly one of the optional fields ``wire_names`` is set."""
    checks = ", ".join(f"has(self.{name})" for name in wire_names)
    return ValidationRule(
        rule=f"[{checks}].exists_one(x, x)",
        message=f"exactly one of {_listed(wire_names)} must be set",
    )


def check_exactly_one(model: BaseModel, *attributes: str) -> None:
    """Raise what ``exactly_one_rule`` reports when not exactly one of ``attributes`` is set.

    ``attributes`` are Python names; the message uses the wire names, as the API
    server's does.
    """
    present = [name for name in attributes if getattr(model, name) is not None]
    if len(present) != 1:
        fields = type(model).model_fields
        wire = tuple(fields[name].alias or name for name in attributes)
        raise ValueError(exactly_one_rule(*wire).message)


class EnvironmentReference(CRModel):
    """An Environment in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=OBJECT_NAME_PATTERN,
        description="Name of the Environment, in this object's namespace.",
    )


class BackupReference(CRModel):
    """A Backup in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=OBJECT_NAME_PATTERN,
        description="Name of the Backup, in this object's namespace.",
    )


class SecretKeyReference(CRModel):
    """One key of a Secret in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=OBJECT_NAME_PATTERN,
        description="Name of the Secret, in this object's namespace.",
    )
    key: str = Field(
        min_length=1,
        max_length=253,
        pattern=DATA_KEY_PATTERN,
        description="The key within the Secret's data that holds the value.",
    )


class SecretReference(CRModel):
    """A whole Secret in the same namespace."""

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=OBJECT_NAME_PATTERN,
        description="Name of the Secret, in this object's namespace.",
    )


__all__ = [
    "DATA_KEY_PATTERN",
    "OBJECT_NAME_PATTERN",
    "BackupReference",
    "EnvironmentReference",
    "SecretKeyReference",
    "SecretReference",
    "check_exactly_one",
    "exactly_one_rule",
]
