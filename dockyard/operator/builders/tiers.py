"""What an environment's tier fills in where its spec leaves a value unset: pure.

Replicas and container resources (requests and limits) default by tier; the spec's own
values always win, resource by resource. The descriptions of ``EnvironmentSpec.replicas``
and ``.resources`` teach these defaults in ``kubectl explain``, and a unit test keeps
them in step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from dockyard.core.models.environment import EnvironmentSpec, Tier
from dockyard.core.models.workload import ResourceQuantities


@dataclass(frozen=True, slots=True)
class TierDefaults:
    """What an environment of a tier gets when its spec leaves a value unset."""

    replicas: int
    requests: Mapping[str, str]
    limits: Mapping[str, str]


# Keep in step with the descriptions of EnvironmentSpec.replicas and .resources, which
# are what `kubectl explain` teaches (a unit test compares them).
TIER_DEFAULTS: Final[Mapping[Tier, TierDefaults]] = {
    Tier.DEVELOPMENT: TierDefaults(
        replicas=1,
        requests={"cpu": "50m", "memory": "64Mi"},
        limits={"cpu": "500m", "memory": "256Mi"},
    ),
    Tier.STAGING: TierDefaults(
        replicas=2,
        requests={"cpu": "100m", "memory": "128Mi"},
        limits={"cpu": "1", "memory": "512Mi"},
    ),
    Tier.PRODUCTION: TierDefaults(
        replicas=3,
        requests={"cpu": "250m", "memory": "256Mi"},
        limits={"cpu": "2", "memory": "1Gi"},
    ),
}


def desired_replicas(spec: EnvironmentSpec) -> int:
    """Pods the environment should run: 0 while suspended, else the spec's or the tier's."""
    if spec.suspend:
        return 0
    if spec.replicas is not None:
        return spec.replicas
    return TIER_DEFAULTS[spec.tier].replicas


def container_resources(spec: EnvironmentSpec) -> dict[str, dict[str, str]]:
    """The container's requests and limits: per resource, the spec's, else the tier's.

    A resource (cpu or memory) for which the spec sets a request or a limit is taken as
    written, so a spec can never end up with a tier request above its own limit.
    """
    defaults = TIER_DEFAULTS[spec.tier]
    given = spec.resources
    requests = given.requests if given and given.requests else ResourceQuantities()
    limits = given.limits if given and given.limits else ResourceQuantities()
    result: dict[str, dict[str, str]] = {"requests": {}, "limits": {}}
    for resource in ("cpu", "memory"):
        request, limit = getattr(requests, resource), getattr(limits, resource)
        if request is None and limit is None:
            request, limit = defaults.requests[resource], defaults.limits[resource]
        if request is not None:
            result["requests"][resource] = request
        if limit is not None:
            result["limits"][resource] = limit
    return {key: value for key, value in result.items() if value}
