"""The final snapshot of a deletionPolicy Snapshot: the Backup it takes, and what the
finalizer does next for each state of that Backup (no I/O)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dockyard.core.models.backup import Backup, BackupPhase
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.environment import Environment
from dockyard.core.settings import Settings
from dockyard.operator.environments.snapshots import (
    CREATING,
    SnapshotAction,
    assess,
    cannot_start,
    final_snapshot,
    final_snapshot_name,
)

UID = "4f1c2a9e-0000-4000-8000-000000000001"
NAME = "shop-final-4f1c2a9e"
DATABASE = "env_team_shop"
SETTINGS = Settings(backup_root=Path("/backups"), default_backup_key_secret="team-backup-key")
# When the environment's deletion began (its deletionTimestamp: the API server's clock,
# in whole seconds, as every Kubernetes timestamp).
DELETED = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)


def _environment(name: str = "shop") -> Environment:
    return Environment.model_validate(
        {
            "metadata": {"name": name, "namespace": "team", "uid": UID},
            "spec": {
                "tier": "production",
                "image": "registry.example.com/shop:1.0",
                "replicas": 2,
                "database": {"deletionPolicy": "Snapshot"},
            },
        }
    )


def _backup(
    phase: BackupPhase | None = None,
    *,
    message: str | None = None,
    environment: str = "shop",
    deleting: bool = False,
) -> Backup:
    metadata: dict[str, Any] = {"name": NAME, "namespace": "team", "uid": "b-1"}
    if deleting:
        metadata["deletionTimestamp"] = datetime(2026, 1, 1, tzinfo=UTC).isoformat()
    return Backup.model_validate(
        {
            "metadata": metadata,
            "spec": {
                "environmentRef": {"name": environment},
                "storage": {"filesystem": {"path": "/backups"}},
                "encryption": {"keySecretRef": {"name": "team-backup-key", "key": "key"}},
            },
            "status": {"phase": phase, "message": message} if phase else {},
        }
    )


def _assess(backup: Backup | None, *, made: str | None = "b-1") -> Any:
    """The step for ``backup``, when the operator recorded ``made`` as its final snapshot's
    uid (``b-1``, the uid of ``_backup``'s, unless said otherwise), for the deletion of
    ``shop`` that began at ``DELETED``."""
    return assess(
        backup,
        name=NAME,
        made=made,
        environment="shop",
        database=DATABASE,
        expected=Backup.model_validate(final_snapshot(_environment(), SETTINGS)),
        since=DELETED,
    )


def _operators(
    phase: BackupPhase | None = BackupPhase.COMPLETED,
    *,
    created: datetime = DELETED + timedelta(seconds=2),
    deleting: bool = False,
) -> dict[str, Any]:
    """The final snapshot as the operator creates it, as the API server then stores it:
    uid ``b-9``, created at ``created``."""
    manifest = final_snapshot(_environment(), SETTINGS)
    manifest["metadata"].update(
        uid="b-9", creationTimestamp=created.isoformat().replace("+00:00", "Z")
    )
    if deleting:
        manifest["metadata"]["deletionTimestamp"] = (created + timedelta(minutes=1)).isoformat()
    manifest["status"] = {"phase": phase} if phase else {}
    return manifest


# -- the Backup --------------------------------------------------------------------------


def test_the_name_is_the_environment_and_the_start_of_its_uid() -> None:
    assert final_snapshot_name("shop", UID) == NAME


def test_a_long_name_is_trimmed_to_fit_and_keeps_the_uid() -> None:
    name = final_snapshot_name("a" * 250, UID)

    assert len(name) == 253
    assert name.endswith("-final-4f1c2a9e")


def test_the_snapshot_is_a_valid_backup_with_the_default_storage_and_key() -> None:
    backup = Backup.model_validate(final_snapshot(_environment(), SETTINGS))

    assert backup.metadata.name == NAME
    assert backup.metadata.namespace == "team"
    assert backup.spec.environment_ref.name == "shop"
    assert backup.spec.storage.filesystem is not None
    assert backup.spec.storage.filesystem.path == "/backups"
    assert backup.spec.encryption.key_secret_ref.name == "team-backup-key"
    assert backup.spec.encryption.key_secret_ref.key == "key"
    assert backup.spec.ttl is None


def test_the_snapshot_has_no_owner_so_it_outlives_the_environment() -> None:
    manifest = final_snapshot(_environment(), SETTINGS)

    assert "ownerReferences" not in manifest["metadata"]


def test_the_snapshot_is_labelled_and_says_why_it_exists() -> None:
    metadata = final_snapshot(_environment(), SETTINGS)["metadata"]

    assert metadata["labels"] == {
        "app.kubernetes.io/managed-by": "dockyard",
        "dockyard.io/environment": "shop",
        "dockyard.io/final-snapshot": "true",
    }
    assert UID in metadata["annotations"]["dockyard.io/reason"]
    assert "deletionPolicy Snapshot" in metadata["annotations"]["dockyard.io/reason"]


# -- what the finalizer does next --------------------------------------------------------


def test_without_a_snapshot_one_is_taken() -> None:
    step = _assess(None)

    assert step.action is SnapshotAction.CREATE
    assert step.verdict.reason == "TakingFinalSnapshot"
    assert NAME in step.verdict.message


@pytest.mark.parametrize("phase", [None, BackupPhase.PENDING, BackupPhase.RUNNING])
def test_a_snapshot_in_progress_is_waited_for(phase: BackupPhase | None) -> None:
    step = _assess(_backup(phase, message="Attempt 1 of 3 running (Inline)"))

    assert step.action is SnapshotAction.WAIT
    assert step.verdict.status is ConditionStatus.FALSE
    assert step.verdict.reason == "TakingFinalSnapshot"
    assert f"in Backup {NAME} ({phase or 'Pending'}" in step.verdict.message
    assert DATABASE in step.verdict.message


def test_a_completed_snapshot_lets_the_database_be_dropped() -> None:
    step = _assess(_backup(BackupPhase.COMPLETED, message="Stored 1024 bytes"))

    assert step.action is SnapshotAction.DROP
    assert NAME in step.verdict.message


def test_a_failed_snapshot_holds_the_database_and_says_how_to_go_on() -> None:
    step = _assess(_backup(BackupPhase.FAILED, message="gave up after 3 attempts: disk full"))

    assert step.action is SnapshotAction.HOLD
    assert step.verdict.reason == "SnapshotFailed"
    message = step.verdict.message
    assert "gave up after 3 attempts: disk full" in message
    assert f"delete Backup {NAME}" in message
    assert "Retain or Delete" in message


def test_a_snapshot_being_deleted_is_waited_for_then_taken_again() -> None:
    step = _assess(_backup(BackupPhase.FAILED, deleting=True))

    assert step.action is SnapshotAction.WAIT
    assert "taken again once it is gone" in step.verdict.message


def test_a_backup_of_another_environment_under_the_name_is_never_taken_for_ours() -> None:
    step = _assess(_backup(BackupPhase.COMPLETED, environment="other"))

    assert step.action is SnapshotAction.HOLD
    assert step.verdict.reason == "SnapshotFailed"
    assert "backs up environment other" in step.verdict.message


@pytest.mark.parametrize("made", [None, "b-0"], ids=["none-recorded", "another-recorded"])
def test_a_completed_backup_the_deletion_did_not_make_never_lets_the_database_go(
    made: str | None,
) -> None:
    """A developer can make ``<env>-final-<uid8>`` weeks before, to storage of their choosing:
    its completion says nothing about the data now."""
    step = _assess(_backup(BackupPhase.COMPLETED), made=made)

    assert step.action is SnapshotAction.HOLD
    assert step.verdict.reason == "SnapshotFailed"
    message = step.verdict.message
    assert f"Backup {NAME} exists but was not made by this deletion" in message
    assert f"database {DATABASE} is kept" in message
    assert "Delete that Backup" in message
    assert "Retain or Delete" in message


def test_a_backup_the_deletion_did_not_make_is_waited_for_while_it_is_deleted() -> None:
    step = _assess(_backup(BackupPhase.COMPLETED, deleting=True), made=None)

    assert step.action is SnapshotAction.WAIT
    assert "taken again once it is gone" in step.verdict.message


def test_without_a_snapshot_one_is_taken_even_after_one_was_recorded() -> None:
    """The one it made was deleted: it takes another, and records that one."""
    assert _assess(None, made="b-0").action is SnapshotAction.CREATE


# -- a pass that stopped between its create and recording the uid -------------------------
#
# The operator records the name with an empty uid (CREATING) before it creates the Backup.
# A pass that then finds that record, and a Backup under the name, knows it may be its own:
# it takes it if it is provably the one the operator created for this deletion.


@pytest.mark.parametrize(
    ("phase", "action"),
    [
        (BackupPhase.COMPLETED, SnapshotAction.DROP),
        (BackupPhase.RUNNING, SnapshotAction.WAIT),
        (None, SnapshotAction.WAIT),
        (BackupPhase.FAILED, SnapshotAction.HOLD),
    ],
)
def test_after_a_crash_the_backup_the_deletion_created_is_adopted_and_goes_on(
    phase: BackupPhase | None, action: SnapshotAction
) -> None:
    """The operator stopped (or its status write failed, or the create's answer was lost)
    after the create was stored: the next pass records that Backup's uid and carries on,
    rather than holding for good on a Backup nobody may delete without ``destroy``."""
    step = _assess(Backup.model_validate(_operators(phase)), made=CREATING)

    assert step.adopt == "b-9"
    assert step.action is action
    assert "not made by this deletion" not in step.verdict.message


def test_one_created_in_the_second_the_deletion_began_is_adopted() -> None:
    """The operator's create usually lands in that second (no sessions to wait for); the
    record written before it says it came after the pass that found the name free."""
    step = _assess(Backup.model_validate(_operators(created=DELETED)), made=CREATING)

    assert (step.action, step.adopt) == (SnapshotAction.DROP, "b-9")


@pytest.mark.parametrize(
    "created",
    [DELETED - timedelta(seconds=1), DELETED - timedelta(days=21)],
    ids=["a-second-before", "weeks-before"],
)
def test_a_backup_made_before_the_deletion_is_never_adopted(created: datetime) -> None:
    """The squat: a copy of the operator's Backup, made under the name before the deletion
    (even one the operator's record says it was creating) holds the deletion."""
    step = _assess(Backup.model_validate(_operators(created=created)), made=CREATING)

    assert step.adopt is None
    assert step.action is SnapshotAction.HOLD
    assert step.verdict.reason == "SnapshotFailed"
    assert f"Backup {NAME} exists but was not made by this deletion" in step.verdict.message


def test_a_backup_of_another_environment_is_never_adopted() -> None:
    manifest = _operators()
    manifest["spec"]["environmentRef"] = {"name": "other"}

    step = _assess(Backup.model_validate(manifest), made=CREATING)

    assert step.adopt is None
    assert step.action is SnapshotAction.HOLD
    assert "backs up environment other" in step.verdict.message


def _changed(manifest: dict[str, Any], change: str) -> dict[str, Any]:
    manifest = copy.deepcopy(manifest)
    metadata, spec = manifest["metadata"], manifest["spec"]
    if change == "storage":
        spec["storage"] = {"filesystem": {"path": "/backups/mine"}}
    elif change == "key":
        spec["encryption"] = {"keySecretRef": {"name": "my-key", "key": "key"}}
    elif change == "ttl":
        spec["ttl"] = "1s"
    elif change == "no-label":
        del metadata["labels"]["dockyard.io/final-snapshot"]
    elif change == "label-of-another":
        metadata["labels"]["dockyard.io/environment"] = "other"
    elif change == "no-annotation":
        del metadata["annotations"]
    elif change == "annotation-of-another-uid":
        reason = metadata["annotations"]["dockyard.io/reason"]
        metadata["annotations"]["dockyard.io/reason"] = reason.replace(UID, "0" * 36)
    elif change == "owned":
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "c-1"}
        ]
    return manifest


@pytest.mark.parametrize(
    "change",
    [
        "storage",
        "key",
        "ttl",
        "no-label",
        "label-of-another",
        "no-annotation",
        "annotation-of-another-uid",
        "owned",
    ],
)
def test_a_backup_unlike_the_operators_is_never_adopted(change: str) -> None:
    """Made after the deletion began, under the name, while the operator was creating its
    own: whatever differs from what the operator creates (storage or a key of the
    maker's choosing, a ttl, an owner that takes it away) is not the operator's."""
    step = _assess(Backup.model_validate(_changed(_operators(), change)), made=CREATING)

    assert step.adopt is None
    assert step.action is SnapshotAction.HOLD
    assert "not made by this deletion" in step.verdict.message


@pytest.mark.parametrize("made", [None, "b-0"], ids=["none-recorded", "another-recorded"])
def test_without_the_creating_record_even_a_perfect_copy_is_not_adopted(
    made: str | None,
) -> None:
    """A copy of the operator's Backup made after the deletion began, while the operator
    waited for sessions to drain (no record yet) or after the one it recorded went: the
    operator did not create it, and it may hold less than the operator's would."""
    step = _assess(Backup.model_validate(_operators()), made=made)

    assert step.adopt is None
    assert step.action is SnapshotAction.HOLD
    assert "not made by this deletion" in step.verdict.message


def test_nothing_is_adopted_without_the_deletions_time() -> None:
    step = assess(
        Backup.model_validate(_operators()),
        name=NAME,
        made=CREATING,
        environment="shop",
        database=DATABASE,
        expected=Backup.model_validate(final_snapshot(_environment(), SETTINGS)),
        since=None,
    )

    assert (step.action, step.adopt) == (SnapshotAction.HOLD, None)


def test_an_unrecorded_backup_being_deleted_is_waited_for_not_adopted() -> None:
    step = _assess(Backup.model_validate(_operators(deleting=True)), made=CREATING)

    assert (step.action, step.adopt) == (SnapshotAction.WAIT, None)
    assert "taken again once it is gone" in step.verdict.message


def test_the_recorded_backup_needs_no_adoption() -> None:
    step = _assess(Backup.model_validate(_operators()), made="b-9")

    assert (step.action, step.adopt) == (SnapshotAction.DROP, None)


def test_a_snapshot_that_cannot_start_keeps_the_database_and_says_why() -> None:
    verdict = cannot_start("encryption key Secret k does not exist", database=DATABASE)

    assert (verdict.status, verdict.reason) == (ConditionStatus.FALSE, "SnapshotFailed")
    assert "encryption key Secret k does not exist" in verdict.message
    assert "Retain or Delete" in verdict.message
