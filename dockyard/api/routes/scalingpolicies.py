"""ScalingPolicies over REST: the objects kubectl sees, read from the API's watch cache
and written to the apiserver as the caller.

The same contract as the other kinds (``kinds.KindRoutes``): ``ETag`` is the
resourceVersion and ``If-Match`` a precondition the apiserver enforces (412), POST
honours ``Idempotency-Key``, and the apiserver's schema and CEL messages (min above
max, a six-field cron, a utilization of 0) come back as problem+json with field paths.
Who may change scaling is RBAC's call (the developer, operator and admin roles).
"""

from __future__ import annotations

from dockyard.api import keys
from dockyard.api.openapi import OperationRegistry
from dockyard.api.routes.kinds import KindRoutes
from dockyard.api.routes.models import NewObjectMeta, create_body, list_body, name_field
from dockyard.core.models.scaling import ScalingPolicy


class ScalingPolicyMetaInput(NewObjectMeta):
    """The metadata a client may set on a new scaling policy."""

    name: str = name_field("unique in the namespace; the HPA gets the same name")


ScalingPolicyCreate = create_body(
    ScalingPolicy,
    ScalingPolicyMetaInput,
    doc="The body of ``POST .../scalingpolicies``.",
    spec="the desired scaling",
)
ScalingPolicyList = list_body(
    ScalingPolicy,
    doc="The scaling policies of a namespace, ordered by name.",
    items="the policies",
    paged=False,
)

ROUTES = KindRoutes(
    ScalingPolicy, ScalingPolicyCreate, ScalingPolicyList, keys.SCALING_POLICY_CACHE
)


def register(registry: OperationRegistry) -> None:
    ROUTES.register(registry)
