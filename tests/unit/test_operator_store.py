"""How the operator's KindStore validates, reports invalid objects and builds Events (no I/O)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from dockyard.core.models.backup import Backup
from dockyard.core.resources import BACKUPS
from dockyard.operator.store import (
    InvalidObject,
    KindStore,
    Loaded,
    ObjectLocks,
    OnInvalid,
    event_manifest,
    replacing,
)


def _backup(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": "team-a", "uid": f"uid-{name}", "generation": 2},
        "spec": {
            "environmentRef": {"name": "shop"},
            "storage": {"filesystem": {"path": "/backups"}},
            "encryption": {"keySecretRef": {"name": "key", "key": "key"}},
            **spec,
        },
    }


# The client is never used: these tests only parse.
STORE = KindStore(None, Backup)  # type: ignore[arg-type]


def test_the_store_serves_its_kinds_resource_type() -> None:
    assert STORE.rtype == BACKUPS
    assert STORE.path("team-a", "b1", "status") == BACKUPS.path("team-a", "b1", "status")


def test_an_invalid_object_says_what_is_wrong_in_one_line_by_field_path() -> None:
    with pytest.raises(InvalidObject) as caught:
        STORE.parse(_backup("b1", runner="Sideways"))
    assert caught.value.problem.startswith("spec.runner: ")
    assert "\n" not in caught.value.problem


def test_a_listing_keeps_the_objects_that_validate() -> None:
    found = STORE.valid([_backup("good"), _backup("bad", runner="Sideways")])
    assert [b.metadata.name for b in found] == ["good"]


def test_a_loaded_object_names_itself_from_its_metadata() -> None:
    raw = _backup("b1")
    loaded = Loaded(raw, STORE.parse(raw))
    assert (loaded.namespace, loaded.name, loaded.uid, loaded.generation) == (
        "team-a",
        "b1",
        "uid-b1",
        2,
    )


def test_an_event_names_its_object_and_keeps_its_message_short() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    event = event_manifest(_backup("b1"), reason="Odd", message="x" * 5000, warning=True, now=now)
    assert event["involvedObject"]["kind"] == "Backup"
    assert event["involvedObject"]["uid"] == "uid-b1"
    assert event["metadata"] == {"generateName": "b1.", "namespace": "team-a"}
    assert (event["type"], event["reason"], len(event["message"])) == ("Warning", "Odd", 1024)
    assert event["firstTimestamp"] == "2026-01-01T00:00:00Z"


def test_a_status_patch_removes_the_fields_the_status_no_longer_has() -> None:
    from dockyard.core.models.scaling import ScalingPolicyStatus

    body = replacing(ScalingPolicyStatus(current_replicas=2))
    assert body["currentReplicas"] == 2
    assert body["desiredReplicas"] is None  # present, so the merge patch removes it


async def test_one_object_has_one_lock_while_passes_hold_it() -> None:
    locks: ObjectLocks[tuple[str, str]] = ObjectLocks()
    steps: list[tuple[str, int]] = []

    async def one_pass(key: tuple[str, str], tag: int) -> None:
        async with locks.lock(key):
            steps.append(("in", tag))
            await asyncio.sleep(0)
            steps.append(("out", tag))

    await asyncio.gather(one_pass(("ns", "a"), 1), one_pass(("ns", "a"), 2),
                         one_pass(("ns", "b"), 3))  # fmt: skip

    a_steps = [step for step in steps if step[1] != 3]
    assert a_steps == [("in", 1), ("out", 1), ("in", 2), ("out", 2)]  # never interleaved
    assert steps.index(("in", 3)) < steps.index(("out", 1))  # another object's runs beside
    assert locks._locks == {}  # kept only while held
    locks.queued.add(("ns", "a"))
    locks.forget(("ns", "a"))
    assert ("ns", "a") not in locks.queued


async def test_a_status_write_or_patch_that_names_no_object_is_refused() -> None:
    # By name alone it could land on another object made again under the name.
    with pytest.raises(ValueError, match="uid"):
        await STORE.write_status("team-a", "nightly", {"phase": "Failed"}, uid="")
    with pytest.raises(ValueError, match="uid"):
        await STORE.patch("team-a", "nightly", {"metadata": {"labels": {}}}, uid=None)


async def test_an_invalid_object_whose_status_says_so_already_is_not_written_again() -> None:
    raw = _backup("nightly", storage=5)
    with pytest.raises(InvalidObject) as invalid:
        STORE.parse(raw)
    raw["status"] = {"phase": "Failed", "message": invalid.value.problem, "attempts": 0}

    # No write and no second Event: either would need the client, which is None here.
    assert await STORE.loaded(raw, on_invalid=OnInvalid.FAIL) is None
