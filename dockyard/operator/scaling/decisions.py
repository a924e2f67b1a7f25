"""Whether a ScalingPolicy is in force, and whether it is paused: pure decisions.

Acceptance. One policy scales an environment: when several name the same target, the
oldest (by creationTimestamp, then by name, so that the order is total) wins and the
others are refused with reason ``Conflict`` naming it. The oldest wins whatever its own
state, so a typo in the winner's spec does not hand the environment to another policy
behind its owner's back. A policy is also refused while its target does not exist, when
a schedule does not parse, and when its floor is below what the target's tier allows.

Pausing. A policy is paused while its spec says so, and, unless
``pauseDuringRestore`` is off, while a Restore into its environment is in progress
(any phase but Completed and Failed, dry runs excluded: they change nothing). A paused
policy holds the Deployment at its current replicas by pinning the HPA
(minReplicas = maxReplicas = that count); see docs/scaling.md for why it is pinned
rather than removed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from dockyard.core.conditions import Verdict, find
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.environment import Environment, Tier
from dockyard.core.models.restore import Restore, RestoreConditionType, RestorePhase
from dockyard.core.models.scaling import ScalingPolicy, ScalingPolicyConditionType

# Production environments run at least this many pods (Environment's CEL rule says so
# for spec.replicas; a policy must not undercut it).
PRODUCTION_MINIMUM: Final = 2
_NEVER: Final = datetime.max.replace(tzinfo=UTC)


class AcceptanceReason(StrEnum):
    """Why a policy is, or is not, in force (the Accepted condition's reason)."""

    ACCEPTED = "Accepted"
    CONFLICT = "Conflict"
    TARGET_NOT_FOUND = "TargetNotFound"
    INVALID_SCHEDULE = "InvalidSchedule"
    BELOW_TIER_MINIMUM = "BelowTierMinimum"
    HPA_REJECTED = "HorizontalPodAutoscalerRejected"
    TARGET_NOT_MANAGED = "TargetNotManaged"
    HPA_CONFLICT = "HorizontalPodAutoscalerConflict"


class PauseReason(StrEnum):
    """Why a policy holds its replicas (the Paused condition's reason)."""

    SPEC = "PausedBySpec"
    RESTORE_IN_PROGRESS = "RestoreInProgress"
    NOT_PAUSED = "NotPaused"


@dataclass(frozen=True, slots=True)
class Pause:
    """Why a policy is paused; ``restore`` names the Restore that paused it, if one did."""

    reason: PauseReason
    message: str
    restore: str | None = None


def precedence(policy: ScalingPolicy) -> tuple[datetime, str]:
    """The order in which policies for one environment claim it: oldest first."""
    meta = policy.metadata
    return (meta.creation_timestamp or _NEVER, meta.name or "")


def prevailing_rival(
    policy: ScalingPolicy, others: Sequence[ScalingPolicy]
) -> ScalingPolicy | None:
    """The policy that holds ``policy``'s environment before it, if any.

    ``others`` are the policies of the namespace (``policy`` itself among them or not).
    """
    target = policy.spec.target_ref.name
    mine = precedence(policy)
    rivals = [
        other
        for other in others
        if other.spec.target_ref.name == target
        and other.metadata.name != policy.metadata.name
        and precedence(other) < mine
    ]
    return min(rivals, key=precedence, default=None)


def acceptance(
    policy: ScalingPolicy,
    *,
    rival: ScalingPolicy | None,
    environment: Environment | None,
    schedule_problems: Sequence[str],
    foreign_target: bool = False,
) -> Verdict:
    """The Accepted condition: whether ``policy`` is in force, with the first reason
    against it, in this order."""
    target = policy.spec.target_ref.name
    if rival is not None:
        created = rival.metadata.creation_timestamp
        since = f" (created {created.isoformat()})" if created else ""
        return Verdict.of(
            False,
            AcceptanceReason.CONFLICT,
            f"ScalingPolicy {rival.metadata.name}{since} already scales environment "
            f"{target}; an environment has one policy, the oldest. Delete or retarget one.",
        )
    if environment is None:
        return Verdict.of(
            False,
            AcceptanceReason.TARGET_NOT_FOUND,
            f"Environment {target} does not exist in this namespace.",
        )
    if foreign_target:
        return Verdict.of(
            False,
            AcceptanceReason.TARGET_NOT_MANAGED,
            f"Deployment {target} is not Environment {target}'s (made by hand, or by another "
            "controller): a ScalingPolicy scales only the Deployment its environment runs.",
        )
    if schedule_problems:
        return Verdict.of(False, AcceptanceReason.INVALID_SCHEDULE, "; ".join(schedule_problems))
    if environment.spec.tier is Tier.PRODUCTION and policy.spec.min_replicas < PRODUCTION_MINIMUM:
        return Verdict.of(
            False,
            AcceptanceReason.BELOW_TIER_MINIMUM,
            f"Environment {target} is production, which runs at least {PRODUCTION_MINIMUM} "
            f"pods; minReplicas is {policy.spec.min_replicas}.",
        )
    return Verdict.of(
        True,
        AcceptanceReason.ACCEPTED,
        f"HorizontalPodAutoscaler {policy.metadata.name} scales Deployment {target}.",
    )


def restore_in_progress(restore: Restore) -> bool:
    """Whether ``restore`` may be changing its target now (or is about to).

    Not a dry run, and not one waiting for approval: that may take days, and nothing
    touches the target until it is given (the phase then moves on, and the pause starts).
    Nor one not planned yet: nothing touches the target before the plan, and a Restore
    that cannot be planned (its backup missing, none verified) waits without a bound,
    which would pin the target's replicas for as long.
    """
    if restore.spec.dry_run:
        return False
    phase = restore.status.phase
    if phase is None or phase is RestorePhase.AWAITING_APPROVAL:
        return False
    if phase is RestorePhase.PENDING:
        # Planned, an attempt may start (or retry). A plan that no longer holds (its
        # backup gone since a dry run) stays in status beside Planned False: no pause.
        planned = restore.status.condition(RestoreConditionType.PLANNED)
        holds = planned is None or planned.status is not ConditionStatus.FALSE
        return restore.status.plan is not None and holds
    return not phase.is_done


def restore_target(restore: Restore, backup_sources: Mapping[str, str]) -> str | None:
    """The environment ``restore`` restores into, or None when that cannot be told yet.

    An explicit target wins; an in-place restore goes into the environment its backup
    came from: the plan says which once it is made, the source names it when the backup
    is chosen by environment, and ``backup_sources`` (Backup name to environment) when
    a Backup is named.
    """
    spec = restore.spec
    if spec.target is not None:
        return spec.target.environment_ref.name
    if restore.status.plan is not None:
        return restore.status.plan.target
    if spec.source.environment_ref is not None:
        return spec.source.environment_ref.name
    if spec.source.backup_ref is not None:
        return backup_sources.get(spec.source.backup_ref.name)
    return None


def needs_backup_sources(restores: Sequence[Restore]) -> bool:
    """Whether telling some in-progress restore's target needs its Backup."""
    return any(
        restore_in_progress(r)
        and r.spec.target is None
        and r.status.plan is None
        and r.spec.source.environment_ref is None
        for r in restores
    )


def pause_decision(
    policy: ScalingPolicy, restores: Sequence[Restore], backup_sources: Mapping[str, str]
) -> Pause | None:
    """Why ``policy`` is paused now, or None when it scales freely."""
    if policy.spec.paused:
        return Pause(PauseReason.SPEC, "spec.paused is true.")
    if not policy.spec.pause_during_restore:
        return None
    target = policy.spec.target_ref.name
    blocking = sorted(
        (
            r
            for r in restores
            if restore_in_progress(r) and restore_target(r, backup_sources) == target
        ),
        key=lambda r: r.metadata.name or "",
    )
    if not blocking:
        return None
    first = blocking[0]
    phase = first.status.phase.value if first.status.phase else "Pending"
    others = f" (and {len(blocking) - 1} more)" if len(blocking) > 1 else ""
    return Pause(
        PauseReason.RESTORE_IN_PROGRESS,
        f"Restore {first.metadata.name}{others} into environment {target} is in progress "
        f"(phase {phase}).",
        restore=first.metadata.name,
    )


def held_replicas(policy: ScalingPolicy, hpa: Mapping[str, Any] | None) -> int | None:
    """The count an ongoing pause already holds: the pinned HPA's, while the status says
    the policy is paused. None when no pause is ongoing."""
    paused = find(policy.status.conditions, ScalingPolicyConditionType.PAUSED.value)
    if paused is None or paused.status is not ConditionStatus.TRUE:
        return None
    spec = (hpa or {}).get("spec") or {}
    low, high = spec.get("minReplicas"), spec.get("maxReplicas")
    return low if isinstance(low, int) and low == high else None


def pinned_replicas(
    deployment: Mapping[str, Any] | None,
    hpa: Mapping[str, Any] | None,
    fallback: int,
    *,
    held: int | None = None,
) -> int:
    """The count a paused policy holds: what it already holds (``held``), so a pause keeps
    the count it began with; else the Deployment's replicas as they are now.

    Then what the HPA last saw, then ``fallback``; at least 1, as an HPA's minReplicas
    must be (a Deployment at 0 stays there: the HPA leaves a target at 0 alone).
    """
    for value in (
        held,
        ((deployment or {}).get("spec") or {}).get("replicas"),
        ((hpa or {}).get("status") or {}).get("currentReplicas"),
    ):
        if isinstance(value, int):
            return max(value, 1)
    return max(fallback, 1)


__all__ = [
    "PRODUCTION_MINIMUM",
    "AcceptanceReason",
    "Pause",
    "PauseReason",
    "acceptance",
    "held_replicas",
    "needs_backup_sources",
    "pause_decision",
    "pinned_replicas",
    "precedence",
    "prevailing_rival",
    "restore_in_progress",
    "restore_target",
]
