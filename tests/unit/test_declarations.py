"""What a kind declares about its CRD: standard columns and subclass-worded fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from pydantic import Field

from dockyard.core.crds import ALL_KINDS, structural_schema
from dockyard.core.models.common import CRModel
from dockyard.core.models.declarations import AGE_COLUMN, CRDInfo, PrinterColumn


def test_every_kind_ends_its_columns_with_age() -> None:
    for kind in ALL_KINDS:
        assert kind.crd.columns[-1] == AGE_COLUMN
        assert AGE_COLUMN not in kind.crd.printer_columns


def test_a_condition_column_shows_its_status_or_its_reason() -> None:
    ready = PrinterColumn.condition("Ready", "Ready", "Whether it serves.")
    why = PrinterColumn.condition("Why", "Accepted", "Why.", show="reason", priority=1)
    assert ready.json_path == '.status.conditions[?(@.type=="Ready")].status'
    assert (why.json_path, why.priority) == ('.status.conditions[?(@.type=="Accepted")].reason', 1)


def test_a_kind_without_columns_still_shows_its_age() -> None:
    assert CRDInfo(kind="Thing", plural="things").columns == (AGE_COLUMN,)


class _Named(CRModel):
    name: str = Field(min_length=1, description="Name of the thing.")


class _Reworded(_Named):
    field_descriptions: ClassVar[Mapping[str, str]] = {"name": "Name of the other thing."}


def test_a_subclass_rewords_an_inherited_field_and_keeps_its_rules() -> None:
    schema = structural_schema(_Reworded)["properties"]["name"]
    assert schema["description"] == "Name of the other thing."
    assert schema["minLength"] == 1
    assert structural_schema(_Named)["properties"]["name"]["description"] == "Name of the thing."
