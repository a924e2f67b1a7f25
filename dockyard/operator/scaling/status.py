"""What a ScalingPolicy reports, computed from what a pass decided and observed (pure).

Accepted says whether the policy is in force; Paused whether replicas are held, and
why; Active whether the HPA is computing replicas from the metrics, in the HPA's own
words (its ``ScalingActive`` condition), so a missing metrics server shows up on the
policy rather than only on the HPA. The replica counts and the last scale time are the
HPA's status; the effective minimum and the open window are what the pass gave the HPA.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic import ValidationError

from dockyard.core.conditions import Verdict, find, set_condition
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.scaling import (
    ActiveSchedule,
    ScalingPolicy,
    ScalingPolicyConditionType,
    ScalingPolicyStatus,
)
from dockyard.operator.builders.scaling import ReplicaRange
from dockyard.operator.scaling.decisions import Pause, PauseReason
from dockyard.operator.store import replacing

# Kubernetes truncates longer condition messages; ours say what matters first.
_MESSAGE_LIMIT: Final = 4096
_HPA_ACTIVE: Final = "ScalingActive"


def _hpa_activity(hpa: Mapping[str, Any] | None) -> tuple[ConditionStatus, str, str]:
    """The Active condition from the HPA's ScalingActive condition."""
    conditions = ((hpa or {}).get("status") or {}).get("conditions") or ()
    found = next((c for c in conditions if c.get("type") == _HPA_ACTIVE), None)
    if found is None:
        return ConditionStatus.UNKNOWN, "Pending", "The HPA has not reported yet."
    try:
        status = ConditionStatus(found.get("status", "Unknown"))
    except ValueError:
        status = ConditionStatus.UNKNOWN
    return status, str(found.get("reason") or "Unknown"), str(found.get("message") or "")


def _hpa_counts(hpa: Mapping[str, Any] | None) -> dict[str, Any]:
    status = (hpa or {}).get("status") or {}
    current, desired = status.get("currentReplicas"), status.get("desiredReplicas")
    # An HPA that could not compute a recommendation (no metrics) reports 0 desired pods
    # beside running ones; a policy's floor is at least 1, so that 0 means "none yet".
    if desired == 0 and isinstance(current, int) and current > 0:
        desired = None
    return {
        "current_replicas": current,
        "desired_replicas": desired,
        "last_scale_time": status.get("lastScaleTime"),
    }


def summarize(
    policy: ScalingPolicy,
    *,
    acceptance: Verdict,
    pause: Pause | None,
    replicas: ReplicaRange | None,
    hpa: Mapping[str, Any] | None,
    now: datetime | None = None,
) -> ScalingPolicyStatus:
    """The status after a pass. ``replicas`` and ``hpa`` are None when the policy has no
    HPA (it is not accepted); ``hpa`` is the HPA as the API server returned it."""
    previous = policy.status
    generation = policy.metadata.generation
    accepted = (acceptance.status, acceptance.reason, acceptance.message)
    if not acceptance.holds:
        active = (ConditionStatus.FALSE, "NotAccepted", "The policy is not in force.")
    elif pause is not None:
        active = (ConditionStatus.FALSE, "Paused", pause.message)
    else:
        active = _hpa_activity(hpa)
    if not acceptance.holds or replicas is None:
        paused = (ConditionStatus.FALSE, "NotAccepted", "The policy is not in force.")
    elif pause is not None:
        paused = (
            ConditionStatus.TRUE,
            pause.reason.value,
            f"{pause.message} Replicas are held at {replicas.minimum}.",
        )
    else:
        paused = (ConditionStatus.FALSE, PauseReason.NOT_PAUSED.value, "Replicas follow the HPA.")
    conditions = previous.conditions
    for kind, (status, reason, message) in (
        (ScalingPolicyConditionType.ACCEPTED, accepted),
        (ScalingPolicyConditionType.ACTIVE, active),
        (ScalingPolicyConditionType.PAUSED, paused),
    ):
        conditions = set_condition(
            conditions,
            type=kind.value,
            status=status,
            reason=reason,
            message=message[:_MESSAGE_LIMIT],
            generation=generation,
            now=now,
        )
    window = replicas.window if replicas is not None else None
    try:
        counts = ScalingPolicyStatus.model_validate(_hpa_counts(hpa))
    except ValidationError:
        counts = ScalingPolicyStatus()  # an HPA status we cannot read reports nothing
    return ScalingPolicyStatus(
        observed_generation=generation,
        conditions=conditions,
        current_replicas=counts.current_replicas,
        desired_replicas=counts.desired_replicas,
        last_scale_time=counts.last_scale_time,
        effective_min_replicas=replicas.minimum if replicas is not None else None,
        active_schedule=(
            ActiveSchedule(name=window.name, until=window.until, min_replicas=window.min_replicas)
            if window is not None
            else None
        ),
    )


def status_patch(status: ScalingPolicyStatus) -> dict[str, Any]:
    """``status`` as a JSON merge patch body: fields it no longer has are removed."""
    return {"status": replacing(status)}


@dataclass(frozen=True, slots=True)
class Announcement:
    """A Kubernetes Event to record about a policy: why, what, and whether it warns."""

    reason: str
    message: str
    warning: bool = False


def announcements(before: ScalingPolicyStatus, after: ScalingPolicyStatus) -> list[Announcement]:
    """The Events for what a pass changed: acceptance, pausing, schedule windows."""
    found: list[Announcement] = []
    accepted = ScalingPolicyConditionType.ACCEPTED.value
    was, now = find(before.conditions, accepted), find(after.conditions, accepted)
    if now is not None and (was is None or (was.status, was.reason) != (now.status, now.reason)):
        found.append(
            Announcement(now.reason, now.message, warning=now.status is not ConditionStatus.TRUE)
        )
    paused = ScalingPolicyConditionType.PAUSED.value
    was, now = find(before.conditions, paused), find(after.conditions, paused)
    was_paused = was is not None and was.status is ConditionStatus.TRUE
    is_paused = now is not None and now.status is ConditionStatus.TRUE
    if is_paused and not was_paused and now is not None:
        found.append(Announcement("Paused", now.message))
    elif was_paused and not is_paused:
        found.append(Announcement("Resumed", "Replicas follow the HPA again."))
    opened, closed = after.active_schedule, before.active_schedule
    if opened is not None and (closed is None or closed.name != opened.name):
        found.append(
            Announcement(
                "ScheduleStarted",
                f"Schedule {opened.name} raises the floor to {opened.min_replicas} "
                f"until {opened.until.isoformat()}.",
            )
        )
    if closed is not None and (opened is None or opened.name != closed.name):
        found.append(Announcement("ScheduleEnded", f"Schedule {closed.name}'s window closed."))
    return found


__all__ = ["Announcement", "announcements", "status_patch", "summarize"]
