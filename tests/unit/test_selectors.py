"""Label selectors match as the apiserver's do; a bad one says which part is wrong."""

from __future__ import annotations

import pytest

from dockyard.core.selectors import SelectorError, matches, parse

LABELS = {"team": "shop", "tier": "production", "canary": ""}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("team=shop", True),
        ("team==shop", True),
        ("team!=shop", False),
        ("team in (shop, search)", True),
        ("team notin (shop)", False),
        ("canary", True),
        ("!canary", False),
        ("!missing", True),
        ("team=shop,tier in (production,staging)", True),
        ("team=shop,tier=staging", False),
        ("missing!=x", True),
    ],
)
def test_selector_matching(selector: str, expected: bool) -> None:
    assert matches(parse(selector), LABELS) is expected


@pytest.mark.parametrize("selector", ["==", "team in ()", "team=sh op", "a b c", "team in (x"])
def test_invalid_selectors_are_refused(selector: str) -> None:
    with pytest.raises(SelectorError):
        parse(selector)
