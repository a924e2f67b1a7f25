"""A Kubernetes label selector as a field of a custom resource (``metav1.LabelSelector``).

``matchLabels`` and ``matchExpressions`` are ANDed, as everywhere in Kubernetes, and an
empty selector matches every object. The apiserver checks the shape (a CEL rule: In and
NotIn need values, Exists and DoesNotExist take none); :meth:`LabelSelector.matches`
decides with :mod:`dockyard.core.selectors`, the matcher the API's ``labelSelector``
query uses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Final, Self

from pydantic import Field, field_validator, model_validator

from dockyard.core import selectors
from dockyard.core.models.common import CRModel
from dockyard.core.models.declarations import ValidationRule

# A label key: an optional DNS-subdomain prefix and a name of at most 63 characters.
LABEL_KEY_PATTERN: Final = (
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
LABEL_VALUE_PATTERN: Final = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
MAX_REQUIREMENTS: Final = 32

LabelKey = Annotated[str, Field(min_length=1, max_length=317, pattern=LABEL_KEY_PATTERN)]
LabelValue = Annotated[str, Field(max_length=63, pattern=LABEL_VALUE_PATTERN)]


class SelectorOperator(StrEnum):
    """How a requirement relates a label's key to its values."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


# What each operator is called in dockyard.core.selectors.
_MATCHER_OPERATORS: Final = {
    SelectorOperator.IN: "in",
    SelectorOperator.NOT_IN: "notin",
    SelectorOperator.EXISTS: "exists",
    SelectorOperator.DOES_NOT_EXIST: "!exists",
}
_VALUES_MESSAGE: Final = "In and NotIn need values; Exists and DoesNotExist take none"


class LabelSelectorRequirement(CRModel):
    """One requirement on a label: its key, an operator and (for In and NotIn) values."""

    cel_rules = (
        ValidationRule(
            rule=(
                "self.operator in ['In', 'NotIn'] ? "
                "(has(self.values) && size(self.values) > 0) : "
                "(!has(self.values) || size(self.values) == 0)"
            ),
            message=_VALUES_MESSAGE,
            field_path=".values",
        ),
    )

    key: LabelKey
    """The label key the requirement is about."""
    operator: SelectorOperator
    """In, NotIn, Exists or DoesNotExist."""
    values: list[LabelValue] = Field(default_factory=list, max_length=MAX_REQUIREMENTS)
    """The values In and NotIn compare with; empty for Exists and DoesNotExist."""

    @model_validator(mode="after")
    def _values_fit_the_operator(self) -> Self:
        wants_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if wants_values != bool(self.values):
            raise ValueError(_VALUES_MESSAGE)
        return self


class LabelSelector(CRModel):
    """Objects whose labels match every entry of matchLabels and every matchExpression.
    An empty selector matches everything."""

    # A structural schema has no patternProperties: the keys are checked by a rule.
    cel_rules = (
        ValidationRule(
            rule=(
                "!has(self.matchLabels) || self.matchLabels.all(k, size(k) <= 317 && "
                f"k.matches(r'{LABEL_KEY_PATTERN}'))"
            ),
            message="matchLabels keys must be label keys: [prefix/]name",
            field_path=".matchLabels",
        ),
    )

    match_labels: dict[str, LabelValue] = Field(default_factory=dict, max_length=MAX_REQUIREMENTS)
    """Labels the object must carry with exactly these values."""
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, max_length=MAX_REQUIREMENTS
    )
    """Requirements the object's labels must all meet."""

    @field_validator("match_labels")
    @classmethod
    def _label_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if len(key) > 317 or not re.match(LABEL_KEY_PATTERN, key):
                raise ValueError(f"{key!r} is not a label key: [prefix/]name")
        return value

    def requirements(self) -> list[selectors.Requirement]:
        """The selector as the matcher's requirements (matchLabels first)."""
        found = [
            selectors.Requirement(key, "in", frozenset({value}))
            for key, value in self.match_labels.items()
        ]
        found += [
            selectors.Requirement(
                expression.key,
                _MATCHER_OPERATORS[expression.operator],
                frozenset(expression.values),
            )
            for expression in self.match_expressions
        ]
        return found

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether an object with ``labels`` is selected."""
        return selectors.matches(self.requirements(), labels)

    def describe(self) -> str:
        """The selector in the ``kubectl -l`` syntax (``<everything>`` when empty)."""
        parts = [f"{key}={value}" for key, value in self.match_labels.items()]
        for expression in self.match_expressions:
            values = ",".join(sorted(expression.values))
            parts.append(
                {
                    SelectorOperator.IN: f"{expression.key} in ({values})",
                    SelectorOperator.NOT_IN: f"{expression.key} notin ({values})",
                    SelectorOperator.EXISTS: expression.key,
                    SelectorOperator.DOES_NOT_EXIST: f"!{expression.key}",
                }[expression.operator]
            )
        return ",".join(parts) or "<everything>"


__all__ = ["LabelSelector", "LabelSelectorRequirement", "SelectorOperator"]
