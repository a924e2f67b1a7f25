"""ScalingPolicies over REST: the objects kubectl sees, read from the API's watch cache
and written to the apiserver as the caller.

The same contract as the other kinds (``kinds.KindRoutes``): ``ETag`` is the
resourceVersion and ``If-Match`` a precondition the apiserver enforces (412), POST
honours ``Idempotency-Key``, and the apiserver's schema and CEL messages (min above
max, a six-field cron, a utilization of 0) come back as problem+json with field paths.
Who may change scaling is RBAC's call (the developer, operator and admin roles).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from dockyard.api import keys
from dockyard.api.openapi import OperationRegistry
from dockyard.api.routes.kinds import KindRoutes
from dockyard.core.models.common import API_VERSION
from dockyard.core.models.references import OBJECT_NAME_PATTERN
from dockyard.core.models.scaling import ScalingPolicy, ScalingPolicySpec


class ScalingPolicyMetaInput(BaseModel):
    """The metadata a client may set on a new scaling policy."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=253,
        pattern=OBJECT_NAME_PATTERN,
        description="unique in the namespace; the HPA gets the same name",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Kubernetes labels"
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Kubernetes annotations"
    )


class ScalingPolicyCreate(BaseModel):
    """The body of ``POST .../scalingpolicies``."""

    model_config = ConfigDict(extra="forbid")

    api_version: str | None = Field(
        default=None, alias="apiVersion", description=f"optional; {API_VERSION}"
    )
    kind: str | None = Field(default=None, description="optional; ScalingPolicy")
    metadata: ScalingPolicyMetaInput = Field(description="name, labels and annotations")
    spec: ScalingPolicySpec = Field(description="the desired scaling")


class ScalingPolicyList(BaseModel):
    """The scaling policies of a namespace, ordered by name."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    items: list[ScalingPolicy] = Field(description="the policies")
    resource_version: str = Field(
        alias="resourceVersion", description="the cache's resourceVersion for this list"
    )


ROUTES = KindRoutes(
    model=ScalingPolicy,
    spec_model=ScalingPolicySpec,
    create_model=ScalingPolicyCreate,
    list_model=ScalingPolicyList,
    cache=keys.SCALING_POLICY_CACHE,
    plural_title="ScalingPolicies",
    noun="scaling policy",
)


def register(registry: OperationRegistry) -> None:
    ROUTES.register(registry)
