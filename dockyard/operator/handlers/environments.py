"""Environment handlers: parse the spec into its model, then record what was observed.

The handlers stay thin; what an environment's children should look like is computed by
pure builders (see ``dockyard.operator.builders``) as they arrive.
"""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from dockyard.core.conditions import set_condition
from dockyard.core.models.common import GROUP, VERSION, ConditionStatus
from dockyard.core.models.environment import (
    EnvironmentConditionType,
    EnvironmentPhase,
    EnvironmentSpec,
    EnvironmentStatus,
)


def observe(
    spec: dict[str, Any], status: dict[str, Any], generation: int | None
) -> EnvironmentStatus:
    """The status an environment should report for this spec (pure: no I/O)."""
    try:
        current = EnvironmentStatus.model_validate(status)
    except ValidationError:
        current = EnvironmentStatus()  # unreadable: start the status afresh
    try:
        EnvironmentSpec.model_validate(spec)
    except ValidationError as exc:
        problem = "; ".join(
            f"spec.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        conditions = set_condition(
            current.conditions,
            type=EnvironmentConditionType.READY,
            status=ConditionStatus.FALSE,
            reason="InvalidSpec",
            message=problem[:1000],
            generation=generation,
        )
        return EnvironmentStatus(
            observed_generation=generation,
            phase=EnvironmentPhase.FAILED,
            conditions=conditions,
            url=current.url,
        )
    conditions = set_condition(
        current.conditions,
        type=EnvironmentConditionType.READY,
        status=ConditionStatus.FALSE,
        reason="Provisioning",
        message="The spec is valid; its children are being provisioned.",
        generation=generation,
    )
    phase = EnvironmentPhase.SUSPENDED if spec.get("suspend") else EnvironmentPhase.PENDING
    return EnvironmentStatus(
        observed_generation=generation, phase=phase, conditions=conditions, url=current.url
    )


@kopf.on.resume(GROUP, VERSION, "environments")
@kopf.on.create(GROUP, VERSION, "environments")
@kopf.on.update(GROUP, VERSION, "environments", field="spec")
def reconcile(
    spec: kopf.Spec, status: kopf.Status, meta: kopf.Meta, patch: kopf.Patch, **_: Any
) -> None:
    observed = observe(dict(spec), dict(status), meta.get("generation"))
    patch.status.update(observed.model_dump(mode="json", exclude_none=True))
