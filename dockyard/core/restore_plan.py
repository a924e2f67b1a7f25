"""Planning a restore, and deciding whether it may go ahead: pure functions, no I/O.

This module owns the decisions a Restore needs before anything changes:

- which backup it restores (``resolve_source``): the named one, or the newest Completed
  backup of an environment (``latest``), or the newest one a restore drill verified
  (``latestVerified``);
- into which environment, and whether that is in place (``restore_target``);
- how long it will take (``estimate_duration``): the median throughput of the
  environment's past restores and drills (artifact bytes per second), or a
  conservative default when there is no history;
- the ``status.plan`` that a dry run stops at (``plan_restore``);
- whether it needs approval and whether the approval it has counts (``decide_approval``):
  a restore into a production environment needs a user other than the requester, who
  approves once the plan is shown (AwaitingApproval) and holds the ``approve`` verb.

Who requested a restore (``identify_requester``) comes from the
``dockyard.io/requested-by`` annotation, which the REST API sets to the authenticated
caller. Failing that, the object's managedFields are read: their earliest entry names
the *field manager* that created the object (``kubectl-client-side-apply``, say), which
is a client, not a person. It is recorded so status shows where the restore came from,
but it cannot prove that the approver is someone else, so approval of such a restore is
refused until the annotation names the requester. (Kubernetes does not tell a
controller who created an object; a ValidatingAdmissionPolicy that requires the
annotation to equal ``request.userInfo.username`` on create, and
``dockyard.io/approved-by`` to equal it on update, makes both annotations proof rather
than claims, for kubectl and for the REST API, which writes as the caller.)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Final

from dockyard.core.models.backup import Backup, BackupPhase
from dockyard.core.models.environment import Tier
from dockyard.core.models.restore import (
    APPROVED_BY_ANNOTATION,
    REQUESTED_BY_ANNOTATION,
    Restore,
    RestoreApproval,
    RestorePhase,
    RestorePlan,
    RestoreSpec,
    SourceSelection,
)
from dockyard.core.models.restore_drill import RestoreDrill

# With no history: artifacts are zstd-compressed dumps, and pg_restore rebuilds indexes
# as it goes, so a restore reads far fewer bytes per second than a disk could give.
DEFAULT_BYTES_PER_SECOND: Final = 8 * 1024 * 1024
# Creating the database, the role grants and the switch-over, whatever the size.
FIXED_OVERHEAD_SECONDS: Final = 10
# The most recent runs say most about the current data size and hardware.
HISTORY_SAMPLES: Final = 10
# Tiers whose restores need a second person.
APPROVAL_TIERS: Final = frozenset({Tier.PRODUCTION})
# Sorts before any real time (all times here are aware).
_NEVER: Final = datetime.min.replace(tzinfo=UTC)


# --- the source backup -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceChoice:
    """The backup a restore takes, or why there is none (yet)."""

    backup: Backup | None
    reason: str


def _completed_at(backup: Backup) -> datetime:
    completed = backup.status.completed_at
    return completed if completed is not None else _NEVER


def _is_restorable(backup: Backup) -> bool:
    """Completed, and not being deleted (its finalizer is deleting the artifact)."""
    return (
        backup.status.phase == BackupPhase.COMPLETED
        and backup.status.completed_at is not None
        and backup.metadata.deletion_timestamp is None
    )


def choose_backup(
    backups: Iterable[Backup], *, environment: str, select: SourceSelection
) -> SourceChoice:
    """The newest Completed backup of ``environment`` (a verified one for latestVerified)."""
    candidates = [
        b for b in backups if b.spec.environment_ref.name == environment and _is_restorable(b)
    ]
    if select == SourceSelection.LATEST_VERIFIED:
        candidates = [b for b in candidates if b.status.standing_verification() is not None]
    if not candidates:
        which = "completed" if select == SourceSelection.LATEST else "drill-verified completed"
        return SourceChoice(None, f"environment {environment} has no {which} backup")
    chosen = max(candidates, key=lambda b: (_completed_at(b), b.metadata.name or ""))
    return SourceChoice(chosen, f"{select} backup of environment {environment}")


def resolve_source(spec: RestoreSpec, backups: Iterable[Backup]) -> SourceChoice:
    """The backup ``spec.source`` designates, among ``backups`` (the namespace's)."""
    source = spec.source
    if source.environment_ref is not None and source.select is not None:
        return choose_backup(backups, environment=source.environment_ref.name, select=source.select)
    if source.backup_ref is None:  # the model's validation makes this unreachable
        return SourceChoice(None, "the restore names no source")
    name = source.backup_ref.name
    backup = next((b for b in backups if b.metadata.name == name), None)
    if backup is None:
        return SourceChoice(None, f"backup {name} does not exist")
    if backup.metadata.deletion_timestamp is not None:
        return SourceChoice(None, f"backup {name} is being deleted")
    if not _is_restorable(backup):
        phase = backup.status.phase or BackupPhase.PENDING
        return SourceChoice(None, f"backup {name} is {phase}, not {BackupPhase.COMPLETED}")
    return SourceChoice(backup, f"backup {name}")


@dataclass(frozen=True, slots=True)
class TargetChoice:
    """The environment a restore replaces the database of."""

    environment: str
    in_place: bool


def restore_target(spec: RestoreSpec, backup: Backup) -> TargetChoice:
    """``spec.target``, or the backup's own environment when it is omitted."""
    source_environment = backup.spec.environment_ref.name
    target = spec.target.environment_ref.name if spec.target else source_environment
    return TargetChoice(environment=target, in_place=target == source_environment)


# --- the duration estimate -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestoreSample:
    """One past restore: how many artifact bytes, in how many seconds."""

    size_bytes: int
    seconds: float
    at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DurationEstimate:
    """How long a restore is expected to take, and what that is based on."""

    seconds: int
    samples: int
    bytes_per_second: float


def estimate_duration(
    size_bytes: int | None,
    history: Sequence[RestoreSample],
    *,
    default_bytes_per_second: float = DEFAULT_BYTES_PER_SECOND,
) -> DurationEstimate:
    """Seconds to restore ``size_bytes`` of artifact, from ``history`` (newest first).

    The median throughput of the latest samples, so one restore slowed by a busy server
    does not skew it; samples without a size or a duration are ignored.
    """
    usable = [s for s in history if s.size_bytes > 0 and s.seconds > 0][:HISTORY_SAMPLES]
    if usable:
        rate = statistics.median(s.size_bytes / s.seconds for s in usable)
    else:
        rate = default_bytes_per_second
    transfer = math.ceil((size_bytes or 0) / rate)
    return DurationEstimate(
        seconds=FIXED_OVERHEAD_SECONDS + transfer, samples=len(usable), bytes_per_second=rate
    )


def restore_history(
    environment: str, restores: Iterable[Restore], drills: Iterable[RestoreDrill]
) -> list[RestoreSample]:
    """Past restores of ``environment``'s backups, from completed Restores and drill runs,
    newest first."""
    samples: list[RestoreSample] = []
    for restore in restores:
        status = restore.status
        plan = status.plan
        if (
            status.phase == RestorePhase.COMPLETED
            and plan is not None
            and plan.source_environment == environment
            and plan.size is not None
            and status.duration_seconds is not None
        ):
            samples.append(RestoreSample(plan.size, status.duration_seconds, status.completed_at))
    for drill in drills:
        if drill.spec.environment_ref.name != environment:
            continue
        for run in drill.status.history:
            if run.backup_size is not None and run.restore_seconds is not None:
                samples.append(RestoreSample(run.backup_size, run.restore_seconds, run.finished_at))
    return sorted(samples, key=lambda s: s.at or _NEVER, reverse=True)


# --- the plan ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanDecision:
    """The plan of a restore, or why it cannot be made (yet)."""

    plan: RestorePlan | None
    reason: str


def plan_restore(
    spec: RestoreSpec,
    *,
    backups: Iterable[Backup],
    tiers: Mapping[str, Tier],
    history: Sequence[RestoreSample] = (),
) -> PlanDecision:
    """What the restore will do: source, target, size, tables, duration, approval.

    ``tiers`` maps the namespace's environments to their tier; a target missing from it
    does not exist.
    """
    choice = resolve_source(spec, backups)
    if choice.backup is None:
        return PlanDecision(None, choice.reason)
    backup = choice.backup
    target = restore_target(spec, backup)
    tier = tiers.get(target.environment)
    if tier is None:
        return PlanDecision(None, f"target environment {target.environment} does not exist")
    status = backup.status
    tables = status.manifest.tables if status.manifest else []
    estimate = estimate_duration(status.size, history)
    plan = RestorePlan(
        backup=backup.metadata.name or "",
        backup_uid=backup.metadata.uid,
        source_environment=backup.spec.environment_ref.name,
        backup_completed_at=status.completed_at,
        verified=status.standing_verification() is not None,
        size=status.size,
        table_count=len(tables),
        tables=list(tables),
        target=target.environment,
        in_place=target.in_place,
        target_tier=tier,
        safety_backup=spec.safety_backup,
        requires_approval=tier in APPROVAL_TIERS,
        estimated_duration_seconds=estimate.seconds,
        estimate_samples=estimate.samples,
    )
    return PlanDecision(plan, f"{choice.reason} into environment {target.environment}")


# --- approval ----------------------------------------------------------------------------


def approval_tier(planned: Tier | None, current: Tier) -> Tier:
    """The tier a restore's approval follows: the one it was planned with, or the
    target's current tier when that is stricter (or the plan predates the record)."""
    if planned is None or current in APPROVAL_TIERS:
        return current
    return planned


class RequesterSource(StrEnum):
    """Where a restore's requester was read from."""

    ANNOTATION = "annotation"
    MANAGED_FIELDS = "managedFields"


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asked for a restore, as far as the object tells."""

    name: str | None
    source: RequesterSource | None

    @property
    def is_user(self) -> bool:
        """Whether ``name`` is a user (the annotation), not merely a client's name."""
        return self.source == RequesterSource.ANNOTATION and bool(self.name)


def identify_requester(
    annotations: Mapping[str, str], managed_fields: Sequence[Mapping[str, Any]] = ()
) -> Requester:
    """The requester from the annotation, else the field manager that created the object."""
    annotated = annotations.get(REQUESTED_BY_ANNOTATION, "").strip()
    if annotated:
        return Requester(annotated, RequesterSource.ANNOTATION)
    entries = [e for e in managed_fields if isinstance(e.get("manager"), str) and e["manager"]]
    if not entries:
        return Requester(None, None)
    # managedFields times are RFC 3339 strings to the second; equal strings sort equal
    # and the API server lists entries in the order they were added.
    first = min(entries, key=lambda e: str(e.get("time") or ""))
    return Requester(str(first["manager"]), RequesterSource.MANAGED_FIELDS)


class ApprovalState(StrEnum):
    """Where a restore stands with respect to approval."""

    NOT_REQUIRED = "NotRequired"
    WAITING = "Waiting"
    APPROVED = "Approved"
    REFUSED = "Refused"
    """The approval given does not count (the requester approving, or a requester that is
    not known as a user); the restore goes on waiting for a valid one."""
    REJECTED = "Rejected"
    """Refused outright while it awaited approval (``restore_rejection``): it fails."""


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    """Whether a restore may touch its target, why, and the record for status."""

    state: ApprovalState
    reason: str
    approval: RestoreApproval | None

    @property
    def may_proceed(self) -> bool:
        return self.state in (ApprovalState.NOT_REQUIRED, ApprovalState.APPROVED)


def decide_approval(
    *,
    target_tier: Tier,
    requester: Requester,
    approved_by: str | None,
    approved_at: datetime | None,
    shown: bool,
    refused_approver: str | None = None,
    dry_run: bool = False,
) -> ApprovalDecision:
    """Whether a restore into an environment of ``target_tier`` may proceed.

    ``shown``: the restore was already AwaitingApproval (its plan fixed and shown) when
    this approval was seen, or the approval was accepted earlier. An approval given
    before that does not count, and stays refused (``refused_approver``) until the
    annotation is removed: the approver cannot have seen the plan that would run.
    Whether the approver holds the ``approve`` verb is checked by the caller
    (``refuse_without_right``): it takes a SubjectAccessReview.
    """
    if dry_run:
        return ApprovalDecision(ApprovalState.NOT_REQUIRED, "a dry run changes nothing", None)
    if target_tier not in APPROVAL_TIERS:
        return ApprovalDecision(
            ApprovalState.NOT_REQUIRED, f"{target_tier} restores need no approval", None
        )
    approver = (approved_by or "").strip() or None
    record = RestoreApproval(
        required_by=target_tier,
        requested_by=requester.name,
        approved_by=None,
        approved_at=None,
    )
    if approver is None:
        who = f"a user other than {requester.name}" if requester.is_user else "a second user"
        return ApprovalDecision(
            ApprovalState.WAITING, f"{target_tier} restores wait for approval by {who}", record
        )
    if not requester.is_user:
        return ApprovalDecision(
            ApprovalState.REFUSED,
            "the requester is not known as a user, so an approval cannot be shown to come "
            f"from someone else: set the {REQUESTED_BY_ANNOTATION} annotation or create "
            "the restore through the REST API",
            record,
        )
    if approver == requester.name:
        return ApprovalDecision(
            ApprovalState.REFUSED,
            f"{approver} requested this restore and cannot approve it; another user must",
            record,
        )
    if not shown or approver == refused_approver:
        return ApprovalDecision(
            ApprovalState.REFUSED,
            f"{approver} approved before this restore was AwaitingApproval, so the approval "
            f"does not cover the plan that will run: remove the {APPROVED_BY_ANNOTATION} "
            "annotation and approve again",
            record.model_copy(update={"refused_approver": approver}),
        )
    approved = record.model_copy(update={"approved_by": approver, "approved_at": approved_at})
    return ApprovalDecision(ApprovalState.APPROVED, f"approved by {approver}", approved)


def refuse_without_right(
    decision: ApprovalDecision, *, approver: str, namespace: str, detail: str = ""
) -> ApprovalDecision:
    """``decision`` turned down: ``approver`` is not allowed ``approve`` on the restore."""
    record = decision.approval
    if record is not None:
        record = record.model_copy(update={"approved_by": None, "approved_at": None})
    why = f" ({detail})" if detail else ""
    return ApprovalDecision(
        ApprovalState.REFUSED,
        f"{approver} may not approve restores in namespace {namespace}: the approve verb "
        f"on restores is needed (dockyard-operator or dockyard-admin role){why}",
        record,
    )


__all__ = [
    "APPROVAL_TIERS",
    "DEFAULT_BYTES_PER_SECOND",
    "FIXED_OVERHEAD_SECONDS",
    "ApprovalDecision",
    "ApprovalState",
    "DurationEstimate",
    "PlanDecision",
    "Requester",
    "RequesterSource",
    "RestoreSample",
    "SourceChoice",
    "TargetChoice",
    "approval_tier",
    "choose_backup",
    "decide_approval",
    "estimate_duration",
    "identify_requester",
    "plan_restore",
    "refuse_without_right",
    "resolve_source",
    "restore_history",
    "restore_target",
]
