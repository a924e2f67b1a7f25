"""What a PATCH may hold: spec, and labels and annotations as objects of strings. A body
of another shape is a 422 naming the field, never a 500 (found by schemathesis)."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.api.routes.objects import patch_problems


@pytest.mark.parametrize(
    ("patch", "fields"),
    [
        ({"spec": {"replicas": 2}}, []),
        ({"metadata": {"labels": {"team": "shop", "old": None}, "annotations": None}}, []),
        ({"metadata": {"annotations": [None, None]}}, ["metadata.annotations"]),
        ({"metadata": {"labels": {"team": 7}}}, ["metadata.labels"]),
        ({"metadata": {"name": "other"}}, ["metadata.name"]),
        ({"metadata": []}, ["metadata"]),
        ({"spec": [1]}, ["spec"]),
        ({"status": {}}, ["status"]),
    ],
)
def test_a_patch_of_the_wrong_shape_names_its_field(
    patch: dict[str, Any], fields: list[str]
) -> None:
    assert [problem.field for problem in patch_problems(patch)] == fields
