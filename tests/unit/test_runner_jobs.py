"""Restore and drill runner Jobs: the manifest, and reading a Job's result back."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dockyard.core.models.backup import Backup
from dockyard.core.models.restore import Restore
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.runs import jobs, runner_jobs
from dockyard.operator.runs.context import StorageRefused, retryable
from dockyard.runner import RestoreResult

SHA = "cd" * 32
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


def _backup() -> Backup:
    return Backup.model_validate(
        {
            "metadata": {"name": "nightly", "namespace": "team", "uid": "uid-nightly"},
            "spec": {
                "environmentRef": {"name": "shop"},
                "storage": {"filesystem": {"path": "/backups", "claimName": "backups"}},
                "encryption": {"keySecretRef": {"name": "backup-key", "key": "key"}},
            },
            "status": {"phase": "Completed", "sha256": SHA, "attempts": 1},
        }
    )


def _owner() -> Owner:
    restore = Restore.model_validate(
        {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Restore",
            "metadata": {"name": "promote", "namespace": "team", "uid": "uid-promote"},
            "spec": {"source": {"backupRef": {"name": "nightly"}}, "runner": "Job"},
        }
    )
    return Owner.of(restore)


def _job() -> dict[str, Any]:
    return _restore_job(_backup())


def _restore_job(backup: Backup) -> dict[str, Any]:
    return jobs.restore_job(
        _owner(),
        backup,
        name="restore-promote-1",
        runner="restore",
        artifact="team/nightly/uid-1.dkbk",
        key_id="k-1",
        database="dkr_0123456789abcdef_1",
        database_secret="copy-database",
        image="img:1",
    )


def test_a_restore_job_writes_one_database_as_the_targets_role_with_no_api_token() -> None:
    job = _job()
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Restore"
    assert job["metadata"]["labels"][jobs.OWNER_UID_LABEL] == "uid-promote"
    assert pod["automountServiceAccountToken"] is False
    assert container["args"][:2] == ["restore-run", "--storage=file:///backups"]
    assert "--database=dkr_0123456789abcdef_1" in container["args"]
    assert f"--sha256={SHA}" in container["args"]
    assert "--result-file=/dev/termination-log" in container["args"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    target = next(e for e in container["env"] if e["name"] == "DOCKYARD_RESTORE_TARGET_DSN")
    assert target["valueFrom"]["secretKeyRef"] == {"name": "copy-database", "key": "uri"}
    for variable in container["env"]:
        # Secrets by reference only; in plain text, the log format and the tracing.
        assert "valueFrom" in variable or variable["name"] in jobs.PLAIN_VARIABLES
    claims = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == [{"name": "backups", "persistentVolumeClaim": {"claimName": "backups"}}]


def test_backup_jobs_keep_their_token_to_report_to_the_backup() -> None:
    job = jobs.backup_job(
        _backup(), attempt=1, artifact="a", key_id="k", database_secret="s", image="i"
    )
    assert job["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert job["metadata"]["labels"][jobs.RUNNER_LABEL] == "backup"


def test_runner_pods_run_with_the_restricted_security_profile_each_its_own() -> None:
    made = [
        _job(),
        jobs.backup_job(_backup(), attempt=1, artifact="a", key_id="k", database_secret="s",
                        image="i"),
    ]  # fmt: skip
    for job in made:
        pod = job["spec"]["template"]["spec"]
        [container] = pod["containers"]
        assert container["securityContext"] == {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        # The key Secret's volume is root's: the group lets the image's user read it.
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
            "fsGroup": 10001,
            "fsGroupChangePolicy": "OnRootMismatch",
        }
        [key] = [v for v in pod["volumes"] if v["name"] == "backup-key"]
        assert key["secret"]["defaultMode"] == 0o400
    # No two manifests share a context: one changed in place leaves the others be.
    made[0]["spec"]["template"]["spec"]["securityContext"]["runAsUser"] = 1000
    assert "runAsUser" not in made[1]["spec"]["template"]["spec"]["securityContext"]


def _pod(created: str, message: str | None, container: str = "runner") -> dict[str, Any]:
    terminated = {"exitCode": 1} | ({"message": message} if message else {})
    return {
        "metadata": {"creationTimestamp": created},
        "status": {"containerStatuses": [{"name": container, "state": {"terminated": terminated}}]},
    }


def test_the_newest_pods_runner_message_is_the_result() -> None:
    pods = {
        "items": [
            _pod("2026-11-26T10:00:02Z", "new"),
            _pod("2026-11-26T10:00:01Z", "old"),
            _pod("2026-11-26T10:00:03Z", "sidecar", container="istio-proxy"),
        ]
    }
    assert jobs.termination_message(pods) == "new"
    assert jobs.termination_message({"items": [_pod("2026-11-26T10:00:00Z", None)]}) is None


def _result_json() -> str:
    return RestoreResult(
        name="team/nightly/uid-1.dkbk",
        sha256=SHA,
        size=1234,
        key_id="k-1",
        database="dkr_0123456789abcdef_1",
        role=None,
        started_at=NOW,
        finished_at=NOW,
        duration_seconds=1.5,
        pg_restore_version="15.8",
    ).model_dump_json()


def test_a_succeeded_job_returns_the_result_it_reported() -> None:
    logs = f"some log line\n{_result_json()}\n"
    result = runner_jobs._result("restore-promote-1", "Succeeded", None, logs)
    assert (result.size, result.sha256) == (1234, SHA)


def test_a_job_that_succeeded_without_a_result_restored_nothing_to_vouch_for() -> None:
    with pytest.raises(runner_jobs.RunnerFailed, match="without reporting a restore result"):
        runner_jobs._result("restore-promote-1", "Succeeded", None, None)


def test_a_checksum_mismatch_keeps_its_reason_and_is_not_retried() -> None:
    message = '{"error": {"reason": "ChecksumMismatch", "message": "checksum mismatch: x"}}'
    with pytest.raises(runner_jobs.ArtifactRejected) as caught:
        runner_jobs._result("restore-promote-1", "Failed", None, message)
    assert caught.value.reason == "ChecksumMismatch"
    assert caught.value.message == "checksum mismatch: x"
    assert not retryable(caught.value)


def test_a_database_error_keeps_its_reason_and_is_retried() -> None:
    message = '{"error": {"reason": "DatabaseUnavailable", "message": "refused"}}'
    with pytest.raises(runner_jobs.RunnerReported) as caught:
        runner_jobs._result("restore-promote-1", "Failed", None, message)
    assert caught.value.reason == "DatabaseUnavailable"
    assert retryable(caught.value)


def test_a_job_that_failed_silently_says_what_kubernetes_said() -> None:
    job = {
        "status": {
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                }
            ]
        }
    }
    with pytest.raises(runner_jobs.RunnerFailed, match="DeadlineExceeded: Job was active"):
        runner_jobs._result("restore-promote-1", "Failed", job, None)
    with pytest.raises(runner_jobs.RunnerFailed, match="is gone"):
        runner_jobs._result("restore-promote-1", "Missing", None, None)


def test_a_jobs_restore_time_runs_from_its_creation_to_its_completion() -> None:
    job = runner_jobs.RunnerJob(
        "team",
        "restore-promote-1",
        {
            "metadata": {"creationTimestamp": "2026-11-26T10:00:00Z"},
            "status": {
                "completionTime": "2026-11-26T10:00:42Z",
                "conditions": [{"type": "Complete", "status": "True"}],
            },
        },
    )
    assert job.state == "Succeeded"
    assert job.seconds(NOW) == 42.0


def test_a_running_jobs_time_runs_until_now_and_a_missing_one_has_none() -> None:
    running = runner_jobs.RunnerJob(
        "team", "restore-promote-1", {"metadata": {"creationTimestamp": "2026-11-26T09:59:30Z"}}
    )
    assert running.state == "Running"
    assert running.seconds(NOW) == 30.0
    missing = runner_jobs.RunnerJob("team", "restore-promote-1", None)
    assert (missing.state, missing.seconds(NOW)) == ("Missing", None)


TOKEN_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def _templated() -> tuple[dict[str, Any], dict[str, Any]]:
    """A runner Job's template and a Pod made from it (with the token the ServiceAccount
    admission plugin mounts)."""
    runner = {
        "name": "runner",
        "image": "ghcr.io/dockyard/dockyard:1.2.3",
        "args": ["restore-run", "--name=a.dkbk"],
        "env": [{"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "uri"}}}],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
    }
    template = {
        "serviceAccountName": "dockyard-backup-runner",
        "containers": [runner],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    }
    token = {
        "name": "kube-api-access-x",
        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
    }
    pod = {
        **template,
        "containers": [{**runner, "volumeMounts": [*runner["volumeMounts"], token]}],  # type: ignore[list-item]
        "volumes": [*template["volumes"], {"name": "kube-api-access-x", "projected": {}}],  # type: ignore[list-item]
    }
    return {"spec": {"template": {"spec": template}}}, {"spec": pod}


def test_a_pod_runs_as_templated_only_with_its_jobs_runner_account_and_mounts() -> None:
    job, pod = _templated()
    assert runner_jobs.template_mismatch(pod, job) is None
    runner = pod["spec"]["containers"][0]
    for changed, field in (
        ({"args": ["restore-run", "--name=b.dkbk"]}, "args"),
        ({"image": "attacker/fake:1"}, "image"),
        ({"command": ["sh", "-c", "echo '{}' > /dev/termination-log"]}, "command"),
        ({"lifecycle": {"postStart": {"exec": {"command": ["sh"]}}}}, "lifecycle"),
        ({"livenessProbe": {"exec": {"command": ["sh"]}}}, "livenessProbe"),
        ({"env": []}, "env"),
        ({"env": [*runner["env"], {"name": "PGHOST", "value": "evil"}]}, "env"),
        ({"volumeMounts": [*runner["volumeMounts"], {"name": "x", "mountPath": "/usr/lib"}]},
         "volumeMounts"),
        ({"volumeMounts": []}, "volumeMounts"),
    ):  # fmt: skip
        forged = {"spec": {**pod["spec"], "containers": [{**runner, **changed}]}}
        assert runner_jobs.template_mismatch(forged, job) == field, changed
    for spec, field in (
        ({"serviceAccountName": "default"}, "serviceAccountName"),
        ({"shareProcessNamespace": True}, "shareProcessNamespace"),
        ({"volumes": []}, "volumes"),
        ({"containers": []}, "containers"),
    ):
        assert runner_jobs.template_mismatch({"spec": {**pod["spec"], **spec}}, job) == field


def test_what_admission_adds_for_workload_identity_or_a_digest_is_tolerated() -> None:
    job, pod = _templated()
    runner = pod["spec"]["containers"][0]
    identity = {
        "image": runner["image"] + "@sha256:" + "a" * 64,
        "env": [*runner["env"], {"name": "AWS_ROLE_ARN", "value": "arn:aws:iam::1:role/r"},
                {"name": "AZURE_FEDERATED_TOKEN_FILE", "value": "/var/run/secrets/azure/tokens/t"}],
        "volumeMounts": [*runner["volumeMounts"],
                         {"name": "aws-iam-token",
                          "mountPath": "/var/run/secrets/eks.amazonaws.com/serviceaccount"}],
    }  # fmt: skip
    admitted = {"spec": {**pod["spec"], "containers": [{**runner, **identity}]}}
    assert runner_jobs.template_mismatch(admitted, job) is None


def test_a_claim_stored_over_the_runners_own_files_is_never_mounted() -> None:
    """The API server refuses such a path now; a Backup stored before the rule still
    reads, and its restore (or backup) Job is refused rather than built."""
    stored = _backup().model_dump(mode="json", by_alias=True)
    stored["spec"]["storage"]["filesystem"]["path"] = "/opt/dockyard"
    backup = Backup.model_validate(stored)

    with pytest.raises(StorageRefused) as refused:
        _restore_job(backup)
    with pytest.raises(StorageRefused):
        jobs.backup_job(backup, attempt=1, artifact="a", key_id="k-1", database_secret="s",
                        image="img:1")  # fmt: skip

    assert "filesystem path /opt/dockyard: a runner Job mounts claimName" in refused.value.message
    assert not retryable(refused.value)


class _Accounts:
    """The apiserver's ServiceAccounts of one namespace, and the applies made to it."""

    def __init__(self, **existing: dict[str, Any]) -> None:
        self.existing = existing
        self.applied: list[str] = []

    async def get(self, path: str, **_: Any) -> dict[str, Any] | None:
        return self.existing.get(path.rsplit("/", 1)[-1])  # None: as a 404 reads

    async def apply(self, path: str, manifest: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.applied.append(manifest["metadata"]["name"])
        return manifest


async def test_the_runner_account_is_not_taken_from_an_environment_named_after_it() -> None:
    owned = {
        "metadata": {
            "name": jobs.RUNNER_ACCOUNT,
            "ownerReferences": [
                {
                    "kind": "Environment",
                    "name": jobs.RUNNER_ACCOUNT,
                    "uid": "u1",
                    "controller": True,
                }
            ],
        }
    }
    kube = _Accounts(**{jobs.RUNNER_ACCOUNT: owned})

    with pytest.raises(runner_jobs.RunnerFailed, match="is Environment dockyard-backup-runner's"):
        await runner_jobs.apply_runner_identity(kube, "team")  # type: ignore[arg-type]

    assert kube.applied == []


async def test_the_runner_account_is_applied_over_its_own_or_over_nothing() -> None:
    mine = {"metadata": {"name": jobs.RUNNER_ACCOUNT, "labels": {"dockyard.io/x": "y"}}}
    for kube in (_Accounts(), _Accounts(**{jobs.RUNNER_ACCOUNT: mine})):
        await runner_jobs.apply_runner_identity(kube, "team")  # type: ignore[arg-type]

        assert jobs.RUNNER_ACCOUNT in kube.applied
