"""The Kubernetes Events of an Environment: what a reconcile pass changed, in words.

A phase change (a Warning into Degraded or Failed), the database provisioned or
unavailable, a host the environment may not publish (``HostNotAllowed``, ``HostTaken``),
and the children a pass touched: created or updated when the spec
changed, or restored after drift (someone else changed them while the spec did not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from dockyard.core.conditions import find
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.environment import (
    Environment,
    EnvironmentConditionType,
    EnvironmentPhase,
    EnvironmentStatus,
)
from dockyard.core.resources import ChildRef
from dockyard.operator.apply import Change
from dockyard.operator.store import post

_WARNING_PHASES: Final = frozenset({EnvironmentPhase.DEGRADED, EnvironmentPhase.FAILED})


def announce(
    raw: Mapping[str, Any],
    env: Environment,
    status: EnvironmentStatus,
    changes: Sequence[tuple[ChildRef, Change | None]],
) -> None:
    """The Events for what a pass changed: phase, database readiness, children."""
    previous = env.status
    if previous.phase != status.phase and status.phase is not None:
        ready = find(status.conditions, EnvironmentConditionType.READY)
        post(
            raw,
            warning=status.phase in _WARNING_PHASES,
            reason="PhaseChanged",
            message=f"{previous.phase or 'New'} -> {status.phase}"
            + (f": {ready.message}" if ready and ready.message else ""),
        )
    _database(raw, previous, status)
    _host(raw, previous, status)
    changed = [(ref, change) for ref, change in changes if change is not Change.UNCHANGED]
    if not changed:
        return
    # Children that change while the spec did not were changed by someone else.
    if previous.observed_generation == env.metadata.generation:
        words = {None: "removed", Change.CREATED: "recreated", Change.UPDATED: "reverted"}
        restored = ", ".join(f"{ref.kind} {ref.name} {words[change]}" for ref, change in changed)
        post(raw, warning=True, reason="DriftRepaired", message=f"Drift repaired: {restored}")
    else:
        words = {None: "removed", Change.CREATED: "created", Change.UPDATED: "updated"}
        done = ", ".join(f"{ref.kind} {ref.name} {words[change]}" for ref, change in changed)
        post(raw, reason="ChildrenApplied", message=done)


def _database(
    raw: Mapping[str, Any], previous: EnvironmentStatus, status: EnvironmentStatus
) -> None:
    kind = EnvironmentConditionType.DATABASE_READY
    before, after = find(previous.conditions, kind), find(status.conditions, kind)
    if after is None or (
        before is not None and (before.status, before.reason) == (after.status, after.reason)
    ):
        return
    if after.status is ConditionStatus.TRUE and after.reason == "Provisioned":
        post(raw, reason="DatabaseProvisioned", message=after.message)
    elif after.status is ConditionStatus.FALSE:
        post(
            raw,
            warning=True,
            reason="DatabaseUnavailable",
            message=f"{after.reason}: {after.message}",
        )


def _host(raw: Mapping[str, Any], previous: EnvironmentStatus, status: EnvironmentStatus) -> None:
    kind = EnvironmentConditionType.HOST_ADMITTED
    before, after = find(previous.conditions, kind), find(status.conditions, kind)
    if after is None or after.status is not ConditionStatus.FALSE:
        return
    if before is None or (before.status, before.reason) != (after.status, after.reason):
        post(raw, warning=True, reason=after.reason, message=after.message)
