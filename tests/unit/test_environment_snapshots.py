"""The final snapshot of a deletionPolicy Snapshot: the Backup it takes, and what the
finalizer does next for each state of that Backup (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dockyard.core.models.backup import Backup, BackupPhase
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.environment import Environment
from dockyard.core.settings import Settings
from dockyard.operator.environments.snapshots import (
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
    uid (``b-1``, the uid of ``_backup``'s, unless said otherwise)."""
    return assess(backup, name=NAME, made=made, environment="shop", database=DATABASE)


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


def test_a_snapshot_that_cannot_start_keeps_the_database_and_says_why() -> None:
    verdict = cannot_start("encryption key Secret k does not exist", database=DATABASE)

    assert (verdict.status, verdict.reason) == (ConditionStatus.FALSE, "SnapshotFailed")
    assert "encryption key Secret k does not exist" in verdict.message
    assert "Retain or Delete" in verdict.message
