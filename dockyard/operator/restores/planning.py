"""A Restore's first two stages, before anything is touched: its plan and its approval.

``plan`` makes the plan (``dockyard.core.restore_plan.plan_restore``: the source
backup, the target, size, tables and an estimate from history) and writes it with the
Planned condition, or says why it cannot be made yet. It is made again on every pass
while the restore is Pending (a ``latest`` source follows new backups) and never once
it is fixed (``plan_is_fixed``). ``approve`` writes what ``approval.judge_approval``
decided: AwaitingApproval (the Approved condition and an Event say why), or the
approval the restore goes on with. ``reject`` fails a restore rejected while it awaited
approval (``dockyard.core.restore_rejection``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from dockyard.core.models.backup import Backup
from dockyard.core.models.environment import Environment
from dockyard.core.models.restore import (
    RestoreConditionType,
    RestorePhase,
    RestorePlan,
    RestoreStatus,
)
from dockyard.core.restore_plan import (
    ApprovalState,
    approval_tier,
    plan_restore,
    restore_history,
)
from dockyard.core.restore_rejection import decide_rejection
from dockyard.operator.outcomes import Outcome
from dockyard.operator.restores.approval import judge_approval
from dockyard.operator.restores.records import MESSAGE_LIMIT, LoadedRestore, RestoreRecords
from dockyard.operator.restores.safety import safety_backup_name
from dockyard.operator.store import post


def plan_is_fixed(status: RestoreStatus) -> bool:
    """Whether the plan in ``status`` is final: what an approver sees is what runs.

    A plan is made again on every pass while the restore is Pending (a ``latest``
    source follows new backups). Once it waits for approval, the approval is given to
    that plan, so a newer backup no longer replaces it (a new Restore restores that
    one); once it started, a retry must not pick its own safety backup as ``latest``.
    """
    return (
        status.attempts > 0
        or status.safety_backup is not None
        or status.phase not in (None, RestorePhase.PENDING)
    )


async def plan(
    records: RestoreRecords,
    loaded: LoadedRestore,
    backups: list[Backup],
    environments: Mapping[str, Environment],
) -> tuple[LoadedRestore, RestorePlan] | None:
    """The restore with its plan written, and the plan; None while it cannot be made."""
    restore = loaded.restore
    status = restore.status
    if plan_is_fixed(status) and status.plan is not None:
        return loaded, status.plan
    own = safety_backup_name(loaded.name)
    candidates = [b for b in backups if b.metadata.name != own]
    tiers = {name: env.spec.tier for name, env in environments.items()}
    source = restore.spec.source.environment_ref
    planned_from = status.plan.source_environment if status.plan else None
    history = restore_history(
        planned_from or (source.name if source else ""),
        await records.restores.in_namespace(loaded.namespace),
        await records.drills.in_namespace(loaded.namespace),
    )
    decision = plan_restore(restore.spec, backups=candidates, tiers=tiers, history=history)
    if decision.plan is None:
        updated = status.model_copy(
            update={"phase": RestorePhase.PENDING, "message": f"Cannot plan yet: {decision.reason}"}
        )
        updated = updated.observed(loaded.generation).with_condition(
            RestoreConditionType.PLANNED,
            False,
            "SourceUnavailable",
            _cut(decision.reason),
            generation=loaded.generation,
        )
        if records.changed(status, updated):
            await records.write(loaded, updated)
            post(loaded.raw, reason="NotPlanned", message=decision.reason, warning=True)
        return None
    dry = restore.spec.dry_run
    message = (
        f"Dry run: {decision.reason}; nothing was changed. Set spec.dryRun to false to "
        "carry out this plan."
        if dry
        else f"Planned: {decision.reason}"
    )
    updated = status.model_copy(
        update={
            "phase": status.phase or RestorePhase.PENDING,
            "plan": decision.plan,
            "message": message,
        }
    )
    updated = updated.observed(loaded.generation).with_condition(
        RestoreConditionType.PLANNED,
        True,
        "DryRun" if dry else "Planned",
        _cut(decision.reason),
        generation=loaded.generation,
    )
    if records.changed(status, updated):
        await records.write(loaded, updated)
        post(loaded.raw, reason="Planned", message=message)
    return _with(loaded, updated), decision.plan


async def approve(
    records: RestoreRecords, loaded: LoadedRestore, plan: RestorePlan, target: Environment
) -> LoadedRestore | None:
    """The restore with its approval written; None while it waits for one."""
    restore = loaded.restore
    tier = approval_tier(plan.target_tier, target.spec.tier)
    decision = await judge_approval(records.context.kube, loaded.raw, restore, tier)
    status = restore.status
    updated = status.model_copy(update={"approval": decision.approval}).with_condition(
        RestoreConditionType.APPROVED,
        decision.may_proceed,
        decision.state.value,
        _cut(decision.reason),
        generation=loaded.generation,
    )
    if not decision.may_proceed:
        updated = updated.model_copy(
            update={"phase": RestorePhase.AWAITING_APPROVAL, "message": decision.reason}
        )
        if records.changed(status, updated):
            await records.write(loaded, updated)
            refused = decision.state is ApprovalState.REFUSED
            post(
                loaded.raw,
                reason="ApprovalRefused" if refused else "AwaitingApproval",
                message=decision.reason,
                warning=refused,
            )
        return None
    if records.changed(status, updated):
        await records.write(loaded, updated)
        if decision.state is ApprovalState.APPROVED:
            post(loaded.raw, reason="Approved", message=decision.reason)
    return _with(loaded, updated)


async def reject(records: RestoreRecords, loaded: LoadedRestore) -> Outcome | None:
    """The restore failed, reason Rejected, when it awaits approval and someone rejected
    it (``dockyard.core.restore_rejection``); None when it is not rejected."""
    status = loaded.status
    decision = decide_rejection(
        awaiting=status.phase is RestorePhase.AWAITING_APPROVAL,
        annotations=loaded.restore.metadata.annotations,
        approval=status.approval,
        now=datetime.now(UTC),
    )
    if decision is None:
        return None
    rejected = status.model_copy(update={"approval": decision.approval}).with_condition(
        RestoreConditionType.APPROVED,
        False,
        decision.state.value,
        _cut(decision.reason),
        generation=loaded.generation,
    )
    return await records.fail(loaded, _cut(decision.reason), reason="Rejected", status=rejected)


def _cut(message: str) -> str:
    return message[:MESSAGE_LIMIT]


def _with(loaded: LoadedRestore, status: RestoreStatus) -> LoadedRestore:
    return LoadedRestore(loaded.raw, loaded.restore.model_copy(update={"status": status}))


__all__ = ["approve", "plan", "plan_is_fixed", "reject"]
