"""The test bed's stand-in kubelet runs runner pods for real, on the real control plane.

Jobs here are plain batch/v1 Jobs whose pods carry ``dockyard.io/runner``; the stand-in
runs ``dockyard`` with the pod's env, Secrets and ServiceAccount token, and kwok turns
the exit code it annotates into Succeeded or Failed, from which the Job controller
makes the Job Complete or Failed. The namespaces are the test's own, which the
session's operator does not watch, so nothing but the runner touches the Backups.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import yaml

from dockyard.core.kube import KubeClient, load_config
from dockyard.operator.runs.runner_jobs import read_job, runner_message
from dockyard.testbed.cluster import RUNNER_PODS, State
from dockyard.testbed.runner_pods import EXIT_CODE_ANNOTATION
from tests.conftest import Kubectl, get_json, wait_for
from tests.integration import backup_fixtures
from tests.integration.backup_fixtures import NewDatabase

admin_dsn = backup_fixtures.admin_dsn
new_database = backup_fixtures.new_database

pytestmark = pytest.mark.usefixtures("crds_installed")

KEY_MOUNT = "/var/run/secrets/test/key"


def _get(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    return get_json(kubectl, *args)


def _apply(kubectl: Kubectl, namespace: str, *manifests: dict[str, Any]) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump_all(manifests))


def _job(
    name: str,
    args: list[str],
    *,
    command: list[str] | None = None,
    env: list[dict[str, Any]] | None = None,
    account: str = "default",
    runner: bool = True,
    owner: dict[str, Any] | None = None,
) -> dict[str, Any]:
    labels = {"dockyard.io/runner": "test"} if runner else {}
    metadata: dict[str, Any] = {"name": name}
    if owner is not None:
        meta = owner["metadata"]
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": meta["name"], "uid": meta["uid"],
             "controller": True}
        ]  # fmt: skip
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": account,
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "runner",
                            "image": "ghcr.io/dockyard/dockyard:latest",
                            "command": command or ["dockyard"],
                            "args": args,
                            "env": env or [],
                            "volumeMounts": [
                                {"name": "key", "mountPath": KEY_MOUNT, "readOnly": True},
                                {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108
                            ],
                        }
                    ],
                    "volumes": [
                        {
                            "name": "key",
                            "secret": {
                                "secretName": "backup-key",
                                "items": [{"key": "key", "path": "key"}],
                                "defaultMode": 0o400,
                                "optional": True,
                            },
                        },
                        {"name": "tmp", "emptyDir": {}},
                    ],
                },
            },
        },
    }


def _owner(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    """A ConfigMap to own a Job, standing in for the Restore or drill that would."""
    kubectl("create", "configmap", name, "-n", namespace)
    return _get(kubectl, "configmap", name, "-n", namespace)


def _finished(kubectl: Kubectl, namespace: str, name: str) -> tuple[str, dict[str, Any]]:
    """Wait for the Job's Complete or Failed condition; the condition and the Job's pod."""

    def condition() -> str | None:
        job = _get(kubectl, "job", name, "-n", namespace)
        for found in (job.get("status") or {}).get("conditions") or ():
            if found["type"] in ("Complete", "Failed") and found["status"] == "True":
                return str(found["type"])
        return None

    state = wait_for(condition, timeout=90)
    pods = _get(kubectl, "pods", "-n", namespace, "-l", f"job-name={name}")
    [pod] = pods["items"]
    return str(state), dict(pod)


def _terminated(pod: dict[str, Any]) -> dict[str, Any]:
    [status] = pod["status"]["containerStatuses"]
    return dict(status["state"]["terminated"])


def _backup(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": name},
        "spec": {
            "environmentRef": {"name": "shop"},
            "storage": {"filesystem": {"path": "/nowhere"}},
            "encryption": {"keySecretRef": {"name": "backup-key", "key": "key"}},
        },
    }


def _identity(namespace: str, allowed: str) -> list[dict[str, Any]]:
    """A ServiceAccount that may patch the status of the Backup ``allowed``, and nothing else."""
    rbac = "rbac.authorization.k8s.io/v1"
    meta = {"name": "runner", "namespace": namespace}
    rule = {
        "apiGroups": ["dockyard.io"],
        "resources": ["backups/status"],
        "resourceNames": [allowed],
        "verbs": ["patch"],
    }
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": rbac, "kind": "Role", "metadata": meta, "rules": [rule]},
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "runner"},
            "subjects": [{"kind": "ServiceAccount", "name": "runner", "namespace": namespace}],
        },
    ]


def _secrets(kubectl: Kubectl, namespace: str, dsn: str) -> None:
    kubectl("create", "secret", "generic", "db", "-n", namespace, f"--from-literal=uri={dsn}")
    key = secrets.token_hex(32)
    kubectl(
        "create", "secret", "generic", "backup-key", "-n", namespace, f"--from-literal=key={key}"
    )


def _backup_run(store: Path, artifact: str, report_to: str) -> list[str]:
    return [
        "backup-run",
        f"--storage=file://{store}",
        f"--name={artifact}",
        "--key-id=test-key",
        f"--key-file={KEY_MOUNT}/key",
        f"--report-backup={report_to}",
    ]


DSN_ENV = [
    {
        "name": "DOCKYARD_BACKUP_SOURCE_DSN",
        "valueFrom": {"secretKeyRef": {"name": "db", "key": "uri"}},
    }
]


async def test_a_runner_dumps_and_reports_with_exactly_its_service_accounts_rights(
    kubectl: Kubectl, unwatched_namespace: str, new_database: NewDatabase, tmp_path: Path
) -> None:
    ns = unwatched_namespace
    database = await new_database()
    _secrets(kubectl, ns, database.uri())
    _apply(kubectl, ns, *_identity(ns, allowed="allowed"), _backup("allowed"), _backup("denied"))
    store = tmp_path / "store"
    args = _backup_run(store, "allowed.dkbk", f"{ns}/allowed")
    _apply(kubectl, ns, _job("allowed", args, env=DSN_ENV, account="runner"))
    state, pod = _finished(kubectl, ns, "allowed")
    assert state == "Complete", _terminated(pod)
    assert pod["metadata"]["annotations"][EXIT_CODE_ANNOTATION] == "0"
    assert _terminated(pod)["exitCode"] == 0
    status = _get(kubectl, "backup", "allowed", "-n", ns)["status"]
    artifact = Path(unquote(urlsplit(status["location"]).path))
    assert artifact.parent == store
    content = await asyncio.to_thread(artifact.read_bytes)
    assert hashlib.sha256(content).hexdigest() == status["sha256"]

    # The same runner, the same account, another Backup: the Role does not allow it.
    args = _backup_run(store, "denied.dkbk", f"{ns}/denied")
    _apply(kubectl, ns, _job("denied", args, env=DSN_ENV, account="runner"))
    state, pod = _finished(kubectl, ns, "denied")
    assert state == "Failed"
    terminated = _terminated(pod)
    assert terminated["exitCode"] == 1
    assert terminated["reason"] == "Error"
    assert f"could not report to Backup {ns}/denied: 403" in terminated["message"]
    assert "status" not in _get(kubectl, "backup", "denied", "-n", ns)


def test_the_result_file_is_the_containers_termination_message(
    kubectl: Kubectl, unwatched_namespace: str, tmp_path: Path
) -> None:
    ns = unwatched_namespace
    _secrets(kubectl, ns, "postgresql://nobody@127.0.0.1:1/none")
    # --verify-only of an artifact that is not there: a runner failure, reported as JSON.
    args = [
        "restore-run",
        f"--storage=file://{tmp_path}",
        "--name=missing.dkbk",
        "--key-id=test-key",
        f"--key-file={KEY_MOUNT}/key",
        "--sha256=" + "0" * 64,
        "--verify-only",
        "--result-file=/dev/termination-log",
    ]
    _apply(kubectl, ns, _job("verify", args))
    state, pod = _finished(kubectl, ns, "verify")
    assert state == "Failed"
    terminated = _terminated(pod)
    assert terminated["exitCode"] == 1
    assert set(json.loads(terminated["message"])) == {"error"}


async def test_a_pod_posing_as_a_runner_jobs_pod_is_not_read_for_its_result(
    kubectl: Kubectl, unwatched_namespace: str, testbed_state: State, tmp_path: Path
) -> None:
    """The attack: whoever may create pods in a namespace where a restore or a drill runs
    makes one with the runner Job's ``job-name`` label and a runner container whose
    termination message reports success, hoping the operator reads it for the Job's."""
    ns = unwatched_namespace
    _secrets(kubectl, ns, "postgresql://nobody@127.0.0.1:1/none")
    args = ["restore-run", f"--storage=file://{tmp_path}", "--name=missing.dkbk",
            "--key-id=test-key", f"--key-file={KEY_MOUNT}/key", "--sha256=" + "0" * 64,
            "--verify-only", "--result-file=/dev/termination-log"]  # fmt: skip
    owner = _owner(kubectl, ns, "verify-owner")
    _apply(kubectl, ns, _job("verify", args, owner=owner))
    assert _finished(kubectl, ns, "verify")[0] == "Failed"
    forged = json.dumps({"tables": 3, "rows": 1000})
    decoy = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "verify-decoy", "labels": {"job-name": "verify"}},
        # Bound to a node nothing runs: only the status written below is ever its own.
        "spec": {"nodeName": "nowhere", "containers": [{"name": "runner", "image": "x"}]},
    }
    _apply(kubectl, ns, decoy)
    terminated = {"exitCode": 0, "reason": "Completed", "message": forged}
    status = {"containerStatuses": [{"name": "runner", "image": "x", "imageID": "",
              "ready": False, "restartCount": 0, "state": {"terminated": terminated}}]}  # fmt: skip
    kubectl("patch", "pod", "verify-decoy", "-n", ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}))  # fmt: skip

    kube = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
    try:
        job = await read_job(kube, ns, "verify", owner_uid=owner["metadata"]["uid"])
        message = await runner_message(kube, job)
        assert message is not None
        assert set(json.loads(message)) == {"error"}
        # Labelled as the Job controller labels its pods, the decoy would be adopted (an
        # orphan matching the Job's selector): then two pods claim the run, and neither
        # is taken at its word.
        adopted = {"metadata": {
            "labels": {"batch.kubernetes.io/controller-uid": job.manifest["metadata"]["uid"]},  # type: ignore[index]
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "verify",
                                 "uid": job.manifest["metadata"]["uid"], "controller": True}],  # type: ignore[index]
        }}  # fmt: skip
        kubectl("patch", "pod", "verify-decoy", "-n", ns, "--type=merge",
                "-p", json.dumps(adopted))  # fmt: skip
        assert await runner_message(kube, job) is None
        # Alone, it still does not run what the Job's template says.
        kubectl("delete", "pod", "-n", ns, "-l", "batch.kubernetes.io/job-name=verify")
        assert await runner_message(kube, job) is None
    finally:
        await kube.close()


async def test_a_job_of_another_owner_under_the_name_is_not_followed(
    kubectl: Kubectl, unwatched_namespace: str, testbed_state: State
) -> None:
    """Runner Jobs are named after their owner: the Job of an earlier object of the name,
    not yet collected, must not be followed (its result taken) by the one made again."""
    ns = unwatched_namespace
    earlier, again = _owner(kubectl, ns, "earlier"), _owner(kubectl, ns, "again")
    _apply(kubectl, ns, _job("restore-x-1", ["x"], runner=False, owner=earlier))
    assert _finished(kubectl, ns, "restore-x-1")[0] == "Complete"
    kube = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
    try:
        own = await read_job(kube, ns, "restore-x-1", owner_uid=earlier["metadata"]["uid"])
        other = await read_job(kube, ns, "restore-x-1", owner_uid=again["metadata"]["uid"])
    finally:
        await kube.close()
    assert (own.state, other.state) == ("Succeeded", "Missing")


def test_wrong_usage_fails_the_job_with_exit_code_2_and_the_reason(
    kubectl: Kubectl, unwatched_namespace: str
) -> None:
    _apply(kubectl, unwatched_namespace, _job("usage", ["backup-run", "--bogus"]))
    state, pod = _finished(kubectl, unwatched_namespace, "usage")
    assert state == "Failed"
    job = _get(kubectl, "job", "usage", "-n", unwatched_namespace)
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    terminated = _terminated(pod)
    assert terminated["exitCode"] == 2
    assert terminated["message"].startswith("dockyard backup-run: ")


def test_a_missing_secret_key_fails_the_pod_saying_which(
    kubectl: Kubectl, unwatched_namespace: str
) -> None:
    ns = unwatched_namespace
    _secrets(kubectl, ns, "postgresql://nobody@127.0.0.1:1/none")
    env = [{"name": "DSN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope"}}}]
    _apply(kubectl, ns, _job("no-key", ["backup-run", "--help"], env=env))
    state, pod = _finished(kubectl, ns, "no-key")
    assert state == "Failed"
    assert _terminated(pod)["exitCode"] == 1
    assert _terminated(pod)["message"] == f"env DSN: couldn't find key nope in Secret {ns}/db"


def test_only_dockyard_runs_here(kubectl: Kubectl, unwatched_namespace: str) -> None:
    _apply(kubectl, unwatched_namespace, _job("shell", ["-c", "id"], command=["sh"]))
    state, pod = _finished(kubectl, unwatched_namespace, "shell")
    assert state == "Failed"
    assert _terminated(pod)["exitCode"] == 127
    assert _terminated(pod)["message"] == "only dockyard runner pods run here"


def test_jobs_without_the_runner_label_still_complete_without_running(
    kubectl: Kubectl, unwatched_namespace: str
) -> None:
    _apply(kubectl, unwatched_namespace, _job("plain", ["anything"], command=["sh"], runner=False))
    state, pod = _finished(kubectl, unwatched_namespace, "plain")
    assert state == "Complete"
    assert EXIT_CODE_ANNOTATION not in (pod["metadata"].get("annotations") or {})


def test_the_test_bed_runs_its_stand_in_kubelet_as_one_of_its_processes(
    testbed_state: State,
) -> None:
    [record] = [p for p in testbed_state.processes if p.name == RUNNER_PODS]
    assert record.alive()
    assert Path(record.log).name == "runner-pods.log"
