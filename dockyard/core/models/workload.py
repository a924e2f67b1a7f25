"""The service's container in an Environment's spec, and how it is reached.

This module owns the shapes ``EnvironmentSpec`` is made of for the workload: CPU and
memory requests and limits, environment variables (credentials only from Secrets) and
the Ingress, with the CEL rules on them.
"""

from __future__ import annotations

from typing import Final

from pydantic import Field

from dockyard.core.models.common import CRModel
from dockyard.core.models.declarations import ValidationRule
from dockyard.core.models.references import OBJECT_NAME_PATTERN, ObjectName, SecretDataKey

# Kubernetes' resource.Quantity syntax without the sign (an amount of CPU or memory is
# never negative): 250m, 1, 1.5, 512Mi, 1Gi, 1e3.
QUANTITY_PATTERN: Final = (
    r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
# A C identifier, which every shell and language runtime accepts as a variable name.
ENV_NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]*$"
# Names that say "this is a credential"; their values must come from a Secret. RE2, as
# CEL's matches() uses; case-insensitive because db_password is as secret as DB_PASSWORD.
CREDENTIAL_NAME_PATTERN: Final = "(?i)(PASSWORD|TOKEN|SECRET|KEY)"
# A fully qualified host name: at least two lowercase labels, no wildcard, no IP.
HOST_PATTERN: Final = r"^([a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.)+[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"


def _request_within_limit(resource: str) -> ValidationRule:
    return ValidationRule(
        rule=(
            f"!has(self.requests) || !has(self.limits) || !has(self.requests.{resource}) || "
            f"!has(self.limits.{resource}) || "
            f"quantity(self.requests.{resource}).compareTo(quantity(self.limits.{resource})) <= 0"
        ),
        message=f"resources.requests.{resource} must not exceed resources.limits.{resource}",
        field_path=f".requests.{resource}",
    )


class ResourceQuantities(CRModel):
    """Amounts of CPU and memory, as Kubernetes quantities."""

    cpu: str | None = Field(default=None, max_length=32, pattern=QUANTITY_PATTERN)
    """CPU in cores or millicores, for example 250m, 1 or 1.5."""
    memory: str | None = Field(default=None, max_length=32, pattern=QUANTITY_PATTERN)
    """Memory in bytes with an optional suffix, for example 256Mi or 1Gi."""


class ResourceRequirements(CRModel):
    """CPU and memory the container is guaranteed (requests) and may not exceed (limits)."""

    cel_rules = (_request_within_limit("cpu"), _request_within_limit("memory"))

    requests: ResourceQuantities | None = None
    """What the scheduler reserves for each pod."""
    limits: ResourceQuantities | None = None
    """The most each pod may use; a pod above its memory limit is killed."""


class SecretKeySelector(CRModel):
    """One key of a Secret in the environment's namespace."""

    name: ObjectName
    """Name of the Secret, in the environment's namespace."""
    key: SecretDataKey
    """The key within the Secret whose value the variable takes."""


class EnvVarSource(CRModel):
    """Where a variable's value comes from when the spec does not spell it out."""

    secret_key_ref: SecretKeySelector
    """A key of a Secret in the environment's namespace."""


class EnvVar(CRModel):
    """One environment variable of the service's container."""

    list_map_keys = ("name",)
    cel_rules = (
        ValidationRule(
            rule="has(self.value) != has(self.valueFrom)",
            message="exactly one of value and valueFrom must be set",
        ),
        ValidationRule(
            rule=f"!self.name.matches('{CREDENTIAL_NAME_PATTERN}') || has(self.valueFrom)",
            message=(
                "variables whose name contains PASSWORD, TOKEN, SECRET or KEY must take their "
                "value from a Secret (valueFrom.secretKeyRef), never a plain value"
            ),
            field_path=".value",
        ),
    )

    name: str = Field(min_length=1, max_length=256, pattern=ENV_NAME_PATTERN)
    """Name of the variable: letters, digits and underscores, not starting with a digit. Unique
    within env."""
    value: str | None = None
    """The value, written out. Not allowed for names containing PASSWORD, TOKEN, SECRET or KEY:
    those must use valueFrom."""
    value_from: EnvVarSource | None = None
    """Take the value from a Secret instead of writing it in the spec."""


class IngressSpec(CRModel):
    """How the environment is reached from outside the cluster."""

    host: str = Field(min_length=3, max_length=253, pattern=HOST_PATTERN)
    """Fully qualified, lowercase DNS name the Ingress routes to the service, for example
    shop-dev.example.com."""
    tls_secret_name: str | None = Field(default=None, max_length=253, pattern=OBJECT_NAME_PATTERN)
    """Secret of type kubernetes.io/tls, in the environment's namespace, holding the host's
    certificate. When set the Ingress terminates TLS and the environment's URL is https://;
    otherwise it is http://."""


__all__ = [
    "CREDENTIAL_NAME_PATTERN",
    "ENV_NAME_PATTERN",
    "HOST_PATTERN",
    "QUANTITY_PATTERN",
    "EnvVar",
    "EnvVarSource",
    "IngressSpec",
    "ResourceQuantities",
    "ResourceRequirements",
    "SecretKeySelector",
]
