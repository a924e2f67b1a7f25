"""The pydantic models of every Dockyard custom resource: the one source of their schemas.

Each kind lives in its own module (``environment``, ``backup``, ``restore_drill``, ...)
on top of the conventions in ``common``. The CRDs in ``crds/`` and the REST API's
OpenAPI document are generated from these models; ``dockyard.core.crds`` lists the
kinds it generates.
"""

from dockyard.core.models.backup import (
    Backup,
    BackupConditionType,
    BackupPhase,
    BackupSpec,
    BackupStatus,
)
from dockyard.core.models.backup_schedule import (
    BackupSchedule,
    BackupScheduleSpec,
    BackupScheduleStatus,
)
from dockyard.core.models.common import (
    API_VERSION,
    GROUP,
    VERSION,
    Condition,
    ConditionStatus,
    CRModel,
    CustomResource,
    ObjectMeta,
)
from dockyard.core.models.declarations import CRDInfo, PrinterColumn, RuleReason, ValidationRule
from dockyard.core.models.environment import (
    DatabaseSpec,
    DatabaseStatus,
    DeletionPolicy,
    Environment,
    EnvironmentConditionType,
    EnvironmentPhase,
    EnvironmentSpec,
    EnvironmentStatus,
    ReplicaStatus,
    Tier,
)
from dockyard.core.models.ratelimit import (
    KeyType,
    Period,
    RateLimit,
    RateLimitMode,
    RateLimitPolicy,
    RateLimitPolicySpec,
    RateLimitPolicyStatus,
    RateLimitRule,
    RuleMatch,
    ThrottleCount,
)
from dockyard.core.models.restore import (
    Restore,
    RestorePhase,
    RestoreSpec,
    RestoreStatus,
)
from dockyard.core.models.restore_drill import (
    RestoreDrill,
    RestoreDrillSpec,
    RestoreDrillStatus,
)
from dockyard.core.models.scaling import (
    ScalingPolicy,
    ScalingPolicyConditionType,
    ScalingPolicySpec,
    ScalingPolicyStatus,
)
from dockyard.core.models.workload import (
    EnvVar,
    EnvVarSource,
    IngressSpec,
    ResourceQuantities,
    ResourceRequirements,
    SecretKeySelector,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Backup",
    "BackupConditionType",
    "BackupPhase",
    "BackupSchedule",
    "BackupScheduleSpec",
    "BackupScheduleStatus",
    "BackupSpec",
    "BackupStatus",
    "CRDInfo",
    "CRModel",
    "Condition",
    "ConditionStatus",
    "CustomResource",
    "DatabaseSpec",
    "DatabaseStatus",
    "DeletionPolicy",
    "EnvVar",
    "EnvVarSource",
    "Environment",
    "EnvironmentConditionType",
    "EnvironmentPhase",
    "EnvironmentSpec",
    "EnvironmentStatus",
    "IngressSpec",
    "KeyType",
    "ObjectMeta",
    "Period",
    "PrinterColumn",
    "RateLimit",
    "RateLimitMode",
    "RateLimitPolicy",
    "RateLimitPolicySpec",
    "RateLimitPolicyStatus",
    "RateLimitRule",
    "ReplicaStatus",
    "ResourceQuantities",
    "ResourceRequirements",
    "Restore",
    "RestoreDrill",
    "RestoreDrillSpec",
    "RestoreDrillStatus",
    "RestorePhase",
    "RestoreSpec",
    "RestoreStatus",
    "RuleMatch",
    "RuleReason",
    "ScalingPolicy",
    "ScalingPolicyConditionType",
    "ScalingPolicySpec",
    "ScalingPolicyStatus",
    "SecretKeySelector",
    "ThrottleCount",
    "Tier",
    "ValidationRule",
]
