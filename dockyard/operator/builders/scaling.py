"""The HorizontalPodAutoscaler of a ScalingPolicy, computed from its spec: pure, no I/O.

The HPA (``autoscaling/v2``) is named after the policy, scales the Deployment of the
policy's Environment (which is named after the environment), carries the environment's
labels plus ``dockyard.io/scaling-policy``, and is controlled by the policy through an
owner reference, so it goes away with the policy. Metrics and behavior map 1:1 onto the
HPA's; the replica range is the spec's, with the floor raised while a schedule's window
is open, or pinned to one count while the policy is paused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from dockyard.core.models.environment import Environment
from dockyard.core.models.scaling import DEFAULT_CPU_UTILIZATION, ScalingPolicy, ScalingPolicySpec
from dockyard.core.models.scaling_behavior import ScalingBehavior, ScalingMetrics, ScalingRules
from dockyard.core.names import label_value
from dockyard.core.resources import Manifest
from dockyard.operator.builders import environment as environment_builders
from dockyard.operator.builders.metadata import Owner, child_metadata
from dockyard.operator.builders.scaling_windows import Window, active_schedule

POLICY_LABEL: Final = "dockyard.io/scaling-policy"


@dataclass(frozen=True, slots=True)
class ReplicaRange:
    """The HPA's minReplicas and maxReplicas, and the window that raised the floor."""

    minimum: int
    maximum: int
    window: Window | None = None

    @property
    def pinned(self) -> bool:
        return self.minimum == self.maximum


def replica_range(
    spec: ScalingPolicySpec, window: Window | None, *, pinned: int | None = None
) -> ReplicaRange:
    """The range the HPA gets: ``pinned`` for both ends while paused, else the spec's
    minimum raised to the open window's floor (never above the maximum)."""
    if pinned is not None:
        return ReplicaRange(pinned, pinned, window)
    floor = spec.min_replicas if window is None else max(spec.min_replicas, window.min_replicas)
    return ReplicaRange(min(floor, spec.max_replicas), spec.max_replicas, window)


def hpa_name(policy: ScalingPolicy) -> str:
    """The HPA's name: the policy's."""
    return Owner.of(policy).name


def hpa_metrics(metrics: ScalingMetrics | None) -> list[Manifest]:
    """The HPA's resource metrics; without targets, CPU at the default utilization (what
    the HPA itself would assume, written out so the HPA says what it does)."""
    targets = {"cpu": DEFAULT_CPU_UTILIZATION, "memory": None}
    if metrics is not None:
        targets = {"cpu": metrics.cpu_utilization, "memory": metrics.memory_utilization}
    return [
        {
            "type": "Resource",
            "resource": {
                "name": resource,
                "target": {"type": "Utilization", "averageUtilization": utilization},
            },
        }
        for resource, utilization in targets.items()
        if utilization is not None
    ]


def _rules(rules: ScalingRules) -> Manifest:
    built: Manifest = {}
    if rules.stabilization_window_seconds is not None:
        built["stabilizationWindowSeconds"] = rules.stabilization_window_seconds
    if rules.select_policy is not None:
        built["selectPolicy"] = rules.select_policy.value
    if rules.policies:
        built["policies"] = [
            {"type": rule.type.value, "value": rule.value, "periodSeconds": rule.period_seconds}
            for rule in rules.policies
        ]
    return built


def hpa_behavior(behavior: ScalingBehavior | None) -> Manifest | None:
    """The HPA's behavior, field for field; None leaves the HPA's defaults."""
    if behavior is None:
        return None
    built: Manifest = {}
    if behavior.scale_up is not None:
        built["scaleUp"] = _rules(behavior.scale_up)
    if behavior.scale_down is not None:
        built["scaleDown"] = _rules(behavior.scale_down)
    return built or None


def build_hpa(
    policy: ScalingPolicy,
    environment: Environment,
    now: datetime,
    *,
    pinned: int | None = None,
) -> Manifest:
    """The HPA of ``policy`` for ``environment`` at ``now`` (aware).

    ``pinned`` is the count a paused policy holds; the policy's schedules must have
    passed ``schedules.schedule_problems``.
    """
    window = active_schedule(policy.spec.schedules, now)
    return hpa(policy, environment, replica_range(policy.spec, window, pinned=pinned))


def hpa(policy: ScalingPolicy, environment: Environment, replicas: ReplicaRange) -> Manifest:
    """The HPA of ``policy`` for ``environment`` with the replica range already decided."""
    target = Owner.of(environment).name
    labels = {
        **environment_builders.labels(environment),
        POLICY_LABEL: label_value(hpa_name(policy)),
    }
    spec: Manifest = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": target},
        "minReplicas": replicas.minimum,
        "maxReplicas": replicas.maximum,
        "metrics": hpa_metrics(policy.spec.metrics),
    }
    behavior = hpa_behavior(policy.spec.behavior)
    if behavior is not None:
        spec["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(Owner.of(policy), hpa_name(policy), labels),
        "spec": spec,
    }


__all__ = [
    "POLICY_LABEL",
    "ReplicaRange",
    "build_hpa",
    "hpa",
    "hpa_behavior",
    "hpa_metrics",
    "hpa_name",
    "replica_range",
]
