"""Every resource type Dockyard reads or writes, and where the API server serves it.

The one place that spells a resource's group, version and plural: the operator's
apply layer, the API's routes and watch caches, and the runner's status report all
take their paths from here. Dockyard's own kinds come from their models' ``crd``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from dockyard.core.models.backup import Backup
from dockyard.core.models.backup_schedule import BackupSchedule
from dockyard.core.models.backup_store import BackupStore
from dockyard.core.models.common import CustomResource
from dockyard.core.models.environment import Environment
from dockyard.core.models.ratelimit import RateLimitPolicy
from dockyard.core.models.restore import Restore
from dockyard.core.models.restore_drill import RestoreDrill
from dockyard.core.models.scaling import ScalingPolicy
from dockyard.core.models.webhook import Webhook

Manifest = dict[str, Any]
"""A Kubernetes object as the API server reads it (JSON-compatible)."""


@dataclass(frozen=True, slots=True)
class ResourceType:
    """A resource type and where the API server serves it."""

    api_version: str
    kind: str
    plural: str

    @classmethod
    def of(cls, model: type[CustomResource]) -> ResourceType:
        """The resource type of one of Dockyard's kinds."""
        return cls(model.crd.api_version, model.crd.kind, model.crd.plural)

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def root(self) -> str:
        """``/api/v1`` for the core group, ``/apis/<group>/<version>`` otherwise."""
        return "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"

    def path(
        self, namespace: str | None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The collection's path in ``namespace``, or one object's (or its subresource's);
        ``namespace`` is None for a cluster-scoped kind."""
        path = (
            self.cluster_path()
            if namespace is None
            else f"{self.root}/namespaces/{namespace}/{self.plural}"
        )
        if name is not None:
            path += f"/{name}"
            if subresource is not None:
                path += f"/{subresource}"
        return path

    def cluster_path(self) -> str:
        """The collection across every namespace (for LIST and WATCH), or of a
        cluster-scoped kind."""
        return f"{self.root}/{self.plural}"


@dataclass(frozen=True, slots=True)
class ChildRef:
    """An object named by its type and name: what the apply layer needs to delete it."""

    api_version: str
    kind: str
    name: str

    @classmethod
    def of(cls, manifest: Manifest) -> ChildRef:
        return cls(manifest["apiVersion"], manifest["kind"], manifest["metadata"]["name"])


# Dockyard's kinds.
ENVIRONMENTS: Final = ResourceType.of(Environment)
BACKUPS: Final = ResourceType.of(Backup)
BACKUP_SCHEDULES: Final = ResourceType.of(BackupSchedule)
RESTORES: Final = ResourceType.of(Restore)
RESTORE_DRILLS: Final = ResourceType.of(RestoreDrill)
SCALING_POLICIES: Final = ResourceType.of(ScalingPolicy)
RATE_LIMIT_POLICIES: Final = ResourceType.of(RateLimitPolicy)
WEBHOOKS: Final = ResourceType.of(Webhook)

# Kubernetes' own.
SERVICE_ACCOUNTS: Final = ResourceType("v1", "ServiceAccount", "serviceaccounts")
SECRETS: Final = ResourceType("v1", "Secret", "secrets")
SERVICES: Final = ResourceType("v1", "Service", "services")
PODS: Final = ResourceType("v1", "Pod", "pods")
EVENTS: Final = ResourceType("v1", "Event", "events")
DEPLOYMENTS: Final = ResourceType("apps/v1", "Deployment", "deployments")
POD_DISRUPTION_BUDGETS: Final = ResourceType(
    "policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"
)
NETWORK_POLICIES: Final = ResourceType("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
INGRESSES: Final = ResourceType("networking.k8s.io/v1", "Ingress", "ingresses")
HORIZONTAL_POD_AUTOSCALERS: Final = ResourceType(
    "autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"
)
JOBS: Final = ResourceType("batch/v1", "Job", "jobs")
ROLES: Final = ResourceType("rbac.authorization.k8s.io/v1", "Role", "roles")
ROLE_BINDINGS: Final = ResourceType("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings")
NAMESPACES: Final = ResourceType("v1", "Namespace", "namespaces")
BACKUP_STORES: Final = ResourceType.of(BackupStore)
"""Cluster-scoped: its objects are at ``path(None, <name>)``."""

CHILD_TYPES: Final[tuple[ResourceType, ...]] = (
    SERVICE_ACCOUNTS,
    SECRETS,
    SERVICES,
    DEPLOYMENTS,
    POD_DISRUPTION_BUDGETS,
    NETWORK_POLICIES,
    INGRESSES,
)
"""Every kind of child an Environment has; RBAC and the child watches follow this list."""

RESOURCE_TYPES: Final[Mapping[tuple[str, str], ResourceType]] = {
    (rtype.api_version, rtype.kind): rtype
    for rtype in (
        *CHILD_TYPES,
        ENVIRONMENTS,
        BACKUPS,
        BACKUP_SCHEDULES,
        RESTORES,
        RESTORE_DRILLS,
        SCALING_POLICIES,
        RATE_LIMIT_POLICIES,
        WEBHOOKS,
        HORIZONTAL_POD_AUTOSCALERS,
        JOBS,
        PODS,
        EVENTS,
        ROLES,
        ROLE_BINDINGS,
        NAMESPACES,
        BACKUP_STORES,
    )
}


def resource_type(api_version: str, kind: str) -> ResourceType:
    """The resource type of a manifest's ``apiVersion`` and ``kind``."""
    try:
        return RESOURCE_TYPES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"Dockyard does not manage {kind} ({api_version})") from None
