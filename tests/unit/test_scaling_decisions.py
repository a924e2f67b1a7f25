"""Whether a ScalingPolicy is in force (one per environment, the oldest wins) and whether
it is paused (by its spec, or while a Restore into its environment is in progress)."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.core.models.environment import Environment
from dockyard.core.models.restore import Restore
from dockyard.core.models.scaling import ScalingPolicy
from dockyard.operator.scaling.decisions import (
    AcceptanceReason,
    PauseReason,
    acceptance,
    held_replicas,
    pause_decision,
    pinned_replicas,
    prevailing_rival,
    restore_target,
)


def _policy(
    name: str = "shop",
    target: str = "shop",
    created: str | None = "2026-03-02T10:00:00Z",
    **spec: Any,
) -> ScalingPolicy:
    meta: dict[str, Any] = {"name": name, "namespace": "team-a", "uid": f"uid-{name}"}
    if created is not None:
        meta["creationTimestamp"] = created
    return ScalingPolicy.model_validate(
        {
            "metadata": meta,
            "spec": {"targetRef": {"name": target}, "minReplicas": 2, "maxReplicas": 5, **spec},
        }
    )


def _env(name: str = "shop", tier: str = "staging") -> Environment:
    return Environment.model_validate(
        {
            "metadata": {"name": name, "namespace": "team-a", "uid": "env-uid"},
            "spec": {"tier": tier, "image": "registry.example.com/shop:1.4.2"},
        }
    )


def _restore(
    name: str = "r1",
    *,
    phase: str | None = None,
    target: str | None = None,
    source: dict[str, Any] | None = None,
    dry_run: bool = False,
    plan_target: str | None = None,
) -> Restore:
    spec: dict[str, Any] = {
        "source": source or {"environmentRef": {"name": "shop"}, "select": "latest"},
        "dryRun": dry_run,
    }
    if target is not None:
        spec["target"] = {"environmentRef": {"name": target}}
    status: dict[str, Any] = {}
    if phase is not None:
        status["phase"] = phase
    if plan_target is not None:
        status["plan"] = {
            "backup": "b1",
            "sourceEnvironment": "shop",
            "target": plan_target,
            "inPlace": plan_target == "shop",
            "estimatedDurationSeconds": 60,
        }
    return Restore.model_validate(
        {"metadata": {"name": name, "namespace": "team-a"}, "spec": spec, "status": status}
    )


# -- conflicts ---------------------------------------------------------------------------


def test_the_older_policy_prevails_over_a_newer_one() -> None:
    old = _policy("old", created="2026-03-02T10:00:00Z")
    new = _policy("new", created="2026-03-02T11:00:00Z")
    assert prevailing_rival(new, [old, new]) == old
    assert prevailing_rival(old, [old, new]) is None


def test_at_the_same_second_the_first_name_prevails() -> None:
    a = _policy("a", created="2026-03-02T10:00:00Z")
    b = _policy("b", created="2026-03-02T10:00:00Z")
    assert prevailing_rival(b, [a, b]) == a
    assert prevailing_rival(a, [b, a]) is None


def test_the_oldest_of_several_rivals_is_named() -> None:
    first = _policy("first", created="2026-03-01T00:00:00Z")
    second = _policy("second", created="2026-03-02T00:00:00Z")
    third = _policy("third", created="2026-03-03T00:00:00Z")
    assert prevailing_rival(third, [third, second, first]) == first


def test_policies_for_other_environments_are_no_rivals() -> None:
    other = _policy("other", target="billing", created="2026-03-01T00:00:00Z")
    assert prevailing_rival(_policy(), [other]) is None


def test_a_policy_not_yet_stored_comes_after_every_stored_one() -> None:
    stored = _policy("stored")
    unsaved = _policy("unsaved", created=None)
    assert prevailing_rival(unsaved, [stored]) == stored


def test_a_conflict_is_refused_naming_the_other_policy() -> None:
    old = _policy("old", created="2026-03-02T10:00:00Z")
    verdict = acceptance(
        _policy("new"), rival=old, environment=_env(), schedule_problems=["ignored"]
    )
    assert not verdict.holds
    assert verdict.reason is AcceptanceReason.CONFLICT
    assert "ScalingPolicy old" in verdict.message
    assert "2026-03-02T10:00:00+00:00" in verdict.message


# -- acceptance --------------------------------------------------------------------------


def test_a_policy_without_its_environment_is_refused() -> None:
    verdict = acceptance(_policy(), rival=None, environment=None, schedule_problems=[])
    assert (verdict.holds, verdict.reason) == (False, AcceptanceReason.TARGET_NOT_FOUND)
    assert "Environment shop" in verdict.message


def test_a_schedule_the_parser_refuses_refuses_the_policy() -> None:
    verdict = acceptance(
        _policy(), rival=None, environment=_env(), schedule_problems=["schedule a: bad"]
    )
    assert (verdict.holds, verdict.reason) == (False, AcceptanceReason.INVALID_SCHEDULE)
    assert verdict.message == "schedule a: bad"


def test_production_needs_a_floor_of_two() -> None:
    policy = _policy(minReplicas=1)
    verdict = acceptance(
        policy, rival=None, environment=_env(tier="production"), schedule_problems=[]
    )
    assert (verdict.holds, verdict.reason) == (False, AcceptanceReason.BELOW_TIER_MINIMUM)
    assert acceptance(
        policy, rival=None, environment=_env(tier="staging"), schedule_problems=[]
    ).holds


def test_a_sound_policy_is_accepted() -> None:
    verdict = acceptance(_policy(), rival=None, environment=_env(), schedule_problems=[])
    assert (verdict.holds, verdict.reason) == (True, AcceptanceReason.ACCEPTED)


# -- pausing -----------------------------------------------------------------------------


def test_the_spec_pauses_the_policy() -> None:
    pause = pause_decision(_policy(paused=True), [], {})
    assert pause is not None
    assert pause.reason is PauseReason.SPEC


@pytest.mark.parametrize("phase", ["Pending", "BackingUp", "Restoring", "Verifying"])
def test_a_restore_in_progress_into_the_environment_pauses_it(phase: str) -> None:
    pause = pause_decision(_policy(), [_restore(phase=phase, plan_target="shop")], {})
    assert pause is not None
    assert pause.reason is PauseReason.RESTORE_IN_PROGRESS
    assert pause.restore == "r1"
    assert "Restore r1" in pause.message
    assert f"phase {phase}" in pause.message


@pytest.mark.parametrize("phase", [None, "Pending"])
def test_a_restore_not_planned_yet_does_not_pause(phase: str | None) -> None:
    # Its backup missing, say: it waits without a bound, and touches nothing meanwhile.
    assert pause_decision(_policy(), [_restore(phase=phase)], {}) is None


@pytest.mark.parametrize("phase", ["Completed", "Failed"])
def test_a_finished_restore_does_not_pause(phase: str) -> None:
    assert pause_decision(_policy(), [_restore(phase=phase)], {}) is None


def test_a_restore_waiting_for_approval_does_not_pause_until_it_is_approved() -> None:
    assert pause_decision(_policy(), [_restore(phase="AwaitingApproval")], {}) is None


def test_a_dry_run_does_not_pause() -> None:
    assert pause_decision(_policy(), [_restore(dry_run=True)], {}) is None


def test_a_restore_into_another_environment_does_not_pause() -> None:
    assert pause_decision(_policy(), [_restore(target="billing")], {}) is None


def test_pause_during_restore_can_be_turned_off() -> None:
    restoring = _restore(phase="Restoring")
    assert pause_decision(_policy(pauseDuringRestore=False), [restoring], {}) is None


def test_several_restores_name_the_first_and_count_the_rest() -> None:
    restores = [_restore(name, phase="Restoring") for name in ("r2", "r1", "r3")]
    pause = pause_decision(_policy(), restores, {})
    assert pause is not None
    assert pause.restore == "r1"
    assert "(and 2 more)" in pause.message


def test_an_explicit_target_wins_over_the_source() -> None:
    restore = _restore(target="shop-copy")
    assert restore_target(restore, {}) == "shop-copy"


def test_an_in_place_restore_targets_the_planned_environment() -> None:
    by_backup = {"backupRef": {"name": "b1"}}
    assert restore_target(_restore(source=by_backup, plan_target="shop"), {}) == "shop"


def test_an_in_place_restore_by_environment_targets_that_environment() -> None:
    assert restore_target(_restore(), {}) == "shop"


def test_an_in_place_restore_of_a_named_backup_targets_the_backup_environment() -> None:
    restore = _restore(source={"backupRef": {"name": "b1"}}, phase="Restoring")
    assert restore_target(restore, {"b1": "shop"}) == "shop"
    assert restore_target(restore, {}) is None
    assert pause_decision(_policy(), [restore], {"b1": "shop"}) is not None


# -- the pinned count --------------------------------------------------------------------


def test_a_paused_policy_holds_the_deployment_where_it_is() -> None:
    assert pinned_replicas({"spec": {"replicas": 4}}, {"status": {"currentReplicas": 2}}, 1) == 4


def test_without_a_deployment_the_hpa_count_then_the_fallback_is_held() -> None:
    assert pinned_replicas(None, {"status": {"currentReplicas": 3}}, 2) == 3
    assert pinned_replicas(None, None, 2) == 2


def test_the_pinned_count_is_at_least_one() -> None:
    assert pinned_replicas({"spec": {"replicas": 0}}, None, 2) == 1


def _paused_policy(paused: str) -> ScalingPolicy:
    policy = _policy()
    condition = {
        "type": "Paused",
        "status": paused,
        "reason": "RestoreInProgress" if paused == "True" else "NotPaused",
        "message": "",
        "lastTransitionTime": "2026-03-02T10:00:00Z",
    }
    return policy.model_copy(
        update={"status": policy.status.model_validate({"conditions": [condition]})}
    )


def test_an_ongoing_pause_keeps_the_count_it_began_with() -> None:
    pinned_hpa = {"spec": {"minReplicas": 3, "maxReplicas": 3}}
    held = held_replicas(_paused_policy("True"), pinned_hpa)
    assert held == 3
    # Someone scaled the Deployment by hand meanwhile: the pause holds its count.
    assert pinned_replicas({"spec": {"replicas": 5}}, pinned_hpa, 1, held=held) == 3


def test_a_new_pause_holds_nothing_yet() -> None:
    free_hpa = {"spec": {"minReplicas": 1, "maxReplicas": 5}}
    assert (
        held_replicas(_paused_policy("False"), {"spec": {"minReplicas": 3, "maxReplicas": 3}})
        is None
    )
    assert held_replicas(_paused_policy("True"), free_hpa) is None
    assert held_replicas(_policy(), None) is None


def test_a_plan_that_no_longer_holds_does_not_pause() -> None:
    # Planned by a dry run; its backup gone since, the plan stays beside Planned False.
    restore = _restore(phase="Pending", plan_target="shop")
    stale = restore.status.with_condition(
        "Planned", False, "SourceUnavailable", "gone", generation=None
    )
    restore = restore.model_copy(update={"status": stale})
    assert pause_decision(_policy(), [restore], {}) is None
