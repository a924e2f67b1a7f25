"""The final snapshot: the Backup a deletionPolicy Snapshot takes before the database goes.

This module is pure: it builds the Backup (``final_snapshot``) and decides, from the
Backup as it is now, what the finalizer does next (``assess``). ``deletion`` does the
I/O.

The Backup is named after the environment and the first eight characters of its uid
(``<environment>-final-<uid8>``), so every pass of one deletion finds the same one and
a later environment of the same name takes its own. It uses the operator's default
storage and key (``Settings.backup_root``, key ``key`` of the Secret
``Settings.default_backup_key_secret``), like the default BackupSchedule. It has no owner
reference on purpose: the garbage collector would delete it with the environment, and
its finalizer would delete the artifact with it. It stays until someone deletes it.

That name can be known, and taken, before the deletion: a Backup under it counts only if
its uid is the one the operator recorded in ``status.finalSnapshot`` when it made it. Any
other holds the deletion with the database kept (a completed backup made weeks before,
to storage of its maker's choosing, must not let the database go); deleting it lets the
snapshot be taken.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from dockyard.core.models.backup import Backup, BackupPhase, BackupStatus
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.environment import Environment
from dockyard.core.names import OBJECT_NAME_MAX, fitted
from dockyard.core.resources import Manifest
from dockyard.core.settings import Settings
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.environments.defaults import default_backup_target, for_environment
from dockyard.operator.environments.status import Verdict

FINAL_SNAPSHOT_LABEL: Final = "dockyard.io/final-snapshot"
REASON_ANNOTATION: Final = "dockyard.io/reason"
TAKING: Final = "TakingFinalSnapshot"
FAILED: Final = "SnapshotFailed"


class SnapshotAction(StrEnum):
    """What the finalizer does next about the final snapshot."""

    CREATE = "Create"
    """There is none yet: take it."""
    WAIT = "Wait"
    """It is being taken (or its predecessor deleted): look again shortly."""
    DROP = "Drop"
    """It completed: the database may go."""
    HOLD = "Hold"
    """It cannot be taken: keep the database until someone acts."""


@dataclass(frozen=True, slots=True)
class SnapshotStep:
    """The next action, and what Ready says while the environment waits for it."""

    action: SnapshotAction
    verdict: Verdict


def final_snapshot_name(environment: str, uid: str) -> str:
    """The name of the final snapshot of the environment ``environment`` with uid ``uid``."""
    return fitted(environment, OBJECT_NAME_MAX, suffix=f"-final-{uid[:8]}")


def final_snapshot(env: Environment, settings: Settings) -> Manifest:
    """The Backup ``env`` takes of its database before deletionPolicy Snapshot drops it."""
    owner = Owner.of(env)
    name = final_snapshot_name(owner.name, owner.uid)
    # Not owned: the snapshot must outlive the environment.
    manifest = for_environment(env, "Backup", name, FINAL_SNAPSHOT_LABEL, owned=False)
    manifest["metadata"]["annotations"] = {
        REASON_ANNOTATION: (
            f"final snapshot of Environment {owner.name} (uid {owner.uid}), taken "
            "before deletionPolicy Snapshot dropped its database"
        )
    }
    manifest["spec"].update(default_backup_target(settings))
    return manifest


def assess(
    backup: Backup | None, *, name: str, made: str | None, environment: str, database: str
) -> SnapshotStep:
    """The next step, given the final snapshot ``name`` as it is now (``None``: absent) and
    the uid of the Backup the operator made under that name for this deletion (``made``,
    from ``status.finalSnapshot``; ``None`` while it made none)."""
    if backup is None:
        return SnapshotStep(SnapshotAction.CREATE, taking(name, database=database))
    source = backup.spec.environment_ref.name
    if source != environment:
        # Someone else's Backup under our name: its completion says nothing about ours.
        return SnapshotStep(
            SnapshotAction.HOLD,
            Verdict(
                ConditionStatus.FALSE,
                FAILED,
                f"Backup {name} exists but backs up environment {source}, not {environment}; "
                f"database {database} is kept. Delete that Backup so that the final snapshot "
                "can be taken, or set deletionPolicy Retain or Delete.",
            ),
        )
    if backup.metadata.deletion_timestamp is not None:
        return SnapshotStep(
            SnapshotAction.WAIT,
            Verdict(
                ConditionStatus.FALSE,
                TAKING,
                f"Backup {name} is being deleted; the final snapshot of database {database} "
                "is taken again once it is gone.",
            ),
        )
    if backup.metadata.uid != made:
        # Made by someone else before the deletion (or by a pass that crashed before it
        # recorded it): a backup of their choosing, from whenever, not of the data now.
        return SnapshotStep(
            SnapshotAction.HOLD,
            Verdict(
                ConditionStatus.FALSE,
                FAILED,
                f"Backup {name} exists but was not made by this deletion as its final "
                f"snapshot; database {database} is kept. Delete that Backup so that the "
                "final snapshot can be taken, or set deletionPolicy Retain or Delete.",
            ),
        )
    status = backup.status
    if status.phase is BackupPhase.COMPLETED:
        return SnapshotStep(
            SnapshotAction.DROP,
            Verdict(
                ConditionStatus.FALSE,
                "SnapshotTaken",
                f"The final snapshot, Backup {name}, completed; dropping database {database}.",
            ),
        )
    if status.phase is BackupPhase.FAILED:
        why = status.message or "no reason given"
        return SnapshotStep(
            SnapshotAction.HOLD,
            Verdict(
                ConditionStatus.FALSE,
                FAILED,
                # What to do comes first: a long reason is cut at the condition's limit.
                f"The final snapshot, Backup {name}, failed; database {database} is kept "
                f"and the environment stays. Fix the cause and delete Backup {name} to take "
                f"the snapshot again, or set deletionPolicy Retain or Delete. Why: {why}",
            ),
        )
    return SnapshotStep(SnapshotAction.WAIT, taking(name, database=database, status=status))


def taking(name: str, *, database: str, status: BackupStatus | None = None) -> Verdict:
    """Ready while the final snapshot ``name``, whose status is ``status``, is taken."""
    phase = (status.phase if status else None) or BackupPhase.PENDING
    detail = f": {status.message}" if status and status.message else ""
    return Verdict(
        ConditionStatus.FALSE,
        TAKING,
        f"Taking the final snapshot of database {database} in Backup {name} "
        f"({phase}{detail}); the database is dropped once it completes.",
    )


def cannot_start(problem: str, *, database: str) -> Verdict:
    """Ready while the final snapshot cannot even start (no key, a terminating namespace)."""
    return Verdict(
        ConditionStatus.FALSE,
        FAILED,
        f"The final snapshot of database {database} cannot be taken: {problem}. The database "
        "is kept and the environment stays until this is fixed, or until deletionPolicy is "
        "set to Retain or Delete.",
    )
