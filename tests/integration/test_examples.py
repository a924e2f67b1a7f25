"""Every manifest in docs/examples/ is accepted by the apiserver as documented: applied
for real (schema, CEL rules and admission policies) into a namespace of its own, and
read back with the spec it was written with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Kubectl, get_json, remove_backup_store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.yaml"))
KINDS = {
    "Environment", "ScalingPolicy", "Backup", "BackupSchedule", "BackupStore", "Restore",
    "RestoreDrill", "RateLimitPolicy", "Webhook",
}  # fmt: skip
CLUSTER_SCOPED = {"BackupStore"}  # removed with remove_backup_store

pytestmark = pytest.mark.usefixtures("crds_installed")


def test_every_kind_has_an_example() -> None:
    documented = {_kind(path) for path in EXAMPLES}
    assert documented == KINDS


def _kind(path: Path) -> str:
    return str(yaml.safe_load(path.read_text())["kind"])


@pytest.mark.parametrize(
    "example",
    [
        # A cluster-wide example (a default BackupStore) is felt in every namespace.
        pytest.param(path, marks=pytest.mark.alone) if _kind(path) in CLUSTER_SCOPED else path
        for path in EXAMPLES
    ],
    ids=[path.name for path in EXAMPLES],
)
def test_an_example_applies_as_written(
    kubectl: Kubectl, unwatched_namespace: str, example: Path
) -> None:
    manifest: dict[str, Any] = yaml.safe_load(example.read_text())
    kind, name = manifest["kind"].lower(), manifest["metadata"]["name"]
    where: tuple[str, ...] = ("-n", unwatched_namespace)
    if manifest["kind"] in CLUSTER_SCOPED:
        # Cluster-wide: a name of its own, removed after (a default store is felt by all).
        name = manifest["metadata"]["name"] = f"{name}-{unwatched_namespace}"
        where = ()
    else:
        manifest["metadata"]["namespace"] = unwatched_namespace
    applied = kubectl("apply", "-f", "-", input=yaml.safe_dump(manifest), check=False)
    try:
        assert applied.returncode == 0, applied.stderr
        stored = get_json(kubectl, kind, name, *where)
    finally:
        if not where:
            remove_backup_store(kubectl, name)
    spec = stored["spec"]
    assert isinstance(spec, dict)
    # What the example says is what is stored (defaults may add fields beside it).
    assert _subset(manifest["spec"], spec), (manifest["spec"], spec)


def _subset(wanted: Any, got: Any) -> bool:
    if isinstance(wanted, dict):
        return isinstance(got, dict) and all(_subset(v, got.get(k)) for k, v in wanted.items())
    if isinstance(wanted, list):
        return (
            isinstance(got, list)
            and len(wanted) == len(got)
            and all(_subset(w, g) for w, g in zip(wanted, got, strict=True))
        )
    return bool(wanted == got)
