"""A Backup's ttl as the operator applies it (``BackupRuns.expire``): it deletes a backup
only as it was read, so one a drill verified meanwhile is decided on again, not deleted."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, cast

import pytest

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.resources import BACKUPS, RESTORE_DRILLS, RESTORES
from dockyard.core.settings import Settings
from dockyard.operator.backups import lifecycle
from dockyard.operator.backups.lifecycle import BackupRuns
from dockyard.operator.runs.context import RunContext

NAMESPACE = "team"
# Long past their ttl of a day (ttl_expiry counts from now).
OLD, NEWER = "2024-03-01T00:00:00+00:00", "2024-03-02T00:00:00+00:00"
OLD_EXPIRES = "2024-03-02T00:00:00+00:00"


def _backup(name: str, completed: str, expires: str | None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Completed", "completedAt": completed}
    if expires is not None:
        status["expiresAt"] = expires
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Backup",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "resourceVersion": "1",
        },
        "spec": {
            "environmentRef": {"name": "shop"},
            "storage": {"filesystem": {"path": "/b"}},
            "encryption": {"keySecretRef": {"name": "k", "key": "key"}},
            "ttl": "24h",
        },
        "status": status,
    }


class FakeKube:
    """Backups by name, no Restores; ``on_drills`` runs when the drills are listed (the
    last read before the delete). Deletes honour their preconditions, as the apiserver
    does (409)."""

    def __init__(self, *backups: dict[str, Any]) -> None:
        self.backups = {b["metadata"]["name"]: b for b in backups}
        self.on_drills: Callable[[FakeKube], None] | None = None
        self.deleted: list[str] = []
        self.lists = 0

    async def get(self, path: str, **_: Any) -> dict[str, Any]:
        if path == RESTORES.path(NAMESPACE):
            return {"items": []}
        if path == RESTORE_DRILLS.path(NAMESPACE):
            if self.on_drills is not None:
                self.on_drills(self)
            return {"items": []}
        if path == BACKUPS.path(NAMESPACE):
            self.lists += 1
            return {"items": copy.deepcopy(list(self.backups.values()))}
        name = path.rsplit("/", 1)[-1]
        if path != BACKUPS.path(NAMESPACE, name) or name not in self.backups:
            raise KubeError(404, {"reason": "NotFound"})
        return copy.deepcopy(self.backups[name])

    async def merge_patch(self, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        name = path.removesuffix("/status").rsplit("/", 1)[-1]
        stored = self.backups[name]
        stored["status"].update(body["status"])
        self.bump(name)
        return copy.deepcopy(stored)

    async def delete(self, path: str, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        name = path.rsplit("/", 1)[-1]
        meta = self.backups[name]["metadata"]
        wanted = body.get("preconditions") or {}
        if any(meta.get(key) != value for key, value in wanted.items()):
            raise KubeError(409, {"reason": "Conflict"})
        del self.backups[name]
        self.deleted.append(name)
        return {}

    def bump(self, name: str) -> None:
        meta = self.backups[name]["metadata"]
        meta["resourceVersion"] = str(int(meta["resourceVersion"]) + 1)


def _verify_old(kube: FakeKube) -> None:
    """A drill's verdict on "old", written between the ttl's reads and its delete."""
    kube.backups["old"]["status"]["verified"] = {"drill": "nightly", "at": NEWER}
    kube.bump("old")


@pytest.fixture(autouse=True)
def events(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    posted: list[str] = []

    def post(raw: Any, *, reason: str, message: str, warning: bool = False) -> None:
        posted.append(reason)

    monkeypatch.setattr(lifecycle, "post", post)
    return posted


async def _expire(kube: FakeKube, name: str) -> None:
    context = RunContext.create(cast(KubeClient, kube), Settings(), None)
    await BackupRuns(context).expire(NAMESPACE, name)


async def test_a_backup_past_its_ttl_is_deleted(events: list[str]) -> None:
    kube = FakeKube(_backup("old", OLD, OLD_EXPIRES), _backup("newer", NEWER, None))

    await _expire(kube, "old")

    assert kube.deleted == ["old"]
    assert events == ["Expired"]


async def test_a_backup_a_drill_verified_while_its_ttl_was_applied_is_not_deleted(
    events: list[str],
) -> None:
    kube = FakeKube(_backup("old", OLD, OLD_EXPIRES), _backup("newer", NEWER, None))
    kube.on_drills = _verify_old

    await _expire(kube, "old")

    assert kube.deleted == []
    assert events == []  # nothing said to be deleted
    # Decided again on what it is now: the newest backup of shop a drill verified.
    kube.on_drills = None
    await _expire(kube, "old")
    assert kube.deleted == []
    assert "old" in kube.backups


async def test_a_backup_whose_expiry_was_just_recorded_is_deleted_by_the_next_pass() -> None:
    # Recording expiresAt moves its resourceVersion on past the one the decision read.
    kube = FakeKube(_backup("old", OLD, None), _backup("newer", NEWER, None))

    await _expire(kube, "old")
    assert kube.backups["old"]["status"]["expiresAt"] == OLD_EXPIRES
    assert kube.deleted == []

    await _expire(kube, "old")
    assert kube.deleted == ["old"]


async def test_a_backup_far_from_its_ttl_lists_no_other_backup() -> None:
    """Every Backup with a ttl is looked at every pass: listing the namespace's Backups
    each time, whatever their expiry, would cost N lists of N Backups a pass."""
    fresh = _backup("fresh", "2099-01-01T00:00:00+00:00", "2099-01-02T00:00:00+00:00")
    kube = FakeKube(fresh, _backup("newer", NEWER, None))

    await _expire(kube, "fresh")

    assert kube.lists == 0
    assert kube.deleted == []
