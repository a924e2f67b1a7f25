"""RateLimitPolicies over REST: the objects kubectl sees, read from the rate limiter's
watch cache and written to the apiserver as the caller.

The same contract as the other kinds (``kinds.KindRoutes``): ``ETag`` is the
resourceVersion and ``If-Match`` a precondition the apiserver enforces (412), POST
honours ``Idempotency-Key``, and the apiserver's schema and CEL messages come back as
problem+json with field paths. Who may change limits is RBAC's call (by default the
operator and admin roles).
"""

from __future__ import annotations

from dockyard.api import keys
from dockyard.api.openapi import OperationRegistry
from dockyard.api.routes.kinds import KindRoutes
from dockyard.api.routes.models import NewObjectMeta, create_body, list_body
from dockyard.core.models.ratelimit import RateLimitPolicy


class PolicyMetaInput(NewObjectMeta):
    """The metadata a client may set on a new policy."""


RateLimitPolicyCreate = create_body(
    RateLimitPolicy,
    PolicyMetaInput,
    doc="The body of ``POST .../ratelimitpolicies``.",
    spec="the limits",
)
RateLimitPolicyList = list_body(
    RateLimitPolicy,
    doc="The policies of a namespace, ordered by name.",
    items="the policies",
    paged=False,
)

ROUTES = KindRoutes(
    RateLimitPolicy, RateLimitPolicyCreate, RateLimitPolicyList, keys.RATE_LIMIT_POLICY_CACHE
)


def register(registry: OperationRegistry) -> None:
    ROUTES.register(registry)
