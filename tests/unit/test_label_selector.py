"""LabelSelector: the metav1.LabelSelector shape, checked by the model, and its matching."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dockyard.core.models.backup_store import BackupStoreSpec
from dockyard.core.models.label_selector import LabelSelector

LABELS = {"tier": "gold", "team": "a", "dockyard.io/region": "eu"}


def _selector(**body: Any) -> LabelSelector:
    return LabelSelector.model_validate(body)


@pytest.mark.parametrize(
    ("body", "selected"),
    [
        ({}, True),
        ({"matchLabels": {"tier": "gold"}}, True),
        ({"matchLabels": {"tier": "gold", "team": "b"}}, False),
        ({"matchLabels": {"dockyard.io/region": "eu"}}, True),
        ({"matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]}, True),
        ({"matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["a"]}]}, False),
        ({"matchExpressions": [{"key": "missing", "operator": "NotIn", "values": ["a"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, False),
        (
            {
                "matchLabels": {"tier": "gold"},
                "matchExpressions": [{"key": "team", "operator": "In", "values": ["b"]}],
            },
            False,
        ),
    ],
)
def test_a_selector_matches_as_kubernetes_does(body: dict[str, Any], selected: bool) -> None:
    assert _selector(**body).matches(LABELS) is selected


def test_a_selector_describes_itself_in_kubectl_syntax() -> None:
    selector = _selector(
        matchLabels={"tier": "gold"},
        matchExpressions=[
            {"key": "team", "operator": "NotIn", "values": ["b", "a"]},
            {"key": "legacy", "operator": "DoesNotExist"},
        ],
    )
    assert selector.describe() == "tier=gold,team notin (a,b),!legacy"
    assert _selector().describe() == "<everything>"


@pytest.mark.parametrize(
    ("body", "where", "words"),
    [
        ({"matchExpressions": [{"key": "team", "operator": "In"}]}, "matchExpressions", "need"),
        (
            {"matchExpressions": [{"key": "t", "operator": "Exists", "values": ["a"]}]},
            "matchExpressions",
            "take none",
        ),
        ({"matchLabels": {"bad key!": "x"}}, "matchLabels", "label key"),
        ({"matchLabels": {"tier": "not a value"}}, "matchLabels", "pattern"),
        ({"matchExpressions": [{"key": "t", "operator": "Like", "values": ["a"]}]}, "operator", ""),
    ],
)
def test_a_malformed_selector_is_refused_naming_the_field(
    body: dict[str, Any], where: str, words: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        _selector(**body)
    error = caught.value.errors()[0]
    assert where in ".".join(str(p) for p in error["loc"])
    assert words in error["msg"]


def test_a_store_without_a_selector_serves_every_namespace() -> None:
    base = {
        "storage": {"filesystem": {"path": "/backups"}},
        "encryption": {"keySecretRef": {"name": "k", "key": "key"}},
    }
    everyone = BackupStoreSpec.model_validate(base)
    gold = BackupStoreSpec.model_validate(
        {**base, "namespaceSelector": {"matchLabels": {"tier": "gold"}}}
    )
    assert everyone.serves({})
    assert gold.serves(LABELS)
    assert not gold.serves({"tier": "silver"})
    assert not gold.serves({})
