"""Grandfather-father-son retention: which of a schedule's backups to keep, which to
delete, and why.

This module owns the retention decision, as a pure function of the backups (name,
phase, completion time, drill verification) and the schedule's ``BackupRetention``. The
operator applies the decision (deleting a Backup deletes its artifact through its
finalizer); nothing here touches the API server or storage.

The rules, each applied to the completed backups on its own (a backup any rule keeps
stays, with every reason that applies); a backup a drill failed on (``Verified`` False:
it is known not to restore) counts for none of the first four, so it never displaces a
backup that may restore:

- ``last``: the newest ``keepLast``;
- ``daily`` / ``weekly`` / ``monthly``: the newest backup of each of the most recent
  ``keepDaily`` days / ``keepWeekly`` ISO weeks / ``keepMonthly`` months that have a
  backup, with calendar periods read in the schedule's time zone (a backup at 23:30 in
  Berlin belongs to that Berlin day, whatever UTC says);
- ``newest-verified``: the newest completed backup a restore drill verified (and no later
  drill failed on) is never deleted, whatever the counts say: it is the one backup known
  to restore;
- ``in-use``: a backup a Restore that has not finished takes (planned, or named by its
  ``backupRef``), or a drill's current run restores, is never deleted under it;
- ``not-completed``: Pending and Running backups are work in flight and are never
  deleted; a Failed one is kept while it is newer than the newest completed backup, so
  the failure stays visible until a backup succeeds, and deleted after that;
- ``failed-drill``: so is a backup a drill failed on, while it is newer than the newest
  completed backup not known bad.

A backup already being deleted counts for no rule (it cannot be what keeps an
environment restorable) and is in neither list of the decision.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from dockyard.core.models.backup import Backup, BackupConditionType, BackupPhase
from dockyard.core.models.backup_schedule import BackupRetention
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.restore import Restore
from dockyard.core.models.restore_drill import RestoreDrill


class KeepReason(StrEnum):
    """Why retention keeps a backup."""

    LAST = "last"
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    NEWEST_VERIFIED = "newest-verified"
    NOT_COMPLETED = "not-completed"
    IN_USE = "in-use"
    FAILED_DRILL = "failed-drill"


@dataclass(frozen=True, slots=True)
class BackupRecord:
    """What retention needs to know about one backup."""

    name: str
    phase: BackupPhase | None
    completed_at: datetime | None = None
    """When it completed (or failed); aware."""
    verified_at: datetime | None = None
    """When a drill verified it, if one did and no later drill failed on it."""
    deleting: bool = False
    """Whether it is being deleted already."""
    failed_drill: bool = False
    """Whether a drill failed on it since any pass (``Verified`` False): it does not restore."""

    @classmethod
    def of(cls, backup: Backup) -> BackupRecord:
        """The record of a Backup object."""
        status = backup.status
        verification = status.standing_verification()
        drilled = status.condition(BackupConditionType.VERIFIED)
        return cls(
            name=backup.metadata.name or "",
            phase=status.phase,
            completed_at=status.completed_at,
            verified_at=verification.at if verification else None,
            deleting=backup.metadata.deletion_timestamp is not None,
            failed_drill=drilled is not None and drilled.status is ConditionStatus.FALSE,
        )

    @property
    def is_completed(self) -> bool:
        return (
            self.phase == BackupPhase.COMPLETED
            and self.completed_at is not None
            and not self.deleting
        )


@dataclass(frozen=True, slots=True)
class Kept:
    """A backup retention keeps, with every reason that applies."""

    name: str
    reasons: tuple[KeepReason, ...]


@dataclass(frozen=True, slots=True)
class RetentionDecision:
    """Which backups to keep and which to delete, each in the order they were given
    (a backup being deleted already is in neither)."""

    keep: tuple[Kept, ...]
    delete: tuple[str, ...]

    def reasons(self, name: str) -> tuple[KeepReason, ...]:
        """Why ``name`` is kept; empty when it is deleted (or unknown)."""
        return next((kept.reasons for kept in self.keep if kept.name == name), ())


def _newest_first(records: Iterable[BackupRecord]) -> list[BackupRecord]:
    # Ties on the completion time are broken by name, so the decision is deterministic.
    return sorted(records, key=lambda r: (r.completed_at, r.name), reverse=True)


def newest_verified(backups: Iterable[BackupRecord]) -> BackupRecord | None:
    """The newest completed backup a drill verified: the one retention, ttl and anything
    else that deletes backups must leave alone."""
    verified = [r for r in backups if r.is_completed and r.verified_at is not None]
    return _newest_first(verified)[0] if verified else None


@dataclass(frozen=True, slots=True)
class Expiry:
    """What a Backup's ttl says now: when it expires, and whether to delete it."""

    expires_at: datetime | None
    delete: bool
    reason: str


def ttl_expiry(
    backup: Backup, ttl: timedelta | None, siblings: Iterable[Backup], now: datetime
) -> Expiry:
    """Whether ``backup`` (one of ``siblings``, its environment's backups) is past its ttl.

    The ttl counts from completion; a backup not completed yet does not expire. The
    newest backup of the environment that a drill verified stays past its ttl, until a
    newer one is verified.
    """
    completed = backup.status.completed_at
    if ttl is None or completed is None or backup.status.phase is None:
        return Expiry(None, False, "no ttl, or not finished")
    expires = completed + ttl
    if now < expires:
        return Expiry(expires, False, f"expires at {expires.isoformat()}")
    name = backup.metadata.name or ""
    environment = backup.spec.environment_ref.name
    kept = newest_verified(
        BackupRecord.of(b) for b in siblings if b.spec.environment_ref.name == environment
    )
    if kept is not None and kept.name == name:
        return Expiry(
            expires,
            False,
            f"ttl passed at {expires.isoformat()}, but it is the newest backup of "
            f"{environment} a drill verified: kept until a newer one is verified",
        )
    return Expiry(expires, True, f"ttl passed at {expires.isoformat()}")


def _day(when: datetime) -> Hashable:
    return when.date()


def _iso_week(when: datetime) -> Hashable:
    year, week, _ = when.isocalendar()
    return (year, week)


def _month(when: datetime) -> Hashable:
    return (when.year, when.month)


def _newest_per_period(
    completed: Sequence[tuple[str, datetime]],
    count: int,
    period: Callable[[datetime], Hashable],
    tz: ZoneInfo,
) -> list[str]:
    """Names of the newest backup in each of the ``count`` most recent periods that have
    one; ``completed`` holds (name, completion time), newest first."""
    seen: set[Hashable] = set()
    chosen: list[str] = []
    for name, completed_at in completed:
        if len(seen) >= count:
            break
        key = period(completed_at.astimezone(tz))
        if key not in seen:
            seen.add(key)
            chosen.append(name)
    return chosen


def apply_retention(
    backups: Iterable[BackupRecord],
    policy: BackupRetention,
    tz: ZoneInfo,
    in_use: Collection[str] = (),
) -> RetentionDecision:
    """Decide which of ``backups`` (one schedule's, or one environment's) to keep;
    ``in_use`` names those Restores and drills are taking."""
    records = [r for r in backups if not r.deleting]
    completed = _newest_first(r for r in records if r.is_completed)
    # Only backups that may restore count: one a drill failed on displaces none of them.
    counted = [r for r in completed if not r.failed_drill]
    reasons: dict[str, list[KeepReason]] = {r.name: [] for r in records}

    for record in counted[: policy.keep_last]:
        reasons[record.name].append(KeepReason.LAST)
    times = [(r.name, r.completed_at) for r in counted if r.completed_at is not None]
    for reason, count, period in (
        (KeepReason.DAILY, policy.keep_daily, _day),
        (KeepReason.WEEKLY, policy.keep_weekly, _iso_week),
        (KeepReason.MONTHLY, policy.keep_monthly, _month),
    ):
        for name in _newest_per_period(times, count, period, tz):
            reasons[name].append(reason)

    protected = newest_verified(completed)
    if protected is not None:
        reasons[protected.name].append(KeepReason.NEWEST_VERIFIED)

    last_success = counted[0].completed_at if counted else None
    for record in records:
        if not record.is_completed and _still_relevant(record, last_success):
            reasons[record.name].append(KeepReason.NOT_COMPLETED)
        if record.is_completed and record.failed_drill and _newer(record, last_success):
            reasons[record.name].append(KeepReason.FAILED_DRILL)
        if record.name in in_use:
            reasons[record.name].append(KeepReason.IN_USE)

    keep = tuple(Kept(r.name, tuple(reasons[r.name])) for r in records if reasons[r.name])
    delete = tuple(r.name for r in records if not reasons[r.name])
    return RetentionDecision(keep=keep, delete=delete)


def backups_in_use(restores: Iterable[Restore], drills: Iterable[RestoreDrill]) -> frozenset[str]:
    """The backups (of one namespace) that its Restores not finished take, planned or
    named by ``backupRef``, and that its drills' current runs restore: retention keeps
    them. A Restore left unfinished (a dry run never carried out) holds its backup until
    it is deleted."""
    names: set[str] = set()
    for restore in restores:
        status = restore.status
        if status.phase is not None and status.phase.is_done:
            continue
        if status.plan is not None:
            names.add(status.plan.backup)
        elif (ref := restore.spec.source.backup_ref) is not None:
            names.add(ref.name)
    names.update(d.status.current_run.backup for d in drills if d.status.current_run)
    return frozenset(names)


def _still_relevant(record: BackupRecord, last_success: datetime | None) -> bool:
    """Whether a backup that did not complete must stay."""
    if record.phase != BackupPhase.FAILED:
        # Pending, Running, not yet started, or Completed without a time: in flight or
        # unknown, and deleting it could pull an artifact out from under a runner.
        return True
    return _newer(record, last_success)


def _newer(record: BackupRecord, last_success: datetime | None) -> bool:
    """Whether a failure (a failed run, a failed drill) is newer than the last success:
    it stays visible until a backup that may restore follows it."""
    if last_success is None or record.completed_at is None:
        return True
    return record.completed_at > last_success


__all__ = [
    "BackupRecord",
    "Expiry",
    "KeepReason",
    "Kept",
    "RetentionDecision",
    "apply_retention",
    "backups_in_use",
    "newest_verified",
    "ttl_expiry",
]
