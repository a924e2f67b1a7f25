"""What the operator reports for an environment's spec, computed without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime

from dockyard.core.conditions import find, set_condition
from dockyard.core.models.common import ConditionStatus
from dockyard.operator.handlers.environments import observe

VALID = {"tier": "development", "image": "shop:1.0"}


def test_a_valid_spec_is_pending_with_a_provisioning_condition() -> None:
    status = observe(VALID, {}, generation=3)
    assert status.observed_generation == 3
    assert status.phase == "Pending"
    ready = find(status.conditions, "Ready")
    assert ready is not None
    assert ready.status == ConditionStatus.FALSE
    assert ready.reason == "Provisioning"
    assert ready.observed_generation == 3


def test_a_suspended_spec_is_suspended() -> None:
    assert observe({**VALID, "suspend": True}, {}, generation=1).phase == "Suspended"


def test_an_unreadable_spec_fails_with_the_field_path() -> None:
    status = observe({"tier": "development", "image": "shop:1.0", "replicas": "many"}, {}, 2)
    assert status.phase == "Failed"
    ready = find(status.conditions, "Ready")
    assert ready is not None
    assert ready.reason == "InvalidSpec"
    assert "spec.replicas" in ready.message


def test_transition_time_moves_only_when_the_status_changes() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    t1 = datetime(2026, 1, 2, tzinfo=UTC)
    first = set_condition(
        [],
        type="Ready",
        status=ConditionStatus.FALSE,
        reason="A",
        message="a",
        generation=1,
        now=t0,
    )
    same = set_condition(
        first,
        type="Ready",
        status=ConditionStatus.FALSE,
        reason="B",
        message="b",
        generation=2,
        now=t1,
    )
    flipped = set_condition(
        same,
        type="Ready",
        status=ConditionStatus.TRUE,
        reason="C",
        message="c",
        generation=2,
        now=t1,
    )
    assert same[0].last_transition_time == t0
    assert same[0].reason == "B"
    assert flipped[0].last_transition_time == t1
    assert len(flipped) == 1


def test_other_conditions_are_kept() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    both = set_condition(
        set_condition(
            [],
            type="DatabaseReady",
            status=ConditionStatus.TRUE,
            reason="Ok",
            message="",
            generation=1,
            now=now,
        ),
        type="Ready",
        status=ConditionStatus.FALSE,
        reason="Wait",
        message="",
        generation=1,
        now=now,
    )
    assert [c.type for c in both] == ["DatabaseReady", "Ready"]
