"""The ScalingPolicy kind: how an Environment scales, reconciled into an HPA.

This module owns the policy's spec (the target, the replica range, scheduled floors,
pausing; the utilization targets and the ``autoscaling/v2`` behavior are in
``scaling_behavior``) and status models,
the CEL rules the API server enforces on them, and the CRD metadata (short name ``sp``,
printer columns). What the policy *does* (the HorizontalPodAutoscaler it becomes, when a
schedule's window is open, when it is paused) is the operator's business, in
``dockyard.operator.scaling``.

The range rules are CEL and are mirrored by pydantic validators with the same messages,
so ``kubectl apply`` and ``POST .../scalingpolicies`` refuse the same mistakes in the
same words. Whether a schedule's cron expression and time zone really parse is decided
by the strict parser (``dockyard.core.cron``), whose verdict the operator writes into
the Accepted condition, as for BackupSchedule.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, ClassVar, Final, Self

from pydantic import AfterValidator, Field, model_validator

from dockyard.core.durations import GO_DURATION_PATTERN, parse_duration
from dockyard.core.models.common import CRModel, CustomResource, status_field
from dockyard.core.models.declarations import CRDInfo, PrinterColumn, ValidationRule
from dockyard.core.models.references import EnvironmentReference
from dockyard.core.models.rules import positive_duration_rule
from dockyard.core.models.scaling_behavior import ScalingBehavior, ScalingMetrics
from dockyard.core.models.scheduling import CronExpression, TimeZoneName
from dockyard.core.models.status import Status

# The replica range a policy may declare; the same ceiling as Environment.spec.replicas.
MAX_REPLICAS: Final = 100
MAX_SCHEDULES: Final = 10
# A floor raised for longer than a week is a new minReplicas, not a schedule.
MAX_WINDOW: Final = "168h"
SCHEDULE_NAME_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DEFAULT_CPU_UTILIZATION: Final = 80

_MIN_ABOVE_MAX: Final = "minReplicas must not exceed maxReplicas"
_SCHEDULE_ABOVE_MAX: Final = "every schedule's minReplicas must not exceed maxReplicas"
_WINDOW_POSITIVE: Final = "duration must be positive"
_WINDOW_TOO_LONG: Final = f"duration must not exceed {MAX_WINDOW}"


class ScalingPolicyConditionType(StrEnum):
    """The condition types the operator sets on a ScalingPolicy."""

    ACCEPTED = "Accepted"
    """The policy is in force: its HPA exists (False: why not, such as Conflict)."""
    ACTIVE = "Active"
    """The HPA computes replicas from the metrics (False: the HPA's own reason)."""
    PAUSED = "Paused"
    """Replicas are held where they are (the reason says why: Spec or RestoreInProgress)."""


def _check_window(text: str) -> str:
    window = parse_duration(text)
    if window <= timedelta(0):
        raise ValueError(_WINDOW_POSITIVE)
    if window > parse_duration(MAX_WINDOW):
        raise ValueError(_WINDOW_TOO_LONG)
    return text


Window = Annotated[
    str,
    Field(min_length=2, max_length=32, pattern=GO_DURATION_PATTERN),
    positive_duration_rule("duration"),
    ValidationRule(
        rule=(
            f"!self.matches(r'{GO_DURATION_PATTERN}') || duration(self) <= duration('{MAX_WINDOW}')"
        ),
        message=_WINDOW_TOO_LONG,
    ),
    AfterValidator(_check_window),
]


class ScheduledFloor(CRModel):
    """A recurring window during which the policy's floor is raised."""

    list_map_keys = ("name",)

    name: str = Field(min_length=1, max_length=63, pattern=SCHEDULE_NAME_PATTERN)
    """Name of the schedule, unique within schedules; shown in status."""
    schedule: CronExpression
    """When the window opens, as a five-field cron expression (minute hour day-of-month month
    day-of-week) or a macro such as @daily; read strictly, as BackupSchedule's schedule is. An
    expression the strict parser refuses sets Accepted=False with reason InvalidSchedule."""
    time_zone: TimeZoneName = "UTC"
    """IANA time zone the schedule is read in, for example Europe/Berlin; daylight saving time is
    honoured. An unknown name sets Accepted=False."""
    duration: Window = Field(
        description=(
            f"How long the window stays open after each time the schedule fires, as hours, "
            f"minutes and seconds (8h, 1h30m, 90s); at most {MAX_WINDOW}."
        ),
    )
    min_replicas: int = Field(ge=1, le=MAX_REPLICAS)
    """The floor while the window is open: the HPA's minReplicas becomes the larger of this and
    spec.minReplicas. At most spec.maxReplicas."""


class ScalingPolicySpec(CRModel):
    """The desired scaling of an environment."""

    cel_rules = (
        ValidationRule(
            rule="self.minReplicas <= self.maxReplicas",
            message=_MIN_ABOVE_MAX,
            field_path=".minReplicas",
        ),
        ValidationRule(
            rule="!has(self.schedules) || self.schedules.all(s, s.minReplicas <= self.maxReplicas)",
            message=_SCHEDULE_ABOVE_MAX,
            field_path=".schedules",
        ),
    )

    target_ref: EnvironmentReference
    """The Environment to scale (its Deployment, which is named after it). One policy per
    environment: a second one is refused with Accepted=False, reason Conflict."""
    min_replicas: int = Field(
        ge=1,
        le=MAX_REPLICAS,
        description=(
            f"Fewest pods the HPA keeps (1-{MAX_REPLICAS}). Production environments need at "
            "least 2."
        ),
    )
    max_replicas: int = Field(
        ge=1,
        le=MAX_REPLICAS,
        description=f"Most pods the HPA runs (1-{MAX_REPLICAS}), at least minReplicas.",
    )
    metrics: ScalingMetrics | None = Field(
        default=None,
        description=(
            "Utilization targets. When unset the HPA holds average CPU at "
            f"{DEFAULT_CPU_UTILIZATION}% of the request."
        ),
    )
    behavior: ScalingBehavior | None = None
    """How fast the HPA may scale in each direction, passed to the HPA as its behavior; unset parts
    take the HPA's defaults."""
    schedules: list[ScheduledFloor] = Field(default_factory=list, max_length=MAX_SCHEDULES)
    """Recurring windows that raise the floor, such as business hours. While several are open the
    highest floor wins; status.activeSchedule names it."""
    paused: bool = False
    """Hold the environment at its current replicas: the HPA is pinned (minReplicas = maxReplicas =
    the current count) until this is false again."""
    pause_during_restore: bool = True
    """Pause automatically while a Restore into the environment is in progress (any phase but
    Completed and Failed, dry runs excluded), so the restore does not race the autoscaler."""

    @model_validator(mode="after")
    def _within_range(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(_MIN_ABOVE_MAX)
        if any(s.min_replicas > self.max_replicas for s in self.schedules):
            raise ValueError(_SCHEDULE_ABOVE_MAX)
        return self


class ActiveSchedule(CRModel):
    """The scheduled window whose floor is in force."""

    name: str
    """Name of the schedule (spec.schedules[].name)."""
    until: datetime
    """When the window closes."""
    min_replicas: int = Field(ge=1)
    """The floor the window sets."""


class ScalingPolicyStatus(Status):
    """The observed state of a scaling policy, written by the operator."""

    field_descriptions: ClassVar[Mapping[str, str]] = {
        "conditions": "Current conditions: Accepted, Active and Paused.",
    }

    current_replicas: int | None = Field(default=None, ge=0)
    """Pods the environment runs, as its HPA last observed them."""
    desired_replicas: int | None = Field(default=None, ge=0)
    """Pods the HPA last asked for."""
    effective_min_replicas: int | None = Field(default=None, ge=0)
    """The HPA's minReplicas now: spec.minReplicas, raised by an open schedule window, or the pinned
    count while paused."""
    active_schedule: ActiveSchedule | None = None
    """The schedule window open now, if any."""
    last_scale_time: datetime | None = None
    """When the HPA last changed the number of pods."""


class ScalingPolicy(CustomResource):
    """A ScalingPolicy scales an Environment through a HorizontalPodAutoscaler."""

    crd = CRDInfo(
        kind="ScalingPolicy",
        plural="scalingpolicies",
        short_names=("sp",),
        printer_columns=(
            PrinterColumn("Target", "string", ".spec.targetRef.name", "The Environment scaled."),
            PrinterColumn("Min", "integer", ".spec.minReplicas", "Fewest pods."),
            PrinterColumn("Max", "integer", ".spec.maxReplicas", "Most pods."),
            PrinterColumn("Current", "integer", ".status.currentReplicas", "Pods running."),
            PrinterColumn("Desired", "integer", ".status.desiredReplicas", "Pods the HPA wants."),
            PrinterColumn(
                "Active Schedule",
                "string",
                ".status.activeSchedule.name",
                "The schedule window open now.",
            ),
            PrinterColumn.condition(
                "Paused", ScalingPolicyConditionType.PAUSED, "Whether replicas are held."
            ),
            PrinterColumn.condition(
                "Accepted",
                ScalingPolicyConditionType.ACCEPTED,
                "Why the policy is or is not in force.",
                show="reason",
                priority=1,
            ),
        ),
    )

    spec: ScalingPolicySpec
    """The desired scaling of the environment."""
    status: ScalingPolicyStatus = status_field(
        ScalingPolicyStatus, "The observed state of the policy, written by the operator."
    )


__all__ = [
    "DEFAULT_CPU_UTILIZATION",
    "MAX_REPLICAS",
    "ActiveSchedule",
    "ScalingPolicy",
    "ScalingPolicyConditionType",
    "ScalingPolicySpec",
    "ScalingPolicyStatus",
    "ScheduledFloor",
]
