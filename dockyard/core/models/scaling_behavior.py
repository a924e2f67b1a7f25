"""How a ScalingPolicy's HPA measures load and how fast it may scale.

This module owns the utilization targets (``ScalingMetrics``) and the
``autoscaling/v2`` behavior (``ScalingBehavior``: rules per direction, stabilization
windows) of a ScalingPolicy's spec, within the HPA's own bounds, with their CEL rules.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final, Self

from pydantic import Field, model_validator

from dockyard.core.models.common import CRModel
from dockyard.core.models.declarations import ValidationRule

MAX_RULES_PER_DIRECTION: Final = 10
# HPA's own bounds for behavior (autoscaling/v2 validation).
MAX_STABILIZATION_SECONDS: Final = 3600
MAX_PERIOD_SECONDS: Final = 1800
_NO_METRIC: Final = "set cpuUtilization, memoryUtilization or both"


class ScalingRuleType(StrEnum):
    """How a scaling rule's value is counted."""

    PODS = "Pods"
    PERCENT = "Percent"


class SelectPolicy(StrEnum):
    """Which of several rules a direction applies, or none."""

    MAX = "Max"
    MIN = "Min"
    DISABLED = "Disabled"


class ScalingMetrics(CRModel):
    """The average utilization to hold, as a percentage of the pods' resource requests."""

    cel_rules = (
        ValidationRule(
            rule="has(self.cpuUtilization) || has(self.memoryUtilization)", message=_NO_METRIC
        ),
    )

    cpu_utilization: int | None = Field(default=None, ge=1, le=100)
    """Target average CPU use across the pods, in percent (1-100) of their CPU request. The HPA adds
    pods above it and removes them below it."""
    memory_utilization: int | None = Field(default=None, ge=1, le=100)
    """Target average memory use across the pods, in percent (1-100) of their memory request. With
    both targets the HPA follows whichever asks for more pods."""

    @model_validator(mode="after")
    def _some_metric(self) -> Self:
        if self.cpu_utilization is None and self.memory_utilization is None:
            raise ValueError(_NO_METRIC)
        return self


class ScalingRule(CRModel):
    """How much one direction may change the replicas within one period."""

    type: ScalingRuleType
    """Pods: value is a number of pods; Percent: a percentage of the current ones."""
    value: int = Field(ge=1, le=1000)
    """How many pods, or what percentage of the current ones, may change."""
    period_seconds: int = Field(
        ge=1,
        le=MAX_PERIOD_SECONDS,
        description=(
            f"The window (1-{MAX_PERIOD_SECONDS} seconds) over which the value may be spent."
        ),
    )


class ScalingRules(CRModel):
    """The HPA's scaling rules for one direction (autoscaling/v2 HPAScalingRules)."""

    stabilization_window_seconds: int | None = Field(
        default=None,
        ge=0,
        le=MAX_STABILIZATION_SECONDS,
        description=(
            f"Seconds (0-{MAX_STABILIZATION_SECONDS}) of past recommendations considered, "
            "so replicas do not flap: scaling down takes the highest of them, scaling up "
            "the lowest. When unset the HPA's default applies (0 up, 300 down)."
        ),
    )
    select_policy: SelectPolicy | None = None
    """Which rule applies when several do: Max allows the largest change, Min the smallest, Disabled
    turns this direction off. When unset the HPA uses Max."""
    policies: list[ScalingRule] = Field(default_factory=list, max_length=MAX_RULES_PER_DIRECTION)
    """How fast replicas may change. When empty the HPA's defaults apply (up: 100% or 4 pods per 15
    s; down: 100% per 15 s)."""


class ScalingBehavior(CRModel):
    """How fast the HPA scales up and down (autoscaling/v2 HorizontalPodAutoscalerBehavior)."""

    scale_up: ScalingRules | None = None
    """Rules for adding pods; unset: the HPA's defaults."""
    scale_down: ScalingRules | None = None
    """Rules for removing pods; unset: the HPA's defaults."""


__all__ = [
    "MAX_PERIOD_SECONDS",
    "MAX_RULES_PER_DIRECTION",
    "MAX_STABILIZATION_SECONDS",
    "ScalingBehavior",
    "ScalingMetrics",
    "ScalingRule",
    "ScalingRuleType",
    "ScalingRules",
    "SelectPolicy",
]
