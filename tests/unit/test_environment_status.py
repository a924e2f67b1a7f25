"""What the operator reports for an environment, computed from what it observed (no I/O)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dockyard.core.conditions import find, set_condition
from dockyard.core.durations import parse_duration
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.environment import Environment, EnvironmentPhase, FinalSnapshot
from dockyard.operator.environments import status as report
from dockyard.operator.outcomes import Outcome, backoff

CREATED = datetime(2026, 1, 1, tzinfo=UTC)
NOW = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
READY_DB = report.DatabaseReport(
    report.Verdict(ConditionStatus.TRUE, "Provisioned", "ok"), "shop-database", "env_db"
)
DOWN_DB = report.DatabaseReport(
    report.Verdict(ConditionStatus.FALSE, "ServerUnreachable", "cannot reach the server"),
    "shop-database",
    "env_db",
)


def _env(status: dict[str, Any] | None = None, generation: int = 1, **spec: Any) -> Environment:
    return Environment.model_validate(
        {
            "metadata": {
                "name": "shop",
                "namespace": "team-a",
                "uid": "uid-1",
                "generation": generation,
                "creationTimestamp": CREATED.isoformat(),
            },
            "spec": {"tier": "development", "image": "shop:1.0", **spec},
            "status": status or {},
        }
    )


def _deployment(
    *, ready: int, updated: int | None = None, generation: int = 1, observed: int = 1
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": observed,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": ready if updated is None else updated,
            "conditions": [{"type": "Available", "status": "True" if ready else "False"}],
        },
    }


# -- the workload ------------------------------------------------------------------------


def test_a_deployment_with_every_pod_ready_is_available() -> None:
    workload = report.WorkloadReport.from_deployment(_deployment(ready=2), desired=2)

    verdict = report.workload_verdict(workload, suspended=False)

    assert verdict == report.Verdict(ConditionStatus.TRUE, "ReplicasReady", "2/2 pods ready.")
    assert workload.replicas().model_dump() == {"desired": 2, "ready": 2, "available": 2}


def test_a_deployment_short_of_pods_is_not_available() -> None:
    workload = report.WorkloadReport.from_deployment(_deployment(ready=1, updated=2), desired=2)

    verdict = report.workload_verdict(workload, suspended=False)

    assert verdict.status is ConditionStatus.FALSE
    assert verdict.reason == "ReplicasNotReady"


def test_pods_not_yet_on_the_latest_template_are_a_rollout() -> None:
    workload = report.WorkloadReport.from_deployment(_deployment(ready=2, updated=1), desired=2)

    assert report.workload_verdict(workload, suspended=False).reason == "RolloutInProgress"


def test_counts_of_a_spec_the_controller_has_not_seen_are_a_rollout() -> None:
    stale = _deployment(ready=2, generation=3, observed=2)
    workload = report.WorkloadReport.from_deployment(stale, desired=2)

    assert report.workload_verdict(workload, suspended=False).reason == "RolloutInProgress"


def test_a_missing_deployment_has_no_pods() -> None:
    workload = report.WorkloadReport.from_deployment(None, desired=1)

    assert report.workload_verdict(workload, suspended=False).status is ConditionStatus.FALSE
    assert workload.replicas().model_dump() == {"desired": 1, "ready": 0, "available": 0}


def test_a_suspended_workload_is_scaled_to_zero() -> None:
    workload = report.WorkloadReport.from_deployment(_deployment(ready=0), desired=0)

    verdict = report.workload_verdict(workload, suspended=True)

    assert (verdict.status, verdict.reason) == (ConditionStatus.FALSE, "ScaledToZero")
    assert "suspended" in verdict.message


# -- phases ------------------------------------------------------------------------------

AVAILABLE = report.Verdict(ConditionStatus.TRUE, "ReplicasReady", "")
NOT_READY = report.Verdict(ConditionStatus.FALSE, "ReplicasNotReady", "")
ROLLING = report.Verdict(ConditionStatus.FALSE, "RolloutInProgress", "")


@pytest.mark.parametrize(
    ("previous", "failed", "suspended", "database_ready", "workload", "phase"),
    [
        (None, True, False, True, AVAILABLE, EnvironmentPhase.FAILED),
        (None, False, True, False, NOT_READY, EnvironmentPhase.SUSPENDED),
        (None, False, False, True, AVAILABLE, EnvironmentPhase.READY),
        (None, False, False, True, ROLLING, EnvironmentPhase.PROVISIONING),
        (None, False, False, False, AVAILABLE, EnvironmentPhase.PENDING),
        (EnvironmentPhase.READY, False, False, False, AVAILABLE, EnvironmentPhase.DEGRADED),
        (EnvironmentPhase.READY, False, False, True, NOT_READY, EnvironmentPhase.DEGRADED),
        (EnvironmentPhase.READY, False, False, True, ROLLING, EnvironmentPhase.PROVISIONING),
        (EnvironmentPhase.DEGRADED, False, False, True, AVAILABLE, EnvironmentPhase.READY),
        (EnvironmentPhase.SUSPENDED, False, False, True, ROLLING, EnvironmentPhase.PROVISIONING),
    ],
)
def test_phase_follows_what_was_observed(
    previous: EnvironmentPhase | None,
    failed: bool,
    suspended: bool,
    database_ready: bool,
    workload: report.Verdict,
    phase: EnvironmentPhase,
) -> None:
    assert (
        report.next_phase(
            previous=previous,
            failed=failed,
            suspended=suspended,
            database_ready=database_ready,
            workload=workload,
        )
        is phase
    )


# -- the whole status --------------------------------------------------------------------


def test_a_ready_environment_reports_every_condition_and_its_url() -> None:
    workload = report.WorkloadReport.from_deployment(_deployment(ready=1), desired=1)

    status = report.summarize(_env(generation=4), database=READY_DB, workload=workload, now=NOW)

    assert status.observed_generation == 4
    assert status.phase is EnvironmentPhase.READY
    assert {c.type: c.status for c in status.conditions} == {
        "DatabaseReady": ConditionStatus.TRUE,
        "WorkloadAvailable": ConditionStatus.TRUE,
        "Ready": ConditionStatus.TRUE,
    }
    assert all(c.observed_generation == 4 for c in status.conditions)
    assert status.url == "http://shop.team-a.svc:8080"
    assert status.database is not None
    assert status.database.model_dump() == {
        "secretName": "shop-database",
        "name": "env_db",
        "ready": True,
        "ensured": None,
    }


def test_a_database_outage_says_why_in_ready() -> None:
    workload = report.WorkloadReport.from_deployment(_deployment(ready=1), desired=1)

    status = report.summarize(_env(), database=DOWN_DB, workload=workload, now=NOW)

    assert status.phase is EnvironmentPhase.PENDING
    database = find(status.conditions, "DatabaseReady")
    ready = find(status.conditions, "Ready")
    assert database is not None
    assert ready is not None
    assert (database.reason, database.message) == ("ServerUnreachable", "cannot reach the server")
    assert (ready.status, ready.reason) == (ConditionStatus.FALSE, "DatabaseNotReady")


def test_an_environment_without_a_database_reports_it_disabled() -> None:
    workload = report.WorkloadReport.from_deployment(_deployment(ready=1), desired=1)

    status = report.summarize(
        _env(database={"enabled": False}), database=None, workload=workload, now=NOW
    )

    assert status.phase is EnvironmentPhase.READY
    assert status.database is None
    database = find(status.conditions, "DatabaseReady")
    assert database is not None
    assert database.reason == "Disabled"


def test_a_rejected_child_fails_the_environment_with_the_reason() -> None:
    failure = report.Verdict(ConditionStatus.FALSE, "ChildRejected", "Deployment is invalid")
    workload = report.WorkloadReport.from_deployment(None, desired=1)

    status = report.summarize(
        _env(), database=READY_DB, workload=workload, failure=failure, now=NOW
    )

    assert status.phase is EnvironmentPhase.FAILED
    ready = find(status.conditions, "Ready")
    assert ready is not None
    assert (ready.reason, ready.message) == ("ChildRejected", "Deployment is invalid")


def test_a_suspended_environment_is_suspended_and_not_ready() -> None:
    workload = report.WorkloadReport.from_deployment(_deployment(ready=0), desired=0)

    status = report.summarize(_env(suspend=True), database=READY_DB, workload=workload, now=NOW)

    assert status.phase is EnvironmentPhase.SUSPENDED
    ready = find(status.conditions, "Ready")
    assert ready is not None
    assert (ready.status, ready.reason) == (ConditionStatus.FALSE, "Suspended")
    assert status.replicas is not None
    assert status.replicas.desired == 0


def test_the_url_of_an_ingress_is_its_host_with_https_when_tls_is_set() -> None:
    plain = _env(ingress={"host": "shop.example.com"})
    tls = _env(ingress={"host": "shop.example.com", "tlsSecretName": "shop-tls"})
    workload = report.WorkloadReport.from_deployment(None, desired=1)

    assert report.summarize(plain, database=None, workload=workload).url == (
        "http://shop.example.com"
    )
    assert report.summarize(tls, database=None, workload=workload).url == (
        "https://shop.example.com"
    )


def test_a_host_not_admitted_is_a_condition_and_the_url_stays_in_the_cluster() -> None:
    env = _env(ingress={"host": "shop.example.com"})
    workload = report.WorkloadReport.from_deployment(None, desired=1)
    taken = report.Verdict(ConditionStatus.FALSE, "HostTaken", "Host shop.example.com is published")

    status = report.summarize(env, database=None, workload=workload, host=taken, now=NOW)

    admitted = find(status.conditions, "HostAdmitted")
    assert admitted is not None
    assert (admitted.status, admitted.reason) == (ConditionStatus.FALSE, "HostTaken")
    assert status.url == "http://shop.team-a.svc:8080"
    # The status keeps the verdict for the passes that only refresh it.
    stored = status.model_dump(by_alias=True, mode="json", exclude_none=True)
    kept = _env(status=stored, ingress={"host": "shop.example.com"})
    assert report.host_verdict(kept) == taken


def test_an_environment_without_a_host_has_no_host_condition() -> None:
    workload = report.WorkloadReport.from_deployment(None, desired=1)
    admitted = report.Verdict(ConditionStatus.TRUE, "Admitted", "Host shop.example.com is ours.")
    before = report.summarize(
        _env(ingress={"host": "shop.example.com"}), database=None, workload=workload, host=admitted
    )
    after = report.summarize(
        _env(status=before.model_dump(by_alias=True, mode="json", exclude_none=True)),
        database=None,
        workload=workload,
    )

    assert find(before.conditions, "HostAdmitted") is not None
    assert find(after.conditions, "HostAdmitted") is None
    assert report.host_verdict(_env()) is None


def test_a_development_ttl_sets_expires_at_from_the_creation_time() -> None:
    assert report.expires_at(_env(ttl="72h")) == CREATED + timedelta(hours=72)
    assert report.expires_at(_env()) is None


def test_an_unreadable_spec_fails_with_the_problem() -> None:
    previous = _env().status

    status = report.invalid_spec(previous, 2, "spec.replicas: Input should be a valid integer")

    assert status.phase is EnvironmentPhase.FAILED
    ready = find(status.conditions, "Ready")
    assert ready is not None
    assert ready.reason == "InvalidSpec"
    assert "spec.replicas" in ready.message


def test_the_status_patch_removes_what_the_status_no_longer_has() -> None:
    workload = report.WorkloadReport.from_deployment(None, desired=1)
    status = report.summarize(_env(database={"enabled": False}), database=None, workload=workload)

    body = report.status_patch(status)["status"]

    assert body["database"] is None
    assert body["expiresAt"] is None
    assert body["phase"] == "Provisioning"


def test_deleting_keeps_the_status_and_says_what_it_waits_for() -> None:
    verdict = report.Verdict(
        ConditionStatus.FALSE, "TakingFinalSnapshot", "Taking the final snapshot"
    )

    status = report.deleting(_env(status={"phase": "Ready", "url": "http://x"}), verdict=verdict)

    assert status.phase is EnvironmentPhase.DELETING
    assert status.url == "http://x"
    ready = find(status.conditions, "Ready")
    assert ready is not None
    assert ready.reason == "TakingFinalSnapshot"


def test_the_final_snapshot_made_is_recorded_and_kept_by_later_passes() -> None:
    verdict = report.Verdict(ConditionStatus.FALSE, "TakingFinalSnapshot", "Taking it")
    made = FinalSnapshot(name="shop-final-4f1c2a9e", uid="b-1")

    recorded = report.deleting(
        _env(status={"phase": "Ready"}), verdict=verdict, final_snapshot=made
    )
    later = report.deleting(_env(status=report.status_patch(recorded)["status"]), verdict=verdict)

    assert report.status_patch(recorded)["status"]["finalSnapshot"] == {
        "name": "shop-final-4f1c2a9e",
        "uid": "b-1",
    }
    assert later.final_snapshot == made


# -- durations, retries and conditions ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("72h", 259_200), ("1h30m", 5_400), ("1.5h", 5_400), ("45s", 45), ("5s", 5)],
)
def test_go_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "3 days", "72", "1d", "-5s", "5ms"])
def test_what_the_schema_refuses_does_not_parse(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_a_duration_beyond_any_range_is_refused_not_crashed_on() -> None:
    # Found by schemathesis: a RestoreDrill window of 704706852637651448.85m was a 500.
    with pytest.raises(ValueError, match="longer than any duration"):
        parse_duration("704706852637651448.854704484526m")


def test_retries_back_off_and_level_off() -> None:
    assert [backoff(attempt) for attempt in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]


def test_an_unfinished_pass_raises_what_kopf_retries() -> None:
    import kopf

    with pytest.raises(kopf.TemporaryError) as temporary:
        Outcome.again("database not ready").raise_if_unfinished(attempt=2)
    with pytest.raises(kopf.PermanentError):
        Outcome.failed("rejected").raise_if_unfinished(attempt=0)

    assert temporary.value.delay == 20
    Outcome.done().raise_if_unfinished(attempt=0)


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


def test_the_ensured_digest_is_kept_only_while_the_database_is_ready() -> None:
    workload = report.WorkloadReport.from_deployment(_deployment(ready=1), desired=1)
    ensured = dataclasses.replace(READY_DB, ensured="a" * 32)
    lost = dataclasses.replace(DOWN_DB, ensured="a" * 32)

    ready = report.summarize(_env(generation=4), database=ensured, workload=workload, now=NOW)
    down = report.summarize(_env(generation=4), database=lost, workload=workload, now=NOW)

    assert ready.database is not None
    assert ready.database.ensured == "a" * 32
    # A database that is not ready has to be ensured again once the server answers.
    assert down.database is not None
    assert down.database.ensured is None


def test_the_database_report_is_read_back_from_the_status_it_was_written_to() -> None:
    workload = report.WorkloadReport.from_deployment(_deployment(ready=1), desired=1)
    ensured = dataclasses.replace(READY_DB, ensured="b" * 32)
    written = report.summarize(_env(generation=2), database=ensured, workload=workload, now=NOW)
    env = _env(status=report.status_patch(written)["status"], generation=2)

    assert report.database_report(env) == ensured
    # Summarized again from what it reads back, nothing changes: no write is due.
    again = report.summarize(env, database=report.database_report(env), workload=workload, now=NOW)
    assert again == env.status


def test_a_status_without_a_database_verdict_cannot_stand_in_for_the_database_step() -> None:
    with pytest.raises(LookupError):
        report.database_report(_env())
    assert report.database_report(_env(database={"enabled": False})) is None


def test_a_database_just_disabled_needs_the_step_to_lock_its_role_out() -> None:
    """The status still names the database: the quick pass may not drop it from the
    status, or no pass would lock the role out (provisioning.DatabaseProvisioner)."""
    workload = report.WorkloadReport.from_deployment(_deployment(ready=1), desired=1)
    written = report.summarize(_env(generation=2), database=READY_DB, workload=workload, now=NOW)
    disabled = _env(
        status=report.status_patch(written)["status"], generation=3, database={"enabled": False}
    )

    with pytest.raises(LookupError):
        report.database_report(disabled)
