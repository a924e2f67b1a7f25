"""What a ScalingPolicy reports after a pass: conditions, and the HPA's counts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dockyard.core.conditions import Verdict, find
from dockyard.core.models.scaling import ScalingPolicy, ScalingPolicyStatus
from dockyard.operator.builders.scaling import ReplicaRange
from dockyard.operator.builders.scaling_windows import Window
from dockyard.operator.scaling.decisions import AcceptanceReason, Pause, PauseReason
from dockyard.operator.scaling.status import Announcement, announcements, status_patch, summarize

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
ACCEPTED = Verdict.of(True, AcceptanceReason.ACCEPTED, "HorizontalPodAutoscaler shop scales.")
CONFLICT = Verdict.of(False, AcceptanceReason.CONFLICT, "ScalingPolicy old already scales shop.")


def _policy(status: dict[str, Any] | None = None) -> ScalingPolicy:
    return ScalingPolicy.model_validate(
        {
            "metadata": {"name": "shop", "namespace": "team-a", "uid": "u", "generation": 3},
            "spec": {"targetRef": {"name": "shop"}, "minReplicas": 2, "maxReplicas": 8},
            "status": status or {},
        }
    )


def _hpa(**status: Any) -> dict[str, Any]:
    return {"status": status}


def _status(policy: ScalingPolicy | None = None, **kwargs: Any) -> ScalingPolicyStatus:
    arguments: dict[str, Any] = {
        "acceptance": ACCEPTED,
        "pause": None,
        "replicas": ReplicaRange(2, 8),
        "hpa": _hpa(),
        "now": NOW,
        **kwargs,
    }
    return summarize(policy or _policy(), **arguments)


def _condition(status: ScalingPolicyStatus, kind: str) -> tuple[str, str]:
    found = find(status.conditions, kind)
    assert found is not None, kind
    return found.status.value, found.reason


def test_counts_come_from_the_hpa_status() -> None:
    hpa = _hpa(currentReplicas=3, desiredReplicas=5, lastScaleTime="2026-03-02T09:58:00Z")
    status = _status(hpa=hpa)
    assert (status.current_replicas, status.desired_replicas) == (3, 5)
    assert status.last_scale_time == datetime(2026, 3, 2, 9, 58, tzinfo=UTC)
    assert status.observed_generation == 3


def test_an_hpa_without_a_recommendation_reports_no_desired_count() -> None:
    status = _status(hpa=_hpa(currentReplicas=3, desiredReplicas=0))
    assert (status.current_replicas, status.desired_replicas) == (3, None)


def test_an_accepted_policy_is_active_as_its_hpa_says() -> None:
    hpa = _hpa(
        conditions=[
            {
                "type": "ScalingActive",
                "status": "False",
                "reason": "FailedGetResourceMetric",
                "message": "no metrics",
            }
        ]
    )
    status = _status(hpa=hpa)
    assert _condition(status, "Accepted") == ("True", "Accepted")
    assert _condition(status, "Active") == ("False", "FailedGetResourceMetric")
    assert _condition(status, "Paused") == ("False", "NotPaused")


def test_before_the_hpa_reports_activity_is_unknown() -> None:
    assert _condition(_status(), "Active") == ("Unknown", "Pending")


def test_a_refused_policy_reports_why_and_nothing_else() -> None:
    status = _status(acceptance=CONFLICT, replicas=None, hpa=None)
    assert _condition(status, "Accepted") == ("False", "Conflict")
    assert _condition(status, "Active") == ("False", "NotAccepted")
    assert _condition(status, "Paused") == ("False", "NotAccepted")
    assert status.effective_min_replicas is None
    assert status.current_replicas is None


def test_a_pause_names_its_reason_and_the_held_count() -> None:
    pause = Pause(PauseReason.RESTORE_IN_PROGRESS, "Restore r1 into shop.", restore="r1")
    status = _status(pause=pause, replicas=ReplicaRange(4, 4))
    assert _condition(status, "Paused") == ("True", "RestoreInProgress")
    paused = find(status.conditions, "Paused")
    assert paused is not None
    assert paused.message == "Restore r1 into shop. Replicas are held at 4."
    assert _condition(status, "Active") == ("False", "Paused")
    assert status.effective_min_replicas == 4


def test_an_open_window_is_reported_with_its_floor() -> None:
    until = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
    window = Window("office", NOW, until, 4)
    status = _status(replicas=ReplicaRange(4, 8, window))
    assert status.effective_min_replicas == 4
    assert status.active_schedule is not None
    assert (status.active_schedule.name, status.active_schedule.until) == ("office", until)


def test_conditions_keep_their_transition_time_while_they_hold() -> None:
    first = _status()
    later = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
    again = _status(policy=_policy(status_patch(first)["status"]), now=later)
    assert find(again.conditions, "Accepted") == find(first.conditions, "Accepted")


def test_the_patch_removes_what_the_status_no_longer_has() -> None:
    patch = status_patch(_status(acceptance=CONFLICT, replicas=None, hpa=None))["status"]
    assert patch["activeSchedule"] is None
    assert patch["effectiveMinReplicas"] is None
    assert patch["observedGeneration"] == 3


# -- events ------------------------------------------------------------------------------


def test_acceptance_is_announced_once() -> None:
    first = _status()
    assert announcements(ScalingPolicyStatus(), first) == [
        Announcement("Accepted", ACCEPTED.message)
    ]
    assert announcements(first, _status(policy=_policy(status_patch(first)["status"]))) == []


def test_a_refusal_is_a_warning() -> None:
    refused = _status(acceptance=CONFLICT, replicas=None, hpa=None)
    assert announcements(_status(), refused) == [
        Announcement("Conflict", CONFLICT.message, warning=True)
    ]


def test_pausing_and_resuming_are_announced() -> None:
    pause = Pause(PauseReason.SPEC, "spec.paused is true.")
    running = _status()
    paused = _status(policy=_policy(status_patch(running)["status"]), pause=pause)
    assert announcements(running, paused) == [
        Announcement("Paused", "spec.paused is true. Replicas are held at 2.")
    ]
    resumed = _status(policy=_policy(status_patch(paused)["status"]))
    assert announcements(paused, resumed) == [
        Announcement("Resumed", "Replicas follow the HPA again.")
    ]


def test_windows_opening_and_closing_are_announced() -> None:
    until = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)
    closed = _status()
    opened = _status(replicas=ReplicaRange(4, 8, Window("office", NOW, until, 4)))
    [started] = announcements(closed, opened)
    assert started.reason == "ScheduleStarted"
    assert "office raises the floor to 4 until 2026-03-02T17:00:00+00:00" in started.message
    assert announcements(opened, closed) == [
        Announcement("ScheduleEnded", "Schedule office's window closed.")
    ]
