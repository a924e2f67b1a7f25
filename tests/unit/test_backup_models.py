"""The Backup, BackupSchedule, Restore and RestoreDrill models: what they accept, what
they refuse (with the API server's messages), and the CRDs generated from them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from dockyard.core import crds, cron
from dockyard.core.models.backup import Backup, BackupMethod, BackupPhase
from dockyard.core.models.backup_schedule import (
    DEFAULT_RETENTION,
    BackupSchedule,
    ConcurrencyPolicy,
)
from dockyard.core.models.common import CustomResource
from dockyard.core.models.drill_runs import DrillResult, DrillRun
from dockyard.core.models.restore import Restore, RestorePhase, SourceSelection
from dockyard.core.models.restore_drill import (
    BackupSelectionStrategy,
    DrillObjectives,
    RestoreDrill,
    RestoreDrillStatus,
)
from dockyard.core.models.scheduling import check_schedule_shape

FILESYSTEM = {"filesystem": {"path": "/var/lib/dockyard/backups"}}
S3 = {
    "s3": {
        "bucket": "shop-backups",
        "prefix": "prod/shop",
        "endpoint": "https://minio.storage.svc:9000",
        "region": "eu-central-1",
        "credentialsSecretRef": {"name": "backup-s3"},
    }
}
ENCRYPTION = {"keySecretRef": {"name": "backup-key", "key": "key"}}


def backup(**spec: Any) -> Backup:
    body = {
        "environmentRef": {"name": "shop"},
        "storage": FILESYSTEM,
        "encryption": ENCRYPTION,
        **spec,
    }
    return Backup.model_validate({"metadata": {"name": "b"}, "spec": body})


def schedule(**spec: Any) -> BackupSchedule:
    body = {
        "environmentRef": {"name": "shop"},
        "schedule": "0 3 * * *",
        "template": {"storage": FILESYSTEM, "encryption": ENCRYPTION},
        **spec,
    }
    return BackupSchedule.model_validate({"spec": body})


def restore(**spec: Any) -> Restore:
    body = {"source": {"backupRef": {"name": "b"}}, **spec}
    return Restore.model_validate({"spec": body})


def drill(**spec: Any) -> RestoreDrill:
    body = {"environmentRef": {"name": "shop"}, "schedule": "0 4 * * *", **spec}
    return RestoreDrill.model_validate({"spec": body})


def refusal(error: pytest.ExceptionInfo[ValidationError]) -> str:
    return "\n".join(str(e["msg"]) for e in error.value.errors())


# --- Backup ------------------------------------------------------------------------------------


def test_a_backup_needs_only_environment_storage_and_encryption() -> None:
    parsed = backup()

    assert parsed.spec.method == BackupMethod.LOGICAL
    assert parsed.spec.ttl is None
    assert parsed.status.phase is None
    assert parsed.status.attempts == 0


def test_s3_storage_takes_bucket_prefix_endpoint_region_and_credentials() -> None:
    s3 = backup(storage=S3).spec.storage.s3

    assert s3 is not None
    assert (s3.bucket, s3.prefix, s3.region) == ("shop-backups", "prod/shop", "eu-central-1")
    assert s3.credentials_secret_ref is not None
    assert s3.credentials_secret_ref.name == "backup-s3"


@pytest.mark.parametrize(
    "storage",
    [
        {},
        {**FILESYSTEM, **S3},
    ],
    ids=["neither", "both"],
)
def test_storage_is_exactly_one_location(storage: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as error:
        backup(storage=storage)

    assert "exactly one of filesystem and s3 must be set" in refusal(error)


@pytest.mark.parametrize(
    ("storage", "field"),
    [
        ({"filesystem": {"path": "backups"}}, "path"),
        ({"filesystem": {"path": "//double"}}, "path"),
        ({"s3": {"bucket": "Shop_Backups"}}, "bucket"),
        ({"s3": {"bucket": "b" * 64}}, "bucket"),
        ({"s3": {"bucket": "shop", "prefix": "/absolute"}}, "prefix"),
        ({"s3": {"bucket": "shop", "prefix": "team-a/../team-b"}}, "prefix"),
        ({"s3": {"bucket": "shop", "prefix": "./x"}}, "prefix"),
        ({"s3": {"bucket": "shop", "endpoint": "minio:9000"}}, "endpoint"),
    ],
)
def test_bad_storage_locations_are_refused(storage: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        backup(storage=storage)

    assert any(field in map(str, e["loc"]) for e in error.value.errors())


@pytest.mark.parametrize(
    "path",
    ["/usr", "/usr/local/bin", "/opt/dockyard/", "/tmp", "/etc", "/var", "/var/run/x"],  # noqa: S108
)
def test_a_claim_over_the_runners_own_files_is_known_but_still_read(path: str) -> None:
    # A tenant's volume there would replace the runner's interpreter, key or scratch
    # space: the API server refuses it (CEL), the Job builder refuses objects made before.
    stored = backup(storage={"filesystem": {"path": path, "claimName": "backups"}})

    assert stored.spec.storage is not None
    assert stored.spec.storage.filesystem is not None
    assert stored.spec.storage.filesystem.covers_the_runner()


@pytest.mark.parametrize("path", ["/backups", "/var/lib/backups", "/mnt/usr", "/srv/tmp", "/optx"])
def test_a_claim_may_be_mounted_on_a_directory_of_its_own(path: str) -> None:
    location = backup(storage={"filesystem": {"path": path, "claimName": "backups"}})

    assert location.spec.storage is not None
    assert location.spec.storage.filesystem is not None
    assert not location.spec.storage.filesystem.covers_the_runner()
    # Without a claim nothing is mounted: the path is checked against the backup root.
    unclaimed = backup(storage={"filesystem": {"path": "/usr/x"}}).spec.storage
    assert unclaimed is not None
    assert unclaimed.filesystem is not None
    assert not unclaimed.filesystem.covers_the_runner()


@pytest.mark.parametrize("path", ["/backups/../etc", "/backups/./x", "/.."])
def test_dot_segments_in_a_path_are_refused(path: str) -> None:
    with pytest.raises(ValidationError) as error:
        backup(storage={"filesystem": {"path": path}})

    assert "path must not contain . or .. segments" in refusal(error)


def test_a_backup_naming_only_its_environment_is_complete() -> None:
    # Storage and encryption come from a BackupStore (docs/backups.md).
    bare = Backup.model_validate({"spec": {"environmentRef": {"name": "shop"}}})

    assert (bare.spec.storage, bare.spec.encryption, bare.spec.store_ref) == (None, None, None)


@pytest.mark.parametrize("ttl", ["720h", "1h30m", "45s"])
def test_ttl_is_a_go_duration(ttl: str) -> None:
    assert backup(ttl=ttl).spec.ttl == ttl


def test_a_zero_ttl_is_refused_with_the_api_servers_message() -> None:
    with pytest.raises(ValidationError) as error:
        backup(ttl="0s")

    assert "ttl must be positive" in refusal(error)


@pytest.mark.parametrize("ttl", ["7d", "P30D", "-1h", ""])
def test_a_ttl_that_is_not_a_go_duration_is_refused(ttl: str) -> None:
    with pytest.raises(ValidationError):
        backup(ttl=ttl)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        backup(methd="Logical")


def test_backup_status_round_trips_with_wire_names() -> None:
    status = {
        "phase": "Completed",
        "sha256": "a" * 64,
        "size": 1024,
        "keyId": "k1",
        "location": "file:///var/lib/dockyard/backups/ns/b/artifact",
        "manifest": {"tables": [{"name": "public.orders", "rows": 100000}]},
        "verified": {"drill": "nightly", "at": "2024-01-01T04:00:00Z"},
        "attempts": 1,
    }
    parsed = Backup.model_validate({"spec": backup().spec.model_dump(), "status": status}).status

    assert parsed.phase == BackupPhase.COMPLETED
    assert parsed.phase.is_done
    assert parsed.manifest is not None
    assert parsed.manifest.tables[0].rows == 100000
    dumped = parsed.model_dump(mode="json", exclude_none=True)
    assert dumped["keyId"] == "k1"
    assert dumped["verified"] == {"drill": "nightly", "at": "2024-01-01T04:00:00Z"}


def test_a_sha256_must_be_64_lowercase_hex_digits() -> None:
    with pytest.raises(ValidationError):
        Backup.model_validate({"spec": backup().spec.model_dump(), "status": {"sha256": "ABC"}})


# --- BackupSchedule ----------------------------------------------------------------------------


def test_a_schedule_defaults_to_utc_forbid_and_gfs_retention() -> None:
    spec = schedule().spec

    assert spec.time_zone == "UTC"
    assert spec.concurrency_policy == ConcurrencyPolicy.FORBID
    assert spec.suspend is False
    assert spec.retention == DEFAULT_RETENTION
    assert (spec.retention.keep_last, spec.retention.keep_daily) == (7, 7)
    assert (spec.retention.keep_weekly, spec.retention.keep_monthly) == (4, 6)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "0 0 3 * * *",
            "expected 5 fields (minute hour day-of-month month day-of-week), got 6: 0 0 3 * * *",
        ),
        ("0 3 * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("@reboot", "@reboot is not a supported macro"),
        ("61 3 * * *", "minute (field 1) 61 is invalid: expected * or */n, or a comma-separated"),
        ("0 3 ? * MON", "day-of-month (field 3) ? is invalid"),
        ("0 3 * * MON#1", "day-of-week (field 5) MON#1 is invalid"),
        ("0 3 L * *", "day-of-month (field 3) L is invalid"),
        ("0 3 * * */0", "day-of-week (field 5) */0 is invalid"),
    ],
)
def test_a_schedule_that_cel_can_refuse_is_refused_with_its_message(
    expression: str, message: str
) -> None:
    with pytest.raises(ValidationError) as error:
        schedule(schedule=expression)

    assert message in refusal(error)


def test_tabs_and_new_lines_are_not_field_separators() -> None:
    with pytest.raises(ValidationError):
        schedule(schedule="0\t3 * * *")


@pytest.mark.parametrize(
    "expression", ["10-5 * * * *", "0 0 * * SAT-SUN", "0 0 31 4 *", "*/60 * * * *"]
)
def test_what_cel_cannot_check_passes_the_model_and_is_left_to_the_parser(
    expression: str,
) -> None:
    # The operator must be able to parse the object to report the problem in a condition.
    parsed = schedule(schedule=expression)

    with pytest.raises(cron.CronError):
        cron.parse(parsed.spec.schedule)


SHAPE_ACCEPTED = [
    "*/15 * * * *",
    "0 9-17/2 * * 1-5",
    "0 22-23,0-2 * * *",
    "0 0 1,15 * *",
    "0 0 * JAN,jul *",
    "0 0 * mar-MAY/2 SUN",
    "0 0 * * 7",
    "0 0 29 2 *",
    "  0  4 * * 1 ",
    "@daily",
    "@hourly",
]


@pytest.mark.parametrize("expression", SHAPE_ACCEPTED)
def test_whatever_the_parser_accepts_the_shape_check_accepts(expression: str) -> None:
    cron.parse(expression)

    assert check_schedule_shape(expression) == expression


@pytest.mark.parametrize("expression", ["0 0 * * * *", "1 2 3", "@reboot", "   "])
def test_field_count_messages_are_the_parsers(expression: str) -> None:
    with pytest.raises(cron.CronError) as parsed:
        cron.parse(expression)
    with pytest.raises(ValueError, match=r"expected|not a supported macro") as shaped:
        check_schedule_shape(expression)

    assert str(shaped.value) == str(parsed.value)


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5"])
def test_time_zones_are_iana_names(zone: str) -> None:
    assert schedule(timeZone=zone).spec.time_zone == zone


@pytest.mark.parametrize("zone", ["Europe Berlin", "/etc/localtime", "+01:00", "a/b/c/d"])
def test_time_zones_that_cannot_be_iana_names_are_refused(zone: str) -> None:
    with pytest.raises(ValidationError):
        schedule(timeZone=zone)


def test_retention_must_keep_something() -> None:
    with pytest.raises(ValidationError) as error:
        schedule(retention={"keepLast": 0})

    assert "retention must keep at least one backup" in refusal(error)


def test_retention_counts_are_bounded() -> None:
    with pytest.raises(ValidationError):
        schedule(retention={"keepDaily": -1})
    with pytest.raises(ValidationError):
        schedule(retention={"keepDaily": 1001})


def test_an_explicit_retention_keeps_only_what_it_says() -> None:
    retention = schedule(retention={"keepDaily": 30}).spec.retention

    assert (retention.keep_last, retention.keep_daily, retention.keep_monthly) == (0, 30, 0)


def test_a_schedule_without_a_template_takes_everything_from_a_store() -> None:
    bare = BackupSchedule.model_validate(
        {"spec": {"environmentRef": {"name": "shop"}, "schedule": "0 2 * * *"}}
    )

    assert bare.spec.template.storage is None
    assert bare.spec.template.encryption is None


# --- Restore -----------------------------------------------------------------------------------


def test_a_restore_defaults_to_in_place_with_a_safety_backup() -> None:
    spec = restore().spec

    assert spec.target is None
    assert spec.dry_run is False
    assert spec.safety_backup is True


def test_a_restore_can_choose_an_environments_latest_verified_backup() -> None:
    source = restore(
        source={"environmentRef": {"name": "shop"}, "select": "latestVerified"},
        target={"environmentRef": {"name": "shop-staging"}},
    ).spec.source

    assert source.select == SourceSelection.LATEST_VERIFIED


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"backupRef": {"name": "b"}, "environmentRef": {"name": "shop"}, "select": "latest"},
            "exactly one of backupRef and environmentRef must be set",
        ),
        ({}, "exactly one of backupRef and environmentRef must be set"),
        (
            {"environmentRef": {"name": "shop"}},
            "select (latest or latestVerified) goes with environmentRef, and only with it",
        ),
        (
            {"backupRef": {"name": "b"}, "select": "latest"},
            "select (latest or latestVerified) goes with environmentRef, and only with it",
        ),
    ],
    ids=["both", "neither", "environment-without-select", "backup-with-select"],
)
def test_the_source_is_one_backup_or_one_environment_with_select(
    source: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as error:
        restore(source=source)

    assert message in refusal(error)


def test_select_takes_only_latest_or_latest_verified() -> None:
    with pytest.raises(ValidationError):
        restore(source={"environmentRef": {"name": "shop"}, "select": "oldest"})


def test_restore_phases_know_when_they_are_done() -> None:
    assert [p for p in RestorePhase if p.is_done] == [RestorePhase.COMPLETED, RestorePhase.FAILED]


# --- RestoreDrill ------------------------------------------------------------------------------


def test_a_drill_defaults_to_the_latest_backup_row_counts_and_ten_runs_of_history() -> None:
    spec = drill().spec

    assert spec.time_zone == "UTC"
    assert spec.backup_selection.strategy == BackupSelectionStrategy.LATEST
    assert spec.checks.row_counts is True
    assert spec.checks.sql == []
    assert (spec.objectives.rto_seconds, spec.objectives.rpo_seconds) == (None, None)
    assert spec.scratch.keep_for == "1h"
    assert spec.history_limit == 10
    assert spec.suspend is False


def test_a_drill_takes_sql_checks_and_objectives() -> None:
    spec = drill(
        backupSelection={"strategy": "RandomWithinWindow", "window": "168h"},
        checks={"sql": [{"name": "no-negative-totals", "query": "SELECT 1", "expect": "1"}]},
        objectives={"rtoSeconds": 900, "rpoSeconds": 86400},
    ).spec

    assert spec.checks.sql[0].expect == "1"
    assert spec.objectives.rto_seconds == 900


@pytest.mark.parametrize(
    "selection",
    [{"strategy": "RandomWithinWindow"}, {"strategy": "Latest", "window": "24h"}],
    ids=["random-without-window", "latest-with-window"],
)
def test_a_window_goes_with_random_within_window_only(selection: dict[str, str]) -> None:
    with pytest.raises(ValidationError) as error:
        drill(backupSelection=selection)

    assert "window is required with RandomWithinWindow and allowed only with it" in refusal(error)


def test_durations_of_a_drill_must_be_positive() -> None:
    with pytest.raises(ValidationError) as error:
        drill(scratch={"keepFor": "0m"})

    assert "keepFor must be positive" in refusal(error)


@pytest.mark.parametrize("limit", [0, 101])
def test_history_limit_is_between_1_and_100(limit: int) -> None:
    with pytest.raises(ValidationError):
        drill(historyLimit=limit)


def test_a_drill_schedule_is_checked_like_a_backup_schedule() -> None:
    with pytest.raises(ValidationError) as error:
        drill(schedule="0 0 4 * * *")

    assert "expected 5 fields" in refusal(error)


def test_objectives_report_what_a_run_missed() -> None:
    objectives = DrillObjectives(rto_seconds=300, rpo_seconds=3600)

    assert objectives.failed_checks(restore_seconds=120, backup_age_seconds=60) == []
    failed = objectives.failed_checks(restore_seconds=412.4, backup_age_seconds=7200)
    assert [(f.check, f.reason) for f in failed] == [
        ("rto", "restore took 412.4 s, objective 300 s"),
        ("rpo", "backup was 7200 s old, objective 3600 s"),
    ]


def _run(number: int, result: DrillResult = DrillResult.PASSED) -> DrillRun:
    return DrillRun(
        backup=f"b{number}",
        started_at=datetime(2024, 1, number, 4, tzinfo=UTC),
        finished_at=datetime(2024, 1, number, 4, 5, tzinfo=UTC),
        restore_seconds=300,
        backup_age_seconds=3600,
        result=result,
    )


def test_a_recorded_run_heads_a_history_bounded_by_the_limit() -> None:
    status = RestoreDrillStatus()
    for number in range(1, 6):
        status = status.with_run(_run(number), history_limit=3)

    assert status.last_run is not None
    assert status.last_run.backup == "b5"
    assert [run.backup for run in status.history] == ["b5", "b4", "b3"]
    assert status.current_run is None


def test_the_history_keeps_the_count_of_failed_checks_not_the_reasons() -> None:
    run = _run(1, DrillResult.FAILED).model_copy(
        update={"failed_checks": DrillObjectives(rto_seconds=1).failed_checks(300, 0)}
    )

    summary = RestoreDrillStatus().with_run(run, history_limit=10).history[0]

    assert summary.result == DrillResult.FAILED
    assert summary.failed_check_count == 1


# --- the generated CRDs ------------------------------------------------------------------------

KINDS: list[tuple[type[CustomResource], str, list[str]]] = [
    (Backup, "bk", ["Environment", "Phase", "Size", "Verified", "Drill", "Age"]),
    (
        BackupSchedule,
        "bks",
        ["Environment", "Schedule", "Time Zone", "Next", "Suspended", "Last Success", "Age"],
    ),
    (Restore, "rst", ["Source", "Target", "Phase", "Dry Run", "Duration", "Age"]),
    (
        RestoreDrill,
        "drill",
        ["Environment", "Schedule", "Last Result", "RTO", "RPO", "Next", "Age"],
    ),
]


@pytest.mark.parametrize(("kind", "short_name", "columns"), KINDS)
def test_each_kind_renders_a_crd_with_its_short_name_and_columns(
    kind: type[CustomResource], short_name: str, columns: list[str]
) -> None:
    crd = crds.render_crd(kind)
    version = crd["spec"]["versions"][0]

    assert crd["spec"]["names"]["shortNames"] == [short_name]
    assert [c["name"] for c in version["additionalPrinterColumns"]] == columns
    assert version["subresources"] == {"status": {}}


@pytest.mark.parametrize("kind", [Backup, BackupSchedule, Restore, RestoreDrill])
def test_each_kind_is_registered(kind: type[CustomResource]) -> None:
    assert kind in crds.ALL_KINDS
    assert f"{kind.crd.plural}.dockyard.io.yaml" in crds.render_all()


def test_future_times_are_string_columns_because_kubectl_cannot_age_them() -> None:
    for kind in (BackupSchedule, RestoreDrill):
        columns = crds.render_crd(kind)["spec"]["versions"][0]["additionalPrinterColumns"]
        assert next(c for c in columns if c["name"] == "Next")["type"] == "string"


def test_the_schedule_field_carries_the_count_rule_and_one_rule_per_field() -> None:
    schema = crds.structural_schema(BackupSchedule)
    rules = schema["properties"]["spec"]["properties"]["schedule"]["x-kubernetes-validations"]

    assert len(rules) == 6
    assert "expected 5 fields" in rules[0]["messageExpression"]
    assert [r["message"].split(" (")[0] for r in rules[1:]] == [
        "minute",
        "hour",
        "day-of-month",
        "month",
        "day-of-week",
    ]


def test_durations_keep_their_pattern_in_the_crd() -> None:
    backup_spec = crds.structural_schema(Backup)["properties"]["spec"]["properties"]
    drill_spec = crds.structural_schema(RestoreDrill)["properties"]["spec"]["properties"]

    durations = [
        backup_spec["ttl"],
        drill_spec["backupSelection"]["properties"]["window"],
        drill_spec["scratch"]["properties"]["keepFor"],
    ]

    assert all(d["pattern"] == r"^([0-9]+(\.[0-9]+)?(h|m|s))+$" for d in durations)


def test_drill_defaults_leave_unset_optional_fields_out() -> None:
    spec = crds.structural_schema(RestoreDrill)["properties"]["spec"]["properties"]

    assert spec["backupSelection"]["default"] == {"strategy": "Latest"}
    assert spec["objectives"]["default"] == {}
