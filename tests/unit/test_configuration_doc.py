"""docs/configuration.md is the reference of every setting: each field of ``Settings``
has its row there, and no row names a setting that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from dockyard.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# A row's first cell: `DOCKYARD_X`, or `DOCKYARD_X_MIN` / `_MAX` for two settings.
_ROW = re.compile(r"^\| `DOCKYARD_([A-Z0-9_]+)`(?: / `_([A-Z0-9_]+)`)? \|", re.MULTILINE)


def _documented() -> set[str]:
    names: set[str] = set()
    for first, sibling in _ROW.findall((ROOT / "docs" / "configuration.md").read_text()):
        names.add(first)
        if sibling:
            # `_KEY_FILE` beside `DOCKYARD_TLS_CERT_FILE` is DOCKYARD_TLS_KEY_FILE.
            kept = first.split("_")[: -len(sibling.split("_"))]
            names.add("_".join([*kept, sibling]))
    return names


def test_every_setting_has_a_row_and_every_row_a_setting() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    documented = _documented()
    assert sorted(settings - documented) == []
    assert sorted(documented - settings) == []
