"""A Backup's finalizer (``operator/backups/deletion.py``): it lets the Backup go only
once its artifacts are deleted and the catalog knows, so that a namespace's quota is not
charged for bytes that are gone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest

from dockyard.core.kube import KubeClient
from dockyard.core.settings import Settings
from dockyard.operator.backups import deletion
from dockyard.operator.runs.catalog import Catalog
from dockyard.operator.runs.context import RunContext, artifact_prefix

NAMESPACE, NAME, UID = "team", "nightly", "0b5e7c1a-0000-4000-8000-000000000001"


class _Catalog:
    """The platform database's catalog: down (``ConnectionRefusedError``) until told."""

    def __init__(self) -> None:
        self.down = True
        self.deleted: list[str] = []

    async def mark_deleted(self, uid: str) -> None:
        if self.down:
            raise ConnectionRefusedError(111, "Connection refused")
        self.deleted.append(uid)


@pytest.fixture(autouse=True)
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(deletion, "post", lambda *_args, **_kwargs: None)


def _body(root: Path) -> dict[str, Any]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "uid": UID,
                     "deletionTimestamp": "2026-03-10T12:00:00Z"},
        "spec": {"environmentRef": {"name": "shop"},
                 "storage": {"filesystem": {"path": str(root)}},
                 "encryption": {"keySecretRef": {"name": "k", "key": "key"}}},
        "status": {"phase": "Completed"},
    }  # fmt: skip


async def test_a_backup_is_let_go_only_once_the_catalog_knows_its_artifact_is_gone(
    tmp_path: Path,
) -> None:
    artifact = tmp_path / f"{artifact_prefix(NAMESPACE, NAME, UID)}1.dkbk"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(b"ciphertext")
    catalog = _Catalog()
    context = RunContext.create(
        cast(KubeClient, None), Settings(backup_root=tmp_path), cast(Catalog, catalog)
    )

    held = await deletion.finalize(context, NAMESPACE, NAME, _body(tmp_path))

    assert not artifact.exists()
    assert held.retry is not None
    assert "the catalog is not yet" in held.retry
    catalog.down = False
    done = await deletion.finalize(context, NAMESPACE, NAME, _body(tmp_path))
    assert done.retry is None
    assert catalog.deleted == [UID]


async def test_an_artifact_on_a_tenants_claim_is_said_to_be_left_not_looked_for_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A runner Job wrote it to the claim the Backup names; the operator's own volume
    (the backup root) is not that claim, and an empty listing there proves nothing."""
    posted: list[tuple[str, str]] = []
    monkeypatch.setattr(
        deletion, "post", lambda _raw, *, reason, message, **_: posted.append((reason, message))
    )
    body = _body(tmp_path)
    body["spec"]["storage"]["filesystem"]["claimName"] = "team-backups"
    context = RunContext.create(cast(KubeClient, None), Settings(backup_root=tmp_path), None)

    done = await deletion.finalize(context, NAMESPACE, NAME, body)

    assert done.retry is None
    [(reason, message)] = posted
    assert reason == "ArtifactNotDeleted"
    assert "PersistentVolumeClaim team-backups" in message
    assert f"{tmp_path}/{artifact_prefix(NAMESPACE, NAME, UID)}*" in message
