"""The runner report policy (manifests/backup-runner-report-policy.yaml) guards every
field of a Backup's status but the artifact's, as the BackupStatus model has them: a
field added to the model and not to the policy would be the runner's to forge."""

from __future__ import annotations

from typing import Any

import yaml

from dockyard.core.models.backup import BackupStatus
from tests.conftest import ROOT


def _policy() -> dict[str, Any]:
    path = ROOT / "manifests" / "backup-runner-report-policy.yaml"
    policy, _binding = yaml.safe_load_all(path.read_text())
    return dict(policy)


def test_every_status_field_but_the_artifacts_is_kept_from_the_runner() -> None:
    fields = BackupStatus.model_fields
    guarded = {
        fields[name].alias or name for name in fields if name not in BackupStatus.ARTIFACT_FIELDS
    }
    artifact = {fields[name].alias or name for name in BackupStatus.ARTIFACT_FIELDS}
    expression = " ".join(v["expression"] for v in _policy()["spec"]["validations"])
    for field in guarded:
        assert f"object.?status.?{field} == oldObject.?status.?{field}" in expression, field
    for field in artifact:
        assert f".?{field} " not in expression, field


def test_it_applies_to_the_backup_runner_accounts_only() -> None:
    spec = _policy()["spec"]
    [condition] = spec["matchConditions"]
    assert "':backup-runner-'" in condition["expression"]
    [rule] = spec["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["backups/status"]
