"""JSON merge patch (RFC 7396) as PATCH applies it before validating the result."""

from __future__ import annotations

from dockyard.api.routes.objects import merge as _merge


def test_merge_replaces_scalars_and_lists_and_removes_nulls() -> None:
    target = {"image": "a:1", "env": [{"name": "A"}], "database": {"enabled": True}}
    patch = {"image": "a:2", "env": [], "database": {"deletionPolicy": "Delete"}, "port": None}
    assert _merge(target, patch) == {
        "image": "a:2",
        "env": [],
        "database": {"enabled": True, "deletionPolicy": "Delete"},
    }


def test_merge_does_not_mutate_its_inputs() -> None:
    target = {"database": {"enabled": True}}
    _merge(target, {"database": {"enabled": None}})
    assert target == {"database": {"enabled": True}}
