"""The Environment kind: one deployment of a service (development, staging, production).

This module owns the Environment's spec and status models, the CEL rules the API server
enforces on them, and the CRD metadata (short name, printer columns); the container's
parts of the spec (resources, variables, Ingress) are in ``workload``. The CRD schema in
``crds/`` is generated from these models, so a field added here appears in both the
CRD and the REST API.

The production rules live only as CEL: the API server is the single enforcement point
for kubectl and REST alike (the REST API writes through it), and the immutability rule
cannot be said without ``oldSelf`` anyway.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, ClassVar, Final

from pydantic import Field

from dockyard.core.durations import GO_DURATION_PATTERN
from dockyard.core.models.common import CRModel, CustomResource, status_field
from dockyard.core.models.declarations import (
    PHASE_COLUMN,
    CRDInfo,
    ObjectNameLimit,
    PrinterColumn,
    ValidationRule,
)
from dockyard.core.models.drill_runs import DrillResult
from dockyard.core.models.references import OBJECT_NAME_PATTERN
from dockyard.core.models.rules import positive_duration_rule
from dockyard.core.models.status import Status
from dockyard.core.models.workload import EnvVar, IngressSpec, ResourceRequirements


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
    HOST_ADMITTED = "HostAdmitted"


# A tag is whatever follows the last ':' that has no '/' after it (a ':' followed by a
# '/' is a registry port). RE2 syntax, as CEL's matches() uses.
PINNED_TAG_PATTERN: Final = r":[^/:@]+$"

# Bounded so that CEL's cost estimate for the image rule stays within the API server's
# budget, and because no registry accepts longer references.
IMAGE_MAX_LENGTH: Final = 512

# Environment variables the operator sets itself.
DATABASE_URL_VARIABLE: Final = "DATABASE_URL"


class DatabaseSpec(CRModel):
    """The PostgreSQL database Dockyard provisions for the environment."""

    enabled: bool = True
    """Whether the environment gets its own database and role."""
    deletion_policy: DeletionPolicy = DeletionPolicy.RETAIN
    """What happens to the database when the environment is deleted: Retain keeps it, Snapshot takes
    a final Backup (<environment>-final-<uid>, kept after the environment is gone) and drops the
    database once that Backup completed, Delete drops it."""


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
        ValidationRule(
            rule=f"!has(self.ttl) || self.tier == '{Tier.DEVELOPMENT}'",
            message="ttl is only allowed for development environments",
            field_path=".ttl",
        ),
        ValidationRule(
            rule=(
                "!has(self.env) || !has(self.database) || !self.database.enabled || "
                f"!self.env.exists(e, e.name == '{DATABASE_URL_VARIABLE}')"
            ),
            message=(
                f"{DATABASE_URL_VARIABLE} is set by Dockyard while the database is enabled; "
                "disable the database to set it yourself"
            ),
            field_path=".env",
        ),
    )

    tier: Tier
    """How critical the environment is: development, staging or production. Cannot be changed after
    creation."""
    image: str = Field(min_length=1, max_length=IMAGE_MAX_LENGTH, pattern=r"^\S+$")
    """Container image reference of the service, for example registry.example.com/shop/api:1.4.2.
    Production requires a digest or a tag other than latest."""
    replicas: int | None = Field(default=None, ge=0, le=100)
    """Number of pods to run. When unset the tier decides: 1 for development, 2 for staging, 3 for
    production. Production needs at least 2. While suspended the environment runs no pods
    whatever this says."""
    resources: ResourceRequirements | None = None
    """CPU and memory requests and limits of the service's container. For cpu and for memory, when
    neither a request nor a limit is set the tier's defaults apply: development requests 50m CPU
    and 64Mi and is limited to 500m and 256Mi; staging requests 100m and 128Mi, limited to 1 and
    512Mi; production requests 250m and 256Mi, limited to 2 and 1Gi. What you set is used as is
    (Kubernetes makes a missing request equal to the limit)."""
    env: list[EnvVar] = Field(default_factory=list, max_length=128)
    """Environment variables of the service's container. Secret values come only through
    valueFrom.secretKeyRef. When the database is enabled the operator adds DATABASE_URL from the
    database Secret."""
    port: int = Field(default=8080, ge=1, le=65535)
    """TCP port the service listens on inside its container."""
    database: DatabaseSpec = DatabaseSpec()
    """The environment's PostgreSQL database."""
    ingress: IngressSpec | None = None
    """Expose the service outside the cluster through an Ingress for this host. Without it the
    service is reachable inside the cluster only."""
    suspend: bool = False
    """Scale the workload to zero while keeping the database and its backups."""
    ttl: (
        Annotated[
            str,
            positive_duration_rule("ttl"),
        ]
        | None
    ) = Field(default=None, max_length=32, pattern=GO_DURATION_PATTERN)
    """Development only: how long after its creation the environment is deleted, as hours, minutes
    and seconds (72h, 1h30m, 45s). The deletion applies the database's deletionPolicy as any
    other; status.expiresAt says when it happens."""


class ReplicaStatus(CRModel):
    """How many pods the environment runs, from its Deployment."""

    desired: int = Field(default=0, ge=0)
    """Pods the environment should run: spec.replicas or the tier default, 0 while suspended."""
    ready: int = Field(default=0, ge=0)
    """Pods passing their readiness probe."""
    available: int = Field(default=0, ge=0)
    """Pods that have been ready for at least the Deployment's minReadySeconds."""


class DatabaseStatus(CRModel):
    """The environment's database as the operator last provisioned it."""

    secret_name: str | None = None
    """Secret in the environment's namespace with the keys host, port, database, username, password
    and uri."""
    name: str | None = None
    """Name of the database, and of its login role, on the managed server."""
    ready: bool = False
    """Whether the database and role exist and the Secret holds working credentials."""
    ensured: str | None = Field(default=None, max_length=64)
    """Digest of what the operator last ensured on the server: the database's identity, the
    credentials' digest, spec.database and the version of the ensure steps. A pass that computes
    the same digest only checks that the role and database are intact."""


class LastBackup(CRModel):
    """The environment's newest completed Backup."""

    name: str
    """Name of the Backup, in the environment's namespace."""
    completed_at: datetime | None = None
    """When it completed."""
    size: int | None = Field(default=None, ge=0)
    """Size of its artifact in bytes."""
    verified_by: str | None = None
    """The RestoreDrill whose run restored it and passed, when one did."""


class LastDrill(CRModel):
    """The newest run of the RestoreDrills that target the environment."""

    drill: str
    """Name of the RestoreDrill."""
    backup: str
    """The Backup the run restored."""
    result: DrillResult
    """Passed when every check passed, else Failed."""
    finished_at: datetime | None = None
    """When the run finished."""
    restore_seconds: float | None = Field(default=None, ge=0)
    """How long the restore took: the measured RTO."""


class FinalSnapshot(CRModel):
    """The Backup the operator made as an environment's final snapshot."""

    name: str = Field(max_length=253, pattern=OBJECT_NAME_PATTERN)
    """Name of the Backup, in the environment's namespace."""
    uid: str = Field(max_length=64)
    """UID of that Backup as the operator made it: another Backup under its name (made
    before the deletion, say) is not the final snapshot, and does not let the database go.
    Empty while the operator is creating it (recorded just before the create)."""


class EnvironmentStatus(Status):
    """The observed state of an environment, written by the operator."""

    field_descriptions: ClassVar[Mapping[str, str]] = {
        "conditions": (
            "Current conditions: Ready, DatabaseReady, WorkloadAvailable, BackupsHealthy "
            "and DrillPassing."
        ),
    }

    phase: EnvironmentPhase | None = None
    """Where the environment is in its life cycle."""
    url: str | None = None
    """URL at which the service is reachable: http(s)://<host> with an ingress, otherwise the
    in-cluster http://<name>.<namespace>.svc:<port>."""
    replicas: ReplicaStatus | None = None
    """Pods the environment should run and how many of them serve."""
    database: DatabaseStatus | None = None
    """The environment's database, when it has one."""
    expires_at: datetime | None = None
    """When a development environment with a ttl is deleted."""
    last_backup: LastBackup | None = None
    """The newest completed Backup of the environment (condition BackupsHealthy)."""
    last_drill: LastDrill | None = None
    """The newest run of a RestoreDrill of the environment (condition DrillPassing)."""
    final_snapshot: FinalSnapshot | None = None
    """While a deletionPolicy Snapshot deletes the environment: the Backup the operator made as
    its final snapshot. Only that Backup, once completed, lets the database be dropped."""


ENVIRONMENT_NAME: Final = ObjectNameLimit(
    max_length=53,
    pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$",
    description="a DNS-1035 label (lowercase letters, digits and '-', beginning with a "
    "letter and ending with a letter or digit)",
    why="an Environment's Service is named after it, and a Service's name must begin with "
    "a letter (its database Secret, default BackupSchedule and RestoreDrill take its name "
    "too)",
)
"""The names an Environment may have: the API's create body and the CRD hold to it."""


class Environment(CustomResource):
    """An Environment runs one deployment of a service with its own PostgreSQL database."""

    crd = CRDInfo(
        kind="Environment",
        plural="environments",
        short_names=("env",),
        name_limit=ENVIRONMENT_NAME,
        printer_columns=(
            PrinterColumn("Tier", "string", ".spec.tier", "Criticality of the environment."),
            PHASE_COLUMN,
            PrinterColumn.condition(
                "Ready", EnvironmentConditionType.READY, "Whether the environment serves traffic."
            ),
            PrinterColumn(
                "Replicas",
                "integer",
                ".status.replicas.desired",
                "Pods the environment should run (the tier default when spec.replicas is "
                "unset, 0 while suspended).",
            ),
            PrinterColumn(
                "Available",
                "integer",
                ".status.replicas.available",
                "Pods that serve traffic.",
                priority=1,
            ),
            PrinterColumn("URL", "string", ".status.url", "Where the service is reachable."),
        ),
    )

    spec: EnvironmentSpec
    """The desired state of the environment."""
    status: EnvironmentStatus = status_field(
        EnvironmentStatus, "The observed state of the environment, written by the operator."
    )
