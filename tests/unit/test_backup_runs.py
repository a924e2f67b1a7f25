"""The pure parts of running Backups: storage confinement, names, key ids, the runner
Job and its identity, the default schedule, and each schedule decision."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard.core.models.backup import Backup, BackupPhase, BackupStatus, BackupVerification
from dockyard.core.models.backup_schedule import BackupSchedule
from dockyard.core.models.common import API_VERSION
from dockyard.core.models.environment import Environment
from dockyard.core.models.storage import BackupStorage
from dockyard.core.settings import Settings
from dockyard.operator.backups import status as report
from dockyard.operator.backups.schedules import backup_for, backup_name, plan_tick
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.database import database_identity
from dockyard.operator.environments.defaults import default_schedule, wants_default_schedule
from dockyard.operator.runs import jobs
from dockyard.operator.runs.context import (
    SourceUnavailable,
    StorageRefused,
    artifact_name,
    artifact_prefix,
    confine,
    environment_dsn,
    key_id_of,
    retryable,
    tenant_dsn,
    tenant_login,
    with_database,
)
from dockyard.operator.runs.runner_jobs import RunnerJob

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2025, 3, 10, 12, 0, 30, tzinfo=UTC)
STORAGE = {"filesystem": {"path": "/var/lib/dockyard/backups"}}
ENCRYPTION = {"keySecretRef": {"name": "backup-key", "key": "key"}}


SCHEDULE_UID = "0f0e0d0c-0000-4000-8000-000000000001"


def _schedule(schedule: str = "0 * * * *", **spec: Any) -> BackupSchedule:
    status = spec.pop("status", {})
    annotations = spec.pop("annotations", {})
    return BackupSchedule.model_validate(
        {
            "metadata": {
                "name": "nightly",
                "namespace": "team",
                "uid": SCHEDULE_UID,
                "generation": 1,
                "creationTimestamp": (NOW - timedelta(hours=3)).isoformat(),
                "annotations": annotations,
            },
            "spec": {
                "environmentRef": {"name": "shop"},
                "schedule": schedule,
                "template": {"storage": STORAGE, "encryption": ENCRYPTION},
                **spec,
            },
            "status": status,
        }
    )


def _backup(
    name: str,
    phase: BackupPhase | None,
    completed: datetime | None = None,
    *,
    owner: str = SCHEDULE_UID,
    environment: str = "shop",
) -> Backup:
    """A Backup with the schedule's label, made by the schedule of uid ``owner``."""
    reference = {"apiVersion": API_VERSION, "kind": "BackupSchedule", "name": "nightly",
                 "uid": owner, "controller": True}  # fmt: skip
    backup = Backup.model_validate(
        {
            "metadata": {
                "name": name,
                "namespace": "team",
                "uid": f"uid-{name}",
                "labels": {"dockyard.io/backup-schedule": "nightly"},
                "ownerReferences": [reference],
            },
            "spec": {
                "environmentRef": {"name": environment},
                "storage": STORAGE,
                "encryption": ENCRYPTION,
            },
        }
    )
    backup.status.phase = phase
    backup.status.completed_at = completed
    return backup


# -- context ------------------------------------------------------------------------------


def test_a_path_under_the_root_is_accepted(tmp_path: Path) -> None:
    assert confine(str(tmp_path / "team"), tmp_path) == (tmp_path / "team").resolve()


def test_a_path_outside_the_root_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageRefused, match="outside the operator's backup root"):
        confine("/etc", tmp_path)


def test_a_symlink_out_of_the_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to(tmp_path)
    with pytest.raises(StorageRefused):
        confine(str(root / "escape" / "x"), root)


def test_refused_storage_is_not_retried_but_a_missing_source_is() -> None:
    from dockyard.operator.runs.context import SourceUnavailable

    assert not retryable(StorageRefused("no"))
    assert retryable(SourceUnavailable("later"))


def test_each_attempt_has_its_own_artifact_under_the_backups_prefix() -> None:
    first = artifact_name("team", "nightly-1", "abcdef12-3456", 1)
    second = artifact_name("team", "nightly-1", "abcdef12-3456", 2)
    assert first != second
    assert first.startswith(artifact_prefix("team", "nightly-1", "abcdef12-3456"))


def test_the_key_id_is_a_stable_fingerprint_that_does_not_contain_the_key() -> None:
    key = bytes(range(32))
    assert key_id_of(key) == key_id_of(key)
    assert key_id_of(key) != key_id_of(bytes(32))
    assert key.hex() not in key_id_of(key)


def test_the_source_dsn_keeps_the_server_and_user_and_changes_the_database() -> None:
    dsn = with_database("postgresql://admin:pw@db:5432/postgres?sslmode=require", "team_shop")
    assert dsn == "postgresql://admin:pw@db:5432/team_shop?sslmode=require"


# -- runner Jobs --------------------------------------------------------------------------


def test_the_runner_identities_match_the_shipped_template() -> None:
    shipped = list(yaml.safe_load_all((ROOT / "manifests/backup-runner-rbac.yaml").read_text()))
    owner = Owner(API_VERSION, "Backup", "backup-name", "team", "backup-uid")
    built = jobs.runner_identity("team") + jobs.backup_runner_identity(owner)

    def shape(manifest: dict[str, Any]) -> dict[str, Any]:
        meta = manifest["metadata"]
        kept = {k: v for k, v in manifest.items() if k not in ("metadata", "subjects")}
        subjects = [{"kind": s["kind"], "name": s["name"]} for s in manifest.get("subjects", ())]
        return {**kept, "name": meta["name"], "labels": meta["labels"], "subjects": subjects}

    assert [shape(m) for m in built] == [shape(m) for m in shipped]


def test_a_backup_runner_may_patch_its_own_backups_status_and_nothing_else() -> None:
    owner = Owner(API_VERSION, "Backup", "nightly-1", "team", "0f0e-uid")
    built = {m["kind"]: m for m in jobs.backup_runner_identity(owner)}
    assert built["Role"]["rules"] == [
        {
            "apiGroups": ["dockyard.io"],
            "resources": ["backups/status"],
            "resourceNames": ["nightly-1"],
            "verbs": ["patch"],
        }
    ]
    assert built["RoleBinding"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "backup-runner-0f0e-uid", "namespace": "team"}
    ]
    for manifest in built.values():
        assert manifest["metadata"]["ownerReferences"][0]["uid"] == "0f0e-uid"
    # The account restore and drill Jobs share has no Role at all.
    assert [m["kind"] for m in jobs.runner_identity("team")] == ["ServiceAccount"]


def test_the_job_carries_no_secret_values() -> None:
    backup = _backup("bk", None)
    job = jobs.backup_job(
        backup,
        attempt=2,
        artifact="team/bk/x-2.dkbk",
        key_id="k-1",
        database_secret="shop-database",
        image="img:1",
    )
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert job["metadata"]["name"] == "backup-bk-2"
    assert job["spec"]["backoffLimit"] == 0
    assert pod["serviceAccountName"] == f"backup-runner-{backup.metadata.uid}"
    assert "--report-backup=team/bk" in container["args"]
    for variable in container["env"]:
        # Secrets by reference only; in plain text, the log format and the tracing.
        assert "valueFrom" in variable or variable["name"] in jobs.PLAIN_VARIABLES


def test_an_s3_job_gets_its_keys_and_ca_bundle_from_their_secrets() -> None:
    backup = _backup("bk", None)
    s3 = {
        "bucket": "tenant-backups",
        "endpoint": "https://minio.storage.svc:9000",
        "credentialsSecretRef": {"name": "tenant-s3"},
        "caBundleSecretRef": {"name": "minio-ca", "key": "ca.crt"},
    }
    backup.spec.storage = BackupStorage.model_validate({"s3": s3})
    job = jobs.backup_job(
        backup,
        attempt=1,
        artifact="team/bk/x-1.dkbk",
        key_id="k-1",
        database_secret="shop-database",
        image="img:1",
    )
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    env = {variable["name"]: variable for variable in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "tenant-s3"
    assert env["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    [volume] = [v for v in pod["volumes"] if v["name"] == "s3-ca"]
    assert volume["secret"]["secretName"] == "minio-ca"
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": jobs.CA_FILE}]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "s3-ca"]
    assert env["AWS_CA_BUNDLE"]["value"] == f"{mount['mountPath']}/{jobs.CA_FILE}"
    assert mount["readOnly"] is True
    assert "--storage=s3://tenant-backups" in container["args"]
    assert "--s3-endpoint-url=https://minio.storage.svc:9000" in container["args"]
    for variable in container["env"]:
        assert "valueFrom" in variable or variable["name"] in jobs.PLAIN_VARIABLES


def test_job_names_fit_in_a_label() -> None:
    assert len(jobs.job_name("x" * 250, 12)) <= 63


def test_a_job_backup_completes_when_its_job_did_not_when_its_runner_says() -> None:
    """The runner reports the artifact's ``completedAt`` too; the Backup's completion
    time, which retention and latestVerified order by, is the Job's."""
    reported = BackupStatus().with_artifact(
        location="file:///b/x", size=1, sha256="a" * 64, key_id="k", tables={},
        completed_at=datetime(2099, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    job = RunnerJob("team", "backup-x-1", {"status": {"completionTime": "2025-03-10T12:00:07Z"}})
    done = report.completed_by_job(reported, job.name, 1, at=job.completed_at)
    assert done.completed_at == datetime(2025, 3, 10, 12, 0, 7, tzinfo=UTC)


def test_job_state_follows_the_jobs_conditions() -> None:
    assert jobs.job_state(None) == "Missing"
    assert jobs.job_state({"status": {}}) == "Running"
    done = {"status": {"conditions": [{"type": "Complete", "status": "True"}]}}
    assert jobs.job_state(done) == "Succeeded"


# -- default schedule ---------------------------------------------------------------------


def _environment(tier: str, annotations: dict[str, str] | None = None) -> Environment:
    return Environment.model_validate(
        {
            "metadata": {
                "name": "shop",
                "namespace": "team",
                "uid": "u1",
                "annotations": annotations or {},
            },
            "spec": {"tier": tier, "image": "registry.example.com/shop:1.0", "replicas": 2},
        }
    )


def test_production_gets_a_default_schedule_unless_it_opts_out() -> None:
    assert wants_default_schedule(_environment("production"))
    assert not wants_default_schedule(_environment("staging"))
    assert not wants_default_schedule(
        _environment("production", {"dockyard.io/default-backups": "false"})
    )


def test_the_default_schedule_is_a_valid_backup_schedule() -> None:
    manifest = default_schedule(_environment("production"), Settings(backup_root=Path("/backups")))
    schedule = BackupSchedule.model_validate(manifest)
    assert schedule.spec.template.storage.filesystem is not None
    assert schedule.spec.template.storage.filesystem.path == "/backups"


# -- schedule decisions -------------------------------------------------------------------


def test_an_impossible_schedule_is_reported_and_plans_nothing() -> None:
    tick = plan_tick(_schedule("0 0 30 2 *"), [], NOW)
    [ready] = tick.status.conditions
    assert (ready.status, ready.reason) == ("False", "InvalidSchedule")
    assert "never happens" in ready.message
    assert tick.create is None
    assert tick.status.next_schedule_time is None


def test_a_schedule_with_no_run_within_9_years_is_reported_and_retention_still_applies() -> None:
    """April 1st on a Wednesday: 2026, then 2037. The parser accepts it, so each pass
    used to fail on it instead of saying so."""
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    earlier = [
        _backup("nightly-1", BackupPhase.COMPLETED, now - timedelta(days=2)),
        _backup("nightly-2", BackupPhase.COMPLETED, now - timedelta(days=1)),
    ]

    tick = plan_tick(_schedule("0 0 */30 4 3", retention={"keepLast": 1}), earlier, now)

    ready = next(c for c in tick.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "InvalidSchedule")
    assert ready.message == "0 0 */30 4 3 has no run within 9 years"
    assert tick.invalid == ready.message
    assert tick.create is None
    assert tick.status.next_schedule_time is None
    assert tick.delete == ("nightly-1",)


def test_a_due_run_creates_a_backup_named_after_its_time() -> None:
    tick = plan_tick(_schedule(), [], NOW)
    assert tick.create == "nightly-202503101200"
    assert tick.status.last_schedule_time == datetime(2025, 3, 10, 12, 0, tzinfo=UTC)
    assert tick.status.next_schedule_time == datetime(2025, 3, 10, 13, 0, tzinfo=UTC)
    assert tick.status.active == ["nightly-202503101200"]


def test_nothing_runs_before_the_next_time() -> None:
    handled = {"lastScheduleTime": "2025-03-10T12:00:00Z"}
    assert plan_tick(_schedule(status=handled), [], NOW).create is None


def test_forbid_skips_while_a_backup_runs() -> None:
    tick = plan_tick(_schedule(), [_backup("nightly-1", BackupPhase.RUNNING)], NOW)
    assert tick.create is None
    assert tick.skipped is not None
    assert "nightly-1" in tick.skipped


def test_allow_runs_beside_a_running_backup_and_replace_cancels_it() -> None:
    running = [_backup("nightly-1", BackupPhase.RUNNING)]
    allow = plan_tick(_schedule(concurrencyPolicy="Allow"), running, NOW)
    assert (allow.create, allow.replace) == ("nightly-202503101200", ())
    replace = plan_tick(_schedule(concurrencyPolicy="Replace"), running, NOW)
    assert replace.replace == ("nightly-1",)


@pytest.mark.parametrize("policy", ["Forbid", "Replace"])
def test_a_pass_retried_after_it_created_its_run_neither_skips_nor_cancels_it(
    policy: str,
) -> None:
    # The earlier pass created nightly-202503101200, then failed before it wrote
    # lastScheduleTime: the run it made is running, and is this very run.
    made = [_backup("nightly-202503101200", BackupPhase.PENDING)]
    tick = plan_tick(_schedule(concurrencyPolicy=policy), made, NOW)
    assert (tick.create, tick.replace, tick.skipped) == ("nightly-202503101200", (), None)
    assert tick.status.active == ["nightly-202503101200"]
    # Another run still going is forbidden or replaced as before.
    older = [*made, _backup("nightly-202503101100", BackupPhase.RUNNING)]
    again = plan_tick(_schedule(concurrencyPolicy=policy), older, NOW)
    if policy == "Forbid":
        assert again.create is None
        assert "nightly-202503101100" in (again.skipped or "")
    else:
        assert again.replace == ("nightly-202503101100",)


def test_a_run_now_retried_later_names_the_run_it_already_created() -> None:
    # The REST API stamps the request; a pass that created the run but failed to remove
    # the annotation is retried a minute later, and finds its own run, not another's.
    asked = {"dockyard.io/run-now": "2025-03-10T12:00:30Z"}
    made = backup_name("nightly", NOW, run_now=True)
    first = plan_tick(_schedule(concurrencyPolicy="Replace", annotations=asked), [], NOW)
    assert first.create == made
    later = NOW + timedelta(minutes=1)
    running = [_backup(made, BackupPhase.RUNNING)]
    again = plan_tick(_schedule(concurrencyPolicy="Replace", annotations=asked), running, later)
    assert (again.create, again.replace) == (made, ())
    # The same stamp set again once that run is done is another request.
    done = [_backup(made, BackupPhase.COMPLETED, NOW)]
    repeat = plan_tick(_schedule(concurrencyPolicy="Replace", annotations=asked), done, later)
    assert repeat.create == backup_name("nightly", later, run_now=True)
    # A value that is no time (kubectl annotate ... run-now=1) names the run by the pass.
    plain = plan_tick(_schedule(annotations={"dockyard.io/run-now": "1"}), [], later)
    assert plain.create == backup_name("nightly", later, run_now=True)


def test_suspend_stops_cron_runs_but_not_run_now() -> None:
    assert plan_tick(_schedule(suspend=True), [], NOW).create is None
    now_run = plan_tick(_schedule(suspend=True, annotations={"dockyard.io/run-now": ""}), [], NOW)
    assert now_run.create == backup_name("nightly", NOW, run_now=True)
    assert now_run.consume_run_now


def test_retention_never_deletes_the_newest_verified_backup() -> None:
    old = _backup("old", BackupPhase.COMPLETED, NOW - timedelta(days=3))
    old.status.verified = BackupVerification(drill="d", at=NOW - timedelta(days=2))
    middle = _backup("middle", BackupPhase.COMPLETED, NOW - timedelta(days=2))
    new = _backup("new", BackupPhase.COMPLETED, NOW - timedelta(days=1))
    tick = plan_tick(_schedule(retention={"keepLast": 1}), [old, middle, new], NOW)
    assert tick.delete == ("middle",)
    assert tick.status.last_successful_backup == "new"


def test_retention_counts_only_the_backups_the_schedule_made_for_its_environment() -> None:
    """The attack: label another Backup with the schedule's name, or re-create the
    schedule (deleted with --cascade=orphan) for another environment, so that its
    retention deletes backups it never made, the only verified one included."""
    kept = _backup("kept", BackupPhase.COMPLETED, NOW - timedelta(days=5), owner="uid-earlier")
    kept.status.verified = BackupVerification(drill="d", at=NOW - timedelta(days=4))
    others = [
        kept,  # an orphan of an earlier schedule of the same name
        _backup("manual", BackupPhase.COMPLETED, NOW - timedelta(days=4), owner="uid-someone"),
        _backup("moved", BackupPhase.COMPLETED, NOW - timedelta(days=3), environment="cart"),
        _backup("running", BackupPhase.RUNNING, owner="uid-earlier"),
    ]
    own = [
        _backup("own-1", BackupPhase.COMPLETED, NOW - timedelta(days=2)),
        _backup("own-2", BackupPhase.COMPLETED, NOW - timedelta(days=1)),
    ]
    tick = plan_tick(_schedule(retention={"keepLast": 1}), others + own, NOW)
    assert tick.delete == ("own-1",)
    assert tick.create == "nightly-202503101200"  # "running" is not its run (Forbid)
    assert tick.status.last_successful_backup == "own-2"


def test_scheduled_backups_belong_to_their_schedule() -> None:
    schedule = _schedule()
    manifest = backup_for(schedule, "nightly-202503101200", NOW)
    backup = Backup.model_validate(manifest)
    assert backup.metadata.labels["dockyard.io/backup-schedule"] == "nightly"
    assert manifest["metadata"]["ownerReferences"][0]["kind"] == "BackupSchedule"
    assert backup.spec.environment_ref.name == "shop"


# -- the source of a backup -------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _database_secret(user: str, password: str = "tenant pw") -> dict[str, Any]:  # noqa: S107
    return {"data": {"username": _b64(user), "password": _b64(password)}}


class _Kube:
    """The apiserver as a run sees it: the environment, and its database Secret."""

    def __init__(self, environment: dict[str, Any], secret: dict[str, Any] | None = None) -> None:
        self.environment = environment
        role = database_identity("team", "shop")[1]
        self.secret = _database_secret(role) if secret is None else secret

    async def get(self, path: str, **_: Any) -> dict[str, Any] | None:
        if "/secrets/" in path:
            assert path.endswith("/secrets/shop-database")
            return self.secret or None
        return self.environment


class _Server:
    def __init__(self, *names: str) -> None:
        self.names = set(names)

    async def database_exists(self, name: str) -> bool:
        return name in self.names


def _settings() -> Settings:
    return Settings(managed_postgres_url="postgresql://admin:pw@db:5432/postgres")


async def test_a_database_not_ready_is_no_source_while_the_environment_lives() -> None:
    kube = _Kube({"metadata": {"name": "shop"}, "status": {"database": {"ready": False}}})
    database, _ = database_identity("team", "shop")
    with pytest.raises(SourceUnavailable, match="not ready yet"):
        await environment_dsn(kube, _settings(), "team", "shop", _Server(database))  # type: ignore[arg-type]


async def test_a_deleted_environments_stale_status_is_checked_on_the_server() -> None:
    # Its status is no longer refreshed: an outage just before deletion must not fail
    # the final snapshot once the server is back.
    kube = _Kube(
        {
            "metadata": {"name": "shop", "deletionTimestamp": "2026-11-26T10:00:00Z"},
            "status": {"database": {"ready": False}},
        }
    )
    database, role = database_identity("team", "shop")
    dsn = await environment_dsn(kube, _settings(), "team", "shop", _Server(database))  # type: ignore[arg-type]
    # Logged in as the environment's own role, never as the server's admin.
    assert dsn == f"postgresql://{role}:tenant%20pw@db:5432/{database}"
    with pytest.raises(SourceUnavailable, match="not ready yet"):
        await environment_dsn(kube, _settings(), "team", "shop", _Server())  # type: ignore[arg-type]


async def test_a_run_logs_in_as_the_environment_s_role_from_its_secret() -> None:
    _, role = database_identity("team", "shop")
    kube = _Kube({"metadata": {"name": "shop"}, "status": {"database": {"ready": True}}})

    login = await tenant_login(kube, "team", "shop")  # type: ignore[arg-type]

    assert (login.user, login.password) == (role, "tenant pw")
    assert "tenant pw" not in repr(login)
    dsn = tenant_dsn(_settings(), login, "dkd_0123456789abcdef")
    assert dsn == f"postgresql://{role}:tenant%20pw@db:5432/dkd_0123456789abcdef"


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ({}, "does not exist"),
        (_database_secret("dockyard"), "does not hold its role's login"),
        ({"data": {"username": "not base64!"}}, "does not hold its role's login"),
    ],
)
async def test_a_database_secret_that_names_another_login_is_refused(
    secret: dict[str, Any], why: str
) -> None:
    # A Secret edited to name the admin (or anyone else) is no way into the admin's rights.
    kube = _Kube({"metadata": {"name": "shop"}, "status": {"database": {"ready": True}}}, secret)
    with pytest.raises(SourceUnavailable, match=why):
        await tenant_login(kube, "team", "shop")  # type: ignore[arg-type]


def test_a_template_stored_with_a_claim_over_the_runner_makes_no_backup() -> None:
    """The API server refuses such a path now, so every Backup the schedule made would be
    refused; a schedule stored before says why instead of failing each pass."""
    storage = {"filesystem": {"path": "/opt/dockyard", "claimName": "backups"}}
    schedule = _schedule(
        template={"storage": storage, "encryption": ENCRYPTION}, retention={"keepLast": 1}
    )
    earlier = [
        _backup("nightly-1", BackupPhase.COMPLETED, NOW - timedelta(days=2)),
        _backup("nightly-2", BackupPhase.COMPLETED, NOW - timedelta(days=1)),
    ]

    tick = plan_tick(schedule, earlier, NOW)

    assert tick.create is None
    assert tick.delete == ("nightly-1",)  # retention still applies to its earlier Backups
    ready = next(c for c in tick.status.conditions if c.type == "Ready")
    assert (ready.status.value, ready.reason) == ("False", "InvalidTemplate")
    assert ready.message.startswith(
        "template.storage.filesystem.path /opt/dockyard: a runner Job mounts claimName"
    )
    assert tick.status.next_schedule_time is None


@pytest.mark.parametrize(
    ("storage", "expected"),
    [
        ({"filesystem": {"path": "/backups"}}, "file:///backups/team/nightly/0123abcd-2.dkbk"),
        (
            {"s3": {"bucket": "dumps", "prefix": "dockyard/"}},
            "s3://dumps/dockyard/team/nightly/0123abcd-2.dkbk",
        ),
        ({"s3": {"bucket": "dumps"}}, "s3://dumps/team/nightly/0123abcd-2.dkbk"),
    ],
)
def test_the_runner_store_reports_the_location_the_operator_expects(
    tmp_path: Path, storage: dict[str, Any], expected: str
) -> None:
    from dockyard.operator.runs.context import artifact_location
    from dockyard.runner.filesystem import FilesystemStore
    from dockyard.runner.s3 import S3Store

    spec = BackupStorage.model_validate(storage)
    artifact = artifact_name("team", "nightly", "0123abcd-uid", 2)
    assert artifact_location(spec, artifact) == expected
    # The runner's own stores, given the same storage, report the same place.
    if spec.filesystem is not None:
        store: Any = FilesystemStore(spec.filesystem.path)
    else:
        assert spec.s3 is not None
        store = S3Store(spec.s3.bucket, prefix=spec.s3.prefix or "")
    assert store.location(artifact) == expected


def test_a_job_report_naming_another_artifact_or_key_is_not_trusted() -> None:
    reported = BackupStatus.model_validate(
        {"phase": "Running", "attempts": 1, "location": "s3://b/team/x/1.dkbk", "keyId": "k-1"}
    )
    mine = "s3://b/team/nightly/0123abcd-1.dkbk"
    why = report.untrusted_report(reported, "backup-nightly-1", location=mine, key_id="k-1")
    assert why is not None
    assert "reported the artifact s3://b/team/x/1.dkbk, not " + mine in why
    honest = reported.model_copy(update={"location": mine})
    assert report.untrusted_report(honest, "j", location=mine, key_id="k-1") is None
    rekeyed = report.untrusted_report(honest, "j", location=mine, key_id="k-2")
    assert rekeyed is not None
    assert "reported key k-1, not the key k-2" in rekeyed
