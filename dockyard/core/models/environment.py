"""The Environment kind: one deployment of a service (development, staging, production).

This module owns the Environment's spec and status models, the CEL rules the API server
enforces on them, and the CRD metadata (short name, printer columns). The CRD schema in
``crds/`` is generated from these models, so a field added here appears in both the
CRD and the REST API.

The production rules live only as CEL: the API server is the single enforcement point
for kubectl and REST alike (the REST API writes through it), and the immutability rule
cannot be said without ``oldSelf`` anyway.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import Field

from dockyard.core.models.common import (
    Condition,
    CRDInfo,
    CRModel,
    CustomResource,
    PrinterColumn,
    ValidationRule,
)


class Tier(StrEnum):
    """How critical an environment is; production gets the strictest rules and backups."""

    DEVELOPMENT = "development"
    STAGING = "staging"
    PRODUCTION = "production"


class DeletionPolicy(StrEnum):
    """What happens to an environment's database when the environment is deleted."""

    RETAIN = "Retain"
    SNAPSHOT = "Snapshot"
    DELETE = "Delete"


class EnvironmentPhase(StrEnum):
    """Where an environment is in its life cycle."""

    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    READY = "Ready"
    DEGRADED = "Degraded"
    SUSPENDED = "Suspended"
    FAILED = "Failed"
    DELETING = "Deleting"


class EnvironmentConditionType(StrEnum):
    """The condition types the operator sets on an environment."""

    READY = "Ready"
    DATABASE_READY = "DatabaseReady"
    WORKLOAD_AVAILABLE = "WorkloadAvailable"
    BACKUPS_HEALTHY = "BackupsHealthy"
    DRILL_PASSING = "DrillPassing"


# A tag is whatever follows the last ':' that has no '/' after it (a ':' followed by a
# '/' is a registry port). RE2 syntax, as CEL's matches() uses.
PINNED_TAG_PATTERN: Final = r":[^/:@]+$"

# Bounded so that CEL's cost estimate for the image rule stays within the API server's
# budget, and because no registry accepts longer references.
IMAGE_MAX_LENGTH: Final = 512


class DatabaseSpec(CRModel):
    """The PostgreSQL database Dockyard provisions for the environment."""

    enabled: bool = Field(
        default=True,
        description="Whether the environment gets its own database and role.",
    )
    deletion_policy: DeletionPolicy = Field(
        default=DeletionPolicy.RETAIN,
        description=(
            "What happens to the database when the environment is deleted: Retain keeps "
            "it, Snapshot takes a final backup and then drops it, Delete drops it."
        ),
    )


class EnvironmentSpec(CRModel):
    """The desired state of an environment."""

    cel_rules = (
        ValidationRule(
            rule="self.tier == oldSelf.tier",
            message="tier is immutable",
            field_path=".tier",
        ),
        ValidationRule(
            rule=f"self.tier != '{Tier.PRODUCTION}' || !has(self.replicas) || self.replicas >= 2",
            message="production environments need at least 2 replicas",
            field_path=".replicas",
        ),
        ValidationRule(
            rule=(
                f"self.tier != '{Tier.PRODUCTION}' || self.image.contains('@') || "
                f"(self.image.matches('{PINNED_TAG_PATTERN}') && "
                "!self.image.endsWith(':latest'))"
            ),
            message="production images must be pinned by digest or by a tag other than latest",
            field_path=".image",
        ),
    )

    tier: Tier = Field(
        description=(
            "How critical the environment is: development, staging or production. "
            "Cannot be changed after creation."
        ),
    )
    image: str = Field(
        min_length=1,
        max_length=IMAGE_MAX_LENGTH,
        pattern=r"^\S+$",
        description=(
            "Container image reference of the service, for example "
            "registry.example.com/shop/api:1.4.2. Production requires a digest or a tag "
            "other than latest."
        ),
    )
    replicas: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description=(
            "Number of pods to run; when unset, a ScalingPolicy or the operator's default "
            "decides. Production needs at least 2."
        ),
    )
    port: int = Field(
        default=8080,
        ge=1,
        le=65535,
        description="TCP port the service listens on inside its container.",
    )
    database: DatabaseSpec = Field(
        default=DatabaseSpec(),
        description="The environment's PostgreSQL database.",
    )
    suspend: bool = Field(
        default=False,
        description="Scale the workload to zero while keeping the database and its backups.",
    )


class EnvironmentStatus(CRModel):
    """The observed state of an environment, written by the operator."""

    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The .metadata.generation the operator last reconciled.",
    )
    phase: EnvironmentPhase | None = Field(
        default=None,
        description="Where the environment is in its life cycle.",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "Current conditions: Ready, DatabaseReady, WorkloadAvailable, BackupsHealthy "
            "and DrillPassing."
        ),
    )
    url: str | None = Field(
        default=None,
        description="URL at which the environment's service is reachable.",
    )


class Environment(CustomResource):
    """An Environment runs one deployment of a service with its own PostgreSQL database."""

    crd = CRDInfo(
        kind="Environment",
        plural="environments",
        short_names=("env",),
        printer_columns=(
            PrinterColumn("Tier", "string", ".spec.tier", "Criticality of the environment."),
            PrinterColumn("Phase", "string", ".status.phase", "Life-cycle phase."),
            PrinterColumn(
                "Ready",
                "string",
                f'.status.conditions[?(@.type=="{EnvironmentConditionType.READY}")].status',
                "Whether the environment serves traffic.",
            ),
            PrinterColumn("Replicas", "integer", ".spec.replicas", "Requested pods."),
            PrinterColumn(
                "URL", "string", ".status.url", "Where the service is reachable.", priority=1
            ),
            PrinterColumn("Age", "date", ".metadata.creationTimestamp", "Time since creation."),
        ),
    )

    spec: EnvironmentSpec = Field(description="The desired state of the environment.")
    status: EnvironmentStatus = Field(
        default_factory=EnvironmentStatus,
        description="The observed state of the environment, written by the operator.",
    )
