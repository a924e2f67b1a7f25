"""RateLimitPolicies over REST: the objects kubectl sees, read from the rate limiter's
watch cache and written to the apiserver as the caller.

The same contract as the other kinds (``kinds.KindRoutes``): ``ETag`` is the
resourceVersion and ``If-Match`` a precondition the apiserver enforces (412), POST
honours ``Idempotency-Key``, and the apiserver's schema and CEL messages come back as
problem+json with field paths. Who may change limits is RBAC's call (by default the
operator and admin roles).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from dockyard.api import keys
from dockyard.api.openapi import OperationRegistry
from dockyard.api.routes.kinds import KindRoutes
from dockyard.core.models.common import API_VERSION
from dockyard.core.models.ratelimit import RateLimitPolicy, RateLimitPolicySpec

KIND = RateLimitPolicy.crd.kind
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class PolicyMetaInput(BaseModel):
    """The metadata a client may set on a new policy."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1, max_length=253, pattern=NAME_PATTERN, description="unique in the namespace"
    )
    labels: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Kubernetes labels"
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Kubernetes annotations"
    )


class RateLimitPolicyCreate(BaseModel):
    """The body of ``POST .../ratelimitpolicies``."""

    model_config = ConfigDict(extra="forbid")

    api_version: str | None = Field(
        default=None, alias="apiVersion", description=f"optional; {API_VERSION}"
    )
    kind: str | None = Field(default=None, description=f"optional; {KIND}")
    metadata: PolicyMetaInput = Field(description="name, labels and annotations")
    spec: RateLimitPolicySpec = Field(description="the limits")


class RateLimitPolicyList(BaseModel):
    """The policies of a namespace, ordered by name."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    items: list[RateLimitPolicy] = Field(description="the policies")
    resource_version: str = Field(
        alias="resourceVersion", description="the cache's resourceVersion for this list"
    )


ROUTES = KindRoutes(
    model=RateLimitPolicy,
    spec_model=RateLimitPolicySpec,
    create_model=RateLimitPolicyCreate,
    list_model=RateLimitPolicyList,
    cache=keys.RATE_LIMIT_POLICY_CACHE,
    plural_title="RateLimitPolicies",
    noun="rate limit policy",
)


def register(registry: OperationRegistry) -> None:
    ROUTES.register(registry)
