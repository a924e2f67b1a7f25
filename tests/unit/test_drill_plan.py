"""The pure parts of restore drills: when a run is due, which backup it restores, how its
checks are judged, how the history is bounded, and which scratch databases go when."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from dockyard.core.metrics import DrillMetrics
from dockyard.core.models.backup import Backup, BackupPhase
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.drill_runs import (
    FAILED_CHECKS_MAX,
    DrillCurrentRun,
    DrillResult,
    DrillRun,
    FailedCheck,
)
from dockyard.core.models.environment import Environment
from dockyard.core.models.restore_drill import (
    DrillBackupSelection,
    DrillObjectives,
    RestoreDrill,
    RestoreDrillStatus,
    SqlCheck,
)
from dockyard.core.settings import Settings
from dockyard.operator.database import staging_database_name
from dockyard.operator.drills import checks as drill_checks
from dockyard.operator.drills.checks import check_query, run_sql_checks
from dockyard.operator.drills.judging import (
    judge_run,
    judge_sql,
    passing_condition,
    restore_failure,
    row_count_failures,
)
from dockyard.operator.drills.plan import choose_backup, plan_tick
from dockyard.operator.drills.running import same_backup
from dockyard.operator.drills.scratch import (
    expired_scratch,
    recorded_scratch,
    scratch_database,
    without_scratch,
)
from dockyard.operator.drills.verification import verdict
from dockyard.operator.environments.defaults import default_drill, wants_default_drill
from dockyard.operator.runs.context import KeyUnavailable
from dockyard.operator.runs.inline import RunDeadlineExceeded
from dockyard.operator.runs.restoring import KeysGone, ManifestMismatch, RowCountCheck
from dockyard.operator.runs.runner_jobs import ArtifactRejected, RunnerReported
from dockyard.runner import (
    BackupError,
    ChecksumMismatch,
    DatabaseError,
    RestoreFailed,
    SpoolFailed,
    StorageError,
    WrongKey,
)
from tests.unit.test_restore_plan import make_backup

NOW = datetime(2025, 3, 10, 12, 0, 30, tzinfo=UTC)
UID = "0f0e0d0c-0000-4000-8000-000000000001"
STORAGE = {"filesystem": {"path": "/var/lib/dockyard/backups"}}
ENCRYPTION = {"keySecretRef": {"name": "backup-key", "key": "key"}}


def _drill(schedule: str = "0 * * * *", **spec: Any) -> RestoreDrill:
    status = spec.pop("status", {})
    annotations = spec.pop("annotations", {})
    generation = spec.pop("generation", 1)
    return RestoreDrill.model_validate(
        {
            "metadata": {
                "name": "weekly",
                "namespace": "team",
                "uid": UID,
                "generation": generation,
                "annotations": annotations,
            },
            "spec": {"environmentRef": {"name": "shop"}, "schedule": schedule, **spec},
            "status": status,
        }
    )


def _backup(
    name: str,
    completed: datetime | None,
    phase: BackupPhase = BackupPhase.COMPLETED,
    environment: str = "shop",
) -> Backup:
    return Backup.model_validate(
        {
            "metadata": {"name": name, "namespace": "team", "uid": f"uid-{name}"},
            "spec": {
                "environmentRef": {"name": environment},
                "storage": STORAGE,
                "encryption": ENCRYPTION,
            },
            "status": {
                "phase": phase.value,
                "completedAt": completed.isoformat() if completed else None,
                "sha256": "ab" * 32,
                "attempts": 1,
            },
        }
    )


def _run(
    started: datetime, scratch: str | None, result: DrillResult = DrillResult.PASSED
) -> DrillRun:
    return DrillRun(
        backup="nightly-1",
        started_at=started,
        finished_at=started + timedelta(minutes=1),
        restore_seconds=12.5,
        backup_age_seconds=3600,
        result=result,
        scratch_database=scratch,
    )


def _condition(status: RestoreDrillStatus, type: str) -> tuple[str, str]:
    condition = next(c for c in status.conditions if c.type == type)
    return condition.status.value, condition.reason


# -- when a run is due ----------------------------------------------------------------------


def test_a_new_drill_is_planned_from_now_without_running() -> None:
    plan = plan_tick(_drill(), NOW)

    assert not plan.start
    assert plan.status.next_run_time == datetime(2025, 3, 10, 13, 0, tzinfo=UTC)
    assert plan.status.observed_generation == 1
    assert _condition(plan.status, "Ready") == ("True", "Scheduled")


def test_a_run_is_due_once_the_planned_time_passed_and_the_next_is_planned() -> None:
    planned = {"observedGeneration": 1, "nextRunTime": "2025-03-10T12:00:00Z"}

    plan = plan_tick(_drill(status=planned), NOW)

    assert plan.start
    assert not plan.run_now
    assert plan.status.next_run_time == datetime(2025, 3, 10, 13, 0, tzinfo=UTC)


def test_a_changed_spec_is_planned_again_rather_than_run() -> None:
    planned = {"observedGeneration": 1, "nextRunTime": "2025-03-10T12:00:00Z"}

    plan = plan_tick(_drill("30 * * * *", status=planned, generation=2), NOW)

    assert not plan.start
    assert plan.status.next_run_time == datetime(2025, 3, 10, 12, 30, tzinfo=UTC)


def test_an_impossible_schedule_makes_ready_false_and_runs_nothing() -> None:
    plan = plan_tick(_drill("0 0 30 2 *", annotations={"dockyard.io/run-now": "1"}), NOW)

    assert not plan.start
    assert not plan.run_now
    assert plan.invalid is not None
    assert plan.status.next_run_time is None
    assert _condition(plan.status, "Ready") == ("False", "InvalidSchedule")
    assert plan.status.message == plan.invalid


def test_a_schedule_with_no_run_within_9_years_makes_ready_false_and_runs_nothing() -> None:
    # April 1st on a Wednesday: 2026, then 2037. The run planned for 2026 is due.
    planned = {"observedGeneration": 1, "nextRunTime": "2026-04-01T00:00:00Z"}
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)

    plan = plan_tick(_drill("0 0 */30 4 3", status=planned), now)

    assert not plan.start
    assert plan.invalid == "0 0 */30 4 3 has no run within 9 years"
    assert plan.status.next_run_time is None
    assert _condition(plan.status, "Ready") == ("False", "InvalidSchedule")
    assert plan.status.message == plan.invalid


def test_suspend_stops_cron_runs_but_not_run_now() -> None:
    planned = {"observedGeneration": 1, "nextRunTime": "2025-03-10T12:00:00Z"}

    suspended = plan_tick(_drill(suspend=True, status=planned), NOW)
    asked = plan_tick(
        _drill(suspend=True, status=planned, annotations={"dockyard.io/run-now": "x"}), NOW
    )

    assert not suspended.start
    assert suspended.status.next_run_time is None
    assert _condition(suspended.status, "Ready") == ("True", "Suspended")
    assert asked.start
    assert asked.run_now


def test_a_cron_time_during_a_run_is_skipped_and_run_now_waits_for_it() -> None:
    busy = {
        "observedGeneration": 1,
        "nextRunTime": "2025-03-10T12:00:00Z",
        "currentRun": {"backup": "nightly-1", "startedAt": "2025-03-10T11:59:00Z"},
    }

    plan = plan_tick(_drill(status=busy, annotations={"dockyard.io/run-now": "1"}), NOW)

    assert not plan.start
    assert not plan.run_now  # the annotation stays until its own run starts
    assert plan.skipped is not None
    assert "still in progress" in plan.skipped
    assert plan.status.message is not None
    assert plan.status.message.startswith("Run in progress")


# -- which backup ---------------------------------------------------------------------------


def test_latest_takes_the_newest_completed_backup_of_the_environment() -> None:
    backups = [
        _backup("old", NOW - timedelta(days=2)),
        _backup("newest", NOW - timedelta(hours=1)),
        _backup("running", None, BackupPhase.RUNNING),
        _backup("failed", NOW - timedelta(minutes=5), BackupPhase.FAILED),
        _backup("other-env", NOW - timedelta(minutes=1), environment="blog"),
    ]

    chosen = choose_backup(backups, "shop", DrillBackupSelection(), NOW)

    assert chosen is not None
    assert chosen.metadata.name == "newest"


def test_random_within_window_chooses_among_the_backups_inside_it() -> None:
    backups = [
        _backup("too-old", NOW - timedelta(days=8)),
        _backup("last-week", NOW - timedelta(days=6)),
        _backup("yesterday", NOW - timedelta(days=1)),
    ]
    offered: list[str] = []

    def first(candidates: Sequence[Backup]) -> Backup:
        offered.extend(b.metadata.name or "" for b in candidates)
        return candidates[0]

    selection = DrillBackupSelection(strategy="RandomWithinWindow", window="168h")
    chosen = choose_backup(backups, "shop", selection, NOW, choose=first)

    assert offered == ["last-week", "yesterday"]
    assert chosen is not None
    assert chosen.metadata.name == "last-week"


def test_no_completed_backup_means_nothing_to_drill() -> None:
    selection = DrillBackupSelection(strategy="RandomWithinWindow", window="1h")

    assert (
        choose_backup(
            [_backup("running", None, BackupPhase.RUNNING)], "shop", DrillBackupSelection(), NOW
        )
        is None
    )
    assert choose_backup([_backup("old", NOW - timedelta(days=1))], "shop", selection, NOW) is None


# -- judging --------------------------------------------------------------------------------


def test_a_sql_check_compares_the_text_of_the_first_value() -> None:
    check = SqlCheck(name="no-negative-totals", query="SELECT count(*) FROM orders", expect="0")
    empty = SqlCheck(name="nothing", query="SELECT NULL", expect="")

    assert judge_sql(check, "0") is None
    assert judge_sql(empty, None) is None
    failure = judge_sql(check, "41")
    assert failure == FailedCheck(check="sql/no-negative-totals", reason="expected 0, got 41")


def test_each_table_whose_rows_differ_fails_on_its_own() -> None:
    counts = RowCountCheck(
        expected={"public.orders": 120000, "public.customers": 30000, "audit.log": 5},
        found={"public.orders": 119999, "public.customers": 30000, "public.extra": 1},
    )

    failures = row_count_failures(counts)

    assert [f.check for f in failures] == [
        "rowCount/audit.log",
        "rowCount/public.extra",
        "rowCount/public.orders",
    ]
    assert failures[2].reason == "expected 120000 rows (the manifest), restored 119999"


def test_a_run_passes_only_when_no_check_and_no_objective_failed() -> None:
    common: dict[str, Any] = {
        "backup": "nightly-1",
        "backup_size": 1024,
        "started_at": NOW,
        "finished_at": NOW + timedelta(seconds=30),
        "scratch_database": "dkd_0f0e0d0c00004000_1",
    }
    objectives = DrillObjectives(rto_seconds=10, rpo_seconds=3600)

    passed = judge_run(
        restore_seconds=9.5, backup_age_seconds=60, objectives=objectives, failures=[], **common
    )
    missed = judge_run(
        restore_seconds=12.0, backup_age_seconds=7200, objectives=objectives, failures=[], **common
    )

    assert passed.result is DrillResult.PASSED
    assert passed.failed_checks == []
    assert missed.result is DrillResult.FAILED
    assert [c.check for c in missed.failed_checks] == ["rto", "rpo"]
    assert missed.failed_checks[0].reason == "restore took 12.0 s, objective 10 s"


def test_a_failed_restore_is_judged_without_an_rto_and_reasons_are_bounded() -> None:
    objectives = DrillObjectives(rto_seconds=1)
    many = [FailedCheck(check=f"sql/c{i}", reason="x") for i in range(FAILED_CHECKS_MAX + 5)]

    run = judge_run(
        backup="nightly-1",
        backup_size=None,
        started_at=NOW,
        finished_at=NOW,
        restore_seconds=None,
        backup_age_seconds=10,
        objectives=objectives,
        failures=[FailedCheck(check="restore", reason="checksum mismatch: ..."), *many],
        scratch_database=None,
    )

    assert run.result is DrillResult.FAILED
    assert run.failed_checks[0].check == "restore"
    assert "rto" not in {c.check for c in run.failed_checks}
    assert len(run.failed_checks) == FAILED_CHECKS_MAX


def test_passing_says_which_checks_failed() -> None:
    run = _run(NOW, None, DrillResult.FAILED).model_copy(
        update={"failed_checks": [FailedCheck(check="sql/totals", reason="expected 0, got 3")]}
    )

    status = passing_condition(RestoreDrillStatus(), run, 1, NOW)

    [condition] = status.conditions
    assert (condition.status.value, condition.reason) == ("False", "Failed")
    assert "sql/totals: expected 0, got 3" in condition.message


def test_the_verdict_on_the_backup_ignores_a_run_that_only_missed_an_objective() -> None:
    rpo = FailedCheck(check="rpo", reason="backup was 7200 s old, objective 3600 s")
    sql = FailedCheck(check="sql/totals", reason="expected 0, got 3")
    failed_run = _run(NOW, None, DrillResult.FAILED)

    assert verdict("weekly", _run(NOW, None)) == (
        ConditionStatus.TRUE,
        "DrillPassed",
        "RestoreDrill weekly passed",
    )
    assert verdict("weekly", failed_run.model_copy(update={"failed_checks": [rpo]})) is None
    judged = verdict("weekly", failed_run.model_copy(update={"failed_checks": [rpo, sql]}))
    assert judged == (
        ConditionStatus.FALSE,
        "DrillFailed",
        "RestoreDrill weekly failed: sql/totals: expected 0, got 3",
    )


@pytest.mark.parametrize(
    ("error", "check"),
    [
        (ChecksumMismatch("ab", "cd"), "restore"),
        (WrongKey("authentication failed"), "restore"),
        (ArtifactRejected("ArtifactCorrupt", "a frame failed"), "restore"),
        (RunnerReported("ArtifactNotFound", "no artifact shop/b1.dkbk"), "restore"),
        (RestoreFailed("pg_restore", "role alice does not exist"), "restore"),
        (ManifestMismatch("public.orders: expected 42 rows, got 41"), "restore"),
        (DatabaseError("database server unreachable"), "run"),
        (SpoolFailed("the restore's spool could not be written"), "run"),
        (StorageError("S3 answered 503"), "run"),
        (RunnerReported("DatabaseUnavailable", "scratch server down"), "run"),
        (RunDeadlineExceeded("the run outlived its deadline"), "run"),
        (KeysGone("Secret backup-key has no key 'key', and its store offers none"), "restore"),
        (KeyUnavailable("Secret backup-key has no key 'key'"), "run"),  # a Job's own key
        (RestoreFailed("pg_restore", "pg_restore was killed by signal 11"), "restore"),
        (RestoreFailed("pg_restore", "pg_restore was killed by signal 9"), "run"),
        (
            RestoreFailed(
                "pg_restore",
                "pg_restore exited with status 1: pg_restore: error: could not execute "
                "query: server closed the connection unexpectedly",
            ),
            "run",
        ),
        (
            RestoreFailed(
                "pg_restore",
                "pg_restore exited with status 1: could not extend file: No space left on device",
            ),
            "run",
        ),
    ],
)
def test_a_restore_that_could_not_be_carried_out_says_nothing_about_the_backup(
    error: BackupError, check: str
) -> None:
    failure = restore_failure(error)
    run = _run(NOW, None, DrillResult.FAILED).model_copy(update={"failed_checks": [failure]})

    assert failure.check == check
    judged = verdict("weekly", run)
    # The run fails either way; only the backup's own fault takes its verification away.
    assert (judged is None) == (check == "run")
    if judged is not None:
        assert judged[:2] == (ConditionStatus.FALSE, "DrillFailed")


# -- history and scratch databases ----------------------------------------------------------


def test_the_history_keeps_the_newest_runs_up_to_the_limit() -> None:
    status = RestoreDrillStatus()
    for hour in range(4):
        status = status.with_run(_run(NOW + timedelta(hours=hour), None), history_limit=3)

    assert [run.started_at.hour for run in status.history] == [15, 14, 13]
    assert status.last_run is not None
    assert status.last_run.started_at.hour == 15
    assert status.current_run is None


def test_scratch_databases_expire_after_the_keep_window() -> None:
    old = _run(NOW - timedelta(hours=3), "dkd_0f0e0d0c00004000_1")
    recent = _run(NOW - timedelta(minutes=10), "dkd_0f0e0d0c00004000_2")
    status = RestoreDrillStatus().with_run(old, 10).with_run(recent, 10)

    expired = expired_scratch(status, "1h", NOW)
    after = without_scratch(status, expired)

    assert expired == {"dkd_0f0e0d0c00004000_1"}
    assert recorded_scratch(after) == {"dkd_0f0e0d0c00004000_2"}
    assert after.last_run is not None
    assert after.last_run.scratch_database == "dkd_0f0e0d0c00004000_2"


def test_a_new_run_takes_the_first_scratch_name_no_kept_database_uses() -> None:
    taken = {staging_database_name("d", UID, 1), staging_database_name("d", UID, 3)}

    assert scratch_database(UID, taken) == staging_database_name("d", UID, 2)
    assert scratch_database(UID, ()) == "dkd_0f0e0d0c00004000_1"


def test_a_check_query_is_wrapped_to_give_its_first_value_as_text() -> None:
    query = check_query("SELECT count(*) FROM orders -- every order\n;; ")

    assert query.startswith("SELECT q.dockyard_check_value::text FROM (\n")
    assert "-- every order\n)" in query
    assert query.endswith("LIMIT 1")
    assert ";" not in query


# -- metrics and the default drill ----------------------------------------------------------


def test_metrics_count_runs_until_the_drill_goes() -> None:
    metrics = DrillMetrics()
    labels = {"namespace": "team", "drill": "weekly"}
    for result in (DrillResult.PASSED, DrillResult.FAILED, DrillResult.PASSED):
        metrics.observe(namespace="team", drill="weekly", result=result)

    sample = metrics.registry.get_sample_value
    assert sample("dockyard_drill_runs_total", {**labels, "result": "Passed"}) == 2
    assert sample("dockyard_drill_runs_total", {**labels, "result": "Failed"}) == 1
    metrics.forget(namespace="team", drill="weekly")
    assert sample("dockyard_drill_runs_total", {**labels, "result": "Passed"}) is None


@pytest.mark.parametrize(
    ("tier", "annotations", "wanted"),
    [
        ("production", {}, True),
        ("production", {"dockyard.io/default-drill": "false"}, False),
        ("development", {}, False),
    ],
)
def test_production_environments_want_a_default_drill_unless_they_opt_out(
    tier: str, annotations: dict[str, str], wanted: bool
) -> None:
    env = Environment.model_validate(
        {
            "metadata": {
                "name": "shop",
                "namespace": "team",
                "uid": UID,
                "annotations": annotations,
            },
            "spec": {
                "tier": tier,
                "image": "registry.example.com/shop:1.0.0",
                "replicas": 2,
            },
        }
    )

    assert wants_default_drill(env) is wanted
    manifest = default_drill(env, Settings(default_drill_schedule="15 3 * * *"))
    assert manifest["metadata"]["name"] == "shop-drill"
    assert manifest["spec"] == {"environmentRef": {"name": "shop"}, "schedule": "15 3 * * *"}
    assert manifest["metadata"]["ownerReferences"][0]["kind"] == "Environment"
    RestoreDrill.model_validate(manifest)


def test_a_run_follows_only_the_backup_it_started_with() -> None:
    """A Backup made under the run's backup's name meanwhile was never restored: the run
    does not judge (nor mark verified) it."""
    started = make_backup("nightly")
    current = DrillCurrentRun(
        backup="nightly", backup_uid=started.metadata.uid, started_at=datetime.now(UTC)
    )
    assert same_backup(started, current) is started
    replaced = started.model_copy(deep=True)
    replaced.metadata.uid = "another-uid"
    assert same_backup(replaced, current) is None
    assert same_backup(None, current) is None
    # A run recorded before the uid was: the name is all there is to go by.
    legacy = current.model_copy(update={"backup_uid": None})
    assert same_backup(replaced, legacy) is replaced


async def test_sql_checks_that_could_not_connect_are_one_run_failure_not_the_backups() -> None:
    # A port nothing listens on: the connection is refused, as with the server down.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    checks = [
        SqlCheck.model_validate({"name": name, "query": "SELECT 1", "expect": "1"})
        for name in ("orders", "totals")
    ]

    failures = await run_sql_checks(f"postgresql://app:pw@127.0.0.1:{port}/shop", checks)

    [failure] = failures
    assert failure.check == "run"
    assert failure.reason.startswith("SQL checks orders, totals not run:")
    assert "pw" not in failure.reason
    run = _run(NOW, None, DrillResult.FAILED).model_copy(update={"failed_checks": failures})
    assert verdict("weekly", run) is None


@pytest.mark.parametrize(
    ("value", "expect", "passes"),
    [
        ("x" * 300, "x" * 300, True),  # longer than status shows, and equal
        ("x" * 300, "x" * 199 + "…", False),  # only its shown form
        ("x" * 300, "x" * 299, False),
    ],
    ids=["long-and-equal", "clipped-form", "one-short"],
)
async def test_a_sql_check_compares_the_whole_value_and_records_it_cut(
    monkeypatch: pytest.MonkeyPatch, value: str, expect: str, passes: bool
) -> None:
    # The value as the query gave it: what is compared is the whole of it, whatever
    # part of it a failure records.
    @asynccontextmanager
    async def connect(dsn: str, **_: Any) -> AsyncIterator[object]:
        yield object()

    async def first_value(conn: object, query: str, timeout_ms: int) -> str:
        return value

    monkeypatch.setattr(drill_checks, "connect", connect)
    monkeypatch.setattr(drill_checks, "_first_value", first_value)
    check = SqlCheck(name="long", query="SELECT repeat('x', 300)", expect=expect)

    failures = await run_sql_checks("postgresql://app@db/shop", [check])

    assert [f.check for f in failures] == ([] if passes else ["sql/long"])
    # What status keeps of a failure is cut: expected and got, 200 characters each.
    assert all(len(f.reason) < 450 for f in failures)
