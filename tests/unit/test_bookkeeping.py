"""Kopf's bookkeeping (progress, last-handled configuration) names the object it was
written for, and reads as none on another object of the name (no I/O)."""

from __future__ import annotations

from typing import Any

import kopf

from dockyard.operator.bookkeeping import WRITTEN_FOR, DiffBaseStorage, ProgressStorage

RECORD: kopf.ProgressRecord = {"started": "2026-12-06T07:00:00", "retries": 1}
ESSENCE: kopf.BodyEssence = {"spec": {"url": "https://hooks.example.com"}}  # type: ignore[typeddict-unknown-key]


def _body(uid: str, annotations: dict[str, str] | None = None) -> kopf.Body:
    meta: dict[str, Any] = {"name": "hook", "namespace": "team-a", "uid": uid}
    return kopf.Body({"metadata": {**meta, "annotations": annotations or {}}})  # type: ignore[typeddict-item]


def _written(uid: str) -> dict[str, str]:
    """The annotations one pass for the object ``uid`` writes."""
    body, patch = _body(uid), kopf.Patch()
    ProgressStorage().store(key=kopf.HandlerId("reconcile"), record=RECORD, body=body, patch=patch)
    DiffBaseStorage().store(body=body, patch=patch, essence=ESSENCE)
    return dict(patch["metadata"]["annotations"])


def test_bookkeeping_names_the_object_it_was_written_for() -> None:
    assert _written("uid-1")[WRITTEN_FOR] == "uid-1"


def test_the_object_it_was_written_for_reads_it() -> None:
    body = _body("uid-1", _written("uid-1"))

    assert ProgressStorage().fetch(key=kopf.HandlerId("reconcile"), body=body) == RECORD
    assert DiffBaseStorage().fetch(body=body) == ESSENCE


def test_another_object_of_the_name_reads_none() -> None:
    body = _body("uid-2", _written("uid-1"))

    assert ProgressStorage().fetch(key=kopf.HandlerId("reconcile"), body=body) is None
    assert DiffBaseStorage().fetch(body=body) is None


def test_bookkeeping_written_before_it_named_its_object_is_read_as_before() -> None:
    older = {k: v for k, v in _written("uid-1").items() if k != WRITTEN_FOR}
    body = _body("uid-1", older)

    assert ProgressStorage().fetch(key=kopf.HandlerId("reconcile"), body=body) == RECORD
    assert DiffBaseStorage().fetch(body=body) == ESSENCE
