"""The pydantic models of every Dockyard custom resource: the one source of their schemas.

Each kind lives in its own module (``environment``) on top of the conventions in
``common``. The CRDs in ``crds/`` and the REST API's OpenAPI document are generated
from these models; ``dockyard.core.crds`` lists the kinds it generates.
"""

from dockyard.core.models.common import (
    API_VERSION,
    GROUP,
    VERSION,
    Condition,
    ConditionStatus,
    CRDInfo,
    CRModel,
    CustomResource,
    ObjectMeta,
    PrinterColumn,
    RuleReason,
    ValidationRule,
)
from dockyard.core.models.environment import (
    DatabaseSpec,
    DeletionPolicy,
    Environment,
    EnvironmentConditionType,
    EnvironmentPhase,
    EnvironmentSpec,
    EnvironmentStatus,
    Tier,
)

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "CRDInfo",
    "CRModel",
    "Condition",
    "ConditionStatus",
    "CustomResource",
    "DatabaseSpec",
    "DeletionPolicy",
    "Environment",
    "EnvironmentConditionType",
    "EnvironmentPhase",
    "EnvironmentSpec",
    "EnvironmentStatus",
    "ObjectMeta",
    "PrinterColumn",
    "RuleReason",
    "Tier",
    "ValidationRule",
]
