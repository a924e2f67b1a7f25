"""Kopf's bookkeeping (progress, last-handled configuration) names the object each record
was written for, and a record of another object of the name reads as none (no I/O)."""

from __future__ import annotations

from typing import Any

import kopf

from dockyard.operator.bookkeeping import PREFIX, DiffBaseStorage, ProgressStorage

HANDLER = kopf.HandlerId("reconcile")
RECORD: kopf.ProgressRecord = {"started": "2026-12-06T07:00:00", "retries": 1}
ESSENCE: kopf.BodyEssence = {"spec": {"url": "https://hooks.example.com"}}  # type: ignore[typeddict-unknown-key]


def _body(uid: str, annotations: dict[str, str] | None = None) -> kopf.Body:
    meta: dict[str, Any] = {"name": "hook", "namespace": "team-a", "uid": uid}
    return kopf.Body({"metadata": {**meta, "annotations": annotations or {}}})  # type: ignore[typeddict-item]


def _progress(uid: str) -> dict[str, str]:
    """The annotations a pass for the object ``uid`` writes of its handler's progress."""
    patch = kopf.Patch()
    ProgressStorage().store(key=HANDLER, record=RECORD, body=_body(uid), patch=patch)
    return dict(patch["metadata"]["annotations"])


def _handled(uid: str) -> dict[str, str]:
    """The annotations a pass for the object ``uid`` writes once it has handled it."""
    patch = kopf.Patch()
    DiffBaseStorage().store(body=_body(uid), patch=patch, essence=ESSENCE)
    return dict(patch["metadata"]["annotations"])


def test_the_object_each_record_was_written_for_reads_it_as_written() -> None:
    body = _body("uid-1", {**_progress("uid-1"), **_handled("uid-1")})

    assert ProgressStorage().fetch(key=HANDLER, body=body) == RECORD
    assert DiffBaseStorage().fetch(body=body) == ESSENCE


def test_another_object_of_the_name_reads_none() -> None:
    body = _body("uid-2", {**_progress("uid-1"), **_handled("uid-1")})

    assert ProgressStorage().fetch(key=HANDLER, body=body) is None
    assert DiffBaseStorage().fetch(body=body) is None


def test_records_of_two_objects_mixed_are_each_read_for_their_own() -> None:
    # The earlier object's patch landed between two of the new one's: its handled
    # configuration beside the new one's own progress.
    body = _body("uid-2", {**_handled("uid-1"), **_progress("uid-2")})

    assert ProgressStorage().fetch(key=HANDLER, body=body) == RECORD
    assert DiffBaseStorage().fetch(body=body) is None


def test_records_written_before_they_named_their_object_are_read_as_before() -> None:
    older = {**_progress("uid-1"), **_handled("uid-1")}
    older = {key: value.replace(',"writtenFor":"uid-1"', "") for key, value in older.items()}
    assert "uid-1" not in "".join(older.values())
    body = _body("uid-1", older)

    assert ProgressStorage().fetch(key=HANDLER, body=body) == RECORD
    assert DiffBaseStorage().fetch(body=body) == ESSENCE


def test_the_uid_stays_out_of_the_configuration_compared_for_changes() -> None:
    body = _body("uid-1", _handled("uid-1"))
    storage = DiffBaseStorage()

    assert storage.fetch(body=body) == storage.build(body=kopf.Body({"spec": ESSENCE["spec"]}))  # type: ignore[typeddict-item]
    assert all(key.startswith(f"{PREFIX}/") for key in _handled("uid-1"))
