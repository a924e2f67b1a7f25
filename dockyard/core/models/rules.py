"""Validation rules several kinds apply alike, as CEL for the API server and for pydantic.

Each rule is said twice with the same message: as a ``ValidationRule`` the API server
enforces (for ``kubectl apply``) and as a pydantic check (for the REST API and the
operator), so a request fails as early and as clearly on either path. This module owns
"exactly one of these fields" and "a positive duration".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Final

from pydantic import AfterValidator, BaseModel, Field

from dockyard.core.durations import GO_DURATION_PATTERN, parse_duration
from dockyard.core.models.declarations import ValidationRule

# A Go duration's constraints. They sit inside Annotated, before any validator: pydantic
# drops an outer Field's pattern from the JSON Schema once a validator wraps the type.
GO_DURATION: Final[Any] = Field(max_length=32, pattern=GO_DURATION_PATTERN)


def _listed(names: tuple[str, ...]) -> str:
    return ", ".join(names[:-1]) + " and " + names[-1]


def exactly_one_rule(*wire_names: str) -> ValidationRule:
    """The CEL rule that exactly one of the optional fields ``wire_names`` is set."""
    checks = ", ".join(f"has(self.{name})" for name in wire_names)
    return ValidationRule(
        rule=f"[{checks}].exists_one(x, x)",
        message=f"exactly one of {_listed(wire_names)} must be set",
    )


def check_exactly_one(model: BaseModel, *attributes: str) -> None:
    """Raise what ``exactly_one_rule`` reports when not exactly one of ``attributes`` is set.

    ``attributes`` are Python names; the message uses the wire names, as the API
    server's does.
    """
    present = [name for name in attributes if getattr(model, name) is not None]
    if len(present) != 1:
        fields = type(model).model_fields
        wire = tuple(fields[name].alias or name for name in attributes)
        raise ValueError(exactly_one_rule(*wire).message)


def positive_duration_rule(field: str) -> ValidationRule:
    """The CEL rule that a Go duration is above zero."""
    # Guarded by the pattern so a malformed value reports the pattern alone, not also
    # CEL's failure to parse it.
    return ValidationRule(
        rule=f"!self.matches(r'{GO_DURATION_PATTERN}') || duration(self) > duration('0s')",
        message=f"{field} must be positive",
    )


def positive_duration_check(field: str) -> AfterValidator:
    """pydantic's side of ``positive_duration_rule``, with its message."""

    def check(value: str) -> str:
        if parse_duration(value) <= timedelta(0):
            raise ValueError(positive_duration_rule(field).message)
        return value

    return AfterValidator(check)


__all__ = [
    "GO_DURATION",
    "check_exactly_one",
    "exactly_one_rule",
    "positive_duration_check",
    "positive_duration_rule",
]
