"""ScalingPolicies and RateLimitPolicies over REST: the objects kubectl sees, read from
the API's watch caches and written to the apiserver as the caller.

Both kinds have the contract of every kind (``kinds.plain_kind``) and nothing more, so
one table declares them: ``ETag`` is the resourceVersion and ``If-Match`` a
precondition the apiserver enforces (412), POST honours ``Idempotency-Key``, and the
apiserver's schema and CEL messages (min above max, a six-field cron, a utilization of
0) come back as problem+json with field paths. Who may change them is RBAC's call:
scaling for the developer, operator and admin roles, limits for the operator and admin
roles.
"""

from __future__ import annotations

from dockyard.api import keys
from dockyard.api.openapi import OperationRegistry
from dockyard.api.routes.kinds import plain_kind
from dockyard.api.routes.models import NewObjectMeta, name_field
from dockyard.core.models.ratelimit import RateLimitPolicy
from dockyard.core.models.scaling import ScalingPolicy


class PolicyMetaInput(NewObjectMeta):
    """The metadata a client may set on a new policy."""


class ScalingPolicyMetaInput(NewObjectMeta):
    """The metadata a client may set on a new scaling policy."""

    name: str = name_field("unique in the namespace; the HPA gets the same name")


ROUTES = (
    plain_kind(
        RateLimitPolicy,
        PolicyMetaInput,
        keys.RATE_LIMIT_POLICY_CACHE,
        spec="the limits",
        objects="policies",
    ),
    plain_kind(
        ScalingPolicy,
        ScalingPolicyMetaInput,
        keys.SCALING_POLICY_CACHE,
        spec="the desired scaling",
        objects="scaling policies",
    ),
)


def register(registry: OperationRegistry) -> None:
    for routes in ROUTES:
        routes.register(registry)
