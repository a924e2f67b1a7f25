"""Kubernetes-style conditions: a verdict on one, and setting one while keeping its
transition time when nothing changed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from dockyard.core.models.common import Condition, ConditionStatus


@dataclass(frozen=True, slots=True)
class Verdict:
    """What one condition should say: its status, reason and message."""

    status: ConditionStatus
    reason: str
    message: str

    @classmethod
    def of(cls, holds: bool, reason: str, message: str) -> Verdict:
        """True when ``holds``, else False."""
        return cls(ConditionStatus.TRUE if holds else ConditionStatus.FALSE, reason, message)

    @property
    def holds(self) -> bool:
        return self.status is ConditionStatus.TRUE


def set_condition(
    conditions: Sequence[Condition],
    *,
    type: str,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime | None = None,
) -> list[Condition]:
    """Return ``conditions`` with ``type`` set; other conditions are left as they were.

    ``lastTransitionTime`` moves only when the status changes, as the API conventions
    ask, so clients can tell how long a condition has held.
    """
    now = now or datetime.now(UTC)
    previous = find(conditions, type)
    since = now
    if previous is not None and previous.status == status:
        since = previous.last_transition_time
    updated = Condition(
        type=type,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=since,
    )
    if previous is None:
        return [*conditions, updated]
    return [updated if condition.type == type else condition for condition in conditions]


def find(conditions: Sequence[Condition], type: str) -> Condition | None:
    """The condition of ``type`` in ``conditions``, if there is one."""
    return next((c for c in conditions if c.type == type), None)
