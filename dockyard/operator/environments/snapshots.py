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

The uid is known only once the create has answered, and a pass can fail after its
create was stored (the operator stops, the status write fails, the answer is lost). So
before it creates, the operator records the name with an empty uid (``CREATING``); a
pass that finds that record, and a Backup under the name, takes the Backup as the one
it made (``SnapshotStep.adopt``) only if it is provably that one (``made_here``):
created no earlier than the second the deletion began (both times are the API server's),
for this environment, with the operator's labels, reason annotation and spec, and no
owner. Without the record, or with a uid recorded, nothing is taken over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
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
CREATING: Final = ""
"""The uid ``status.finalSnapshot`` records while the operator creates that Backup: it
wrote the name before its create, and has not learned the uid the create made."""


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
    adopt: str | None = None
    """The uid to record in ``status.finalSnapshot`` before acting: the Backup is the one
    this deletion created, whose uid an earlier pass did not get to record."""


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
    backup: Backup | None,
    *,
    name: str,
    made: str | None,
    environment: str,
    database: str,
    expected: Backup,
    since: datetime | None,
) -> SnapshotStep:
    """The next step, given the final snapshot ``name`` as it is now (``None``: absent) and
    the uid of the Backup the operator made under that name for this deletion (``made``,
    from ``status.finalSnapshot``; ``None`` while it made none, ``CREATING`` while it
    created one and has not recorded its uid).

    ``expected`` is the Backup as the operator builds it (``final_snapshot``), ``since``
    the environment's ``deletionTimestamp``: with ``made`` at ``CREATING``, a Backup that
    ``made_here`` says is that one is taken as the deletion's own (``adopt``)."""
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
    adopt = None
    if made == CREATING or backup.metadata.uid != made:
        if made == CREATING and made_here(backup, expected=expected, since=since):
            # The pass that created it stopped before it recorded the uid.
            adopt = backup.metadata.uid
        else:
            # Made by someone else before the deletion (or outside the operator's create):
            # a backup of their choosing, from whenever, not of the data now.
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
    return replace(_progress(backup, name=name, database=database), adopt=adopt)


def made_here(backup: Backup, *, expected: Backup, since: datetime | None) -> bool:
    """Whether ``backup`` is provably the final snapshot the operator creates as
    ``expected`` for the deletion that began at ``since`` (its ``deletionTimestamp``).

    Only asked while ``status.finalSnapshot`` says the operator was creating it: the pass
    that wrote that had found the name free, after the deletion began. Both times are the
    API server's, in whole seconds, so one created in the second the deletion began
    counts (the operator's own create usually lands in it); one from any earlier second
    was there before the deletion and never does. The rest is what the operator sets:
    the environment it backs up, storage and key, no ttl (the whole spec), its labels and
    reason annotation (which names the environment's uid), and no owner (the garbage
    collector would delete it, and its artifact, with the owner).
    """
    created, meta = backup.metadata.creation_timestamp, backup.metadata
    if since is None or created is None or not meta.uid:
        return False
    if _second(created) < _second(since):
        return False
    wanted = expected.metadata
    return (
        backup.spec == expected.spec
        and all(meta.labels.get(key) == value for key, value in wanted.labels.items())
        and all(meta.annotations.get(key) == value for key, value in wanted.annotations.items())
        and not (meta.model_extra or {}).get("ownerReferences")
    )


def _second(moment: datetime) -> int:
    """``moment`` in whole seconds since the epoch (a time without a zone is UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def _progress(backup: Backup, *, name: str, database: str) -> SnapshotStep:
    """The step for the deletion's own final snapshot ``backup``, by its phase."""
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
