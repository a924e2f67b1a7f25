"""What a Backup's runner Job may write (manifests/backup-runner-report-policy.yaml), on
the test bed's apiserver: the artifact's fields of its own Backup while it is Running,
and nothing else. RBAC lets the runner's account patch that Backup's status; the
admission policy says which fields.

The Backup lives in a namespace no operator watches, so its status is what the test
writes; the runner is the account the operator makes for it, acted as with ``--as``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dockyard.core.kube import KubeClient, load_config
from dockyard.core.models.backup import Backup
from dockyard.core.resources import BACKUPS
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.runs import jobs
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed", "runner_report_policy")

ARTIFACT = {
    "location": "file:///backups/team/nightly/1-abc.dump",
    "size": 1024,
    "sha256": "a" * 64,
    "keyId": "k1",
    "manifest": {"tables": [{"name": "public.orders", "rows": 3}]},
    "completedAt": "2030-01-01T00:00:00Z",
}


def _backup(kubectl: Kubectl, namespace: str) -> tuple[Backup, str]:
    manifest = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": "nightly", "namespace": namespace},
        "spec": {
            "environmentRef": {"name": "shop"},
            "storage": {"filesystem": {"path": "/backups"}},
            "encryption": {"keySecretRef": {"name": "backup-key", "key": "key"}},
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(manifest))
    created = json.loads(kubectl("get", "backup", "nightly", "-n", namespace, "-o", "json").stdout)
    backup = Backup.model_validate(created)
    for part in jobs.backup_runner_identity(Owner.of(backup)):
        kubectl("apply", "-f", "-", input=json.dumps(part))
    runner = f"system:serviceaccount:{namespace}:{jobs.backup_runner_account(Owner.of(backup))}"
    return backup, runner


async def _status(
    state: State, namespace: str, status: dict[str, Any], as_user: str | None = None
) -> tuple[int, str]:
    """Merge ``status`` into the Backup's status as the test bed's admin, or as
    ``as_user`` (impersonated: the runner's Role has no ``get``, so kubectl's own
    read-then-patch is not how a runner writes)."""
    config = load_config(Path(state.kubeconfig), {})
    client = KubeClient.connect(config)
    headers = {"Content-Type": "application/merge-patch+json"}
    if as_user is not None:
        headers["Impersonate-User"] = as_user
    try:
        async with client.session.patch(
            config.server + BACKUPS.path(namespace, "nightly", "status"),
            data=json.dumps({"status": status}),
            headers=headers,
        ) as answer:
            return answer.status, await answer.text()
    finally:
        await client.close()


def _stored(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    got = kubectl("get", "backup", "nightly", "-n", namespace, "-o", "json").stdout
    return dict(json.loads(got).get("status") or {})


async def test_a_runner_reports_its_artifact_while_running_and_nothing_else(
    kubectl: Kubectl, testbed_state: State, unwatched_namespace: str
) -> None:
    """The attack: a compromised runner (its image, or pg_dump reached through the
    tenant's own database) marks its Backup verified and Completed, so that retention
    keeps it as the newest verified backup and ``latestVerified`` restores it."""
    namespace = unwatched_namespace
    _, runner = _backup(kubectl, namespace)
    assert (await _status(testbed_state, namespace, {"phase": "Running", "attempts": 1}))[0] == 200

    reported = await _status(testbed_state, namespace, ARTIFACT, runner)
    assert reported[0] == 200, reported
    for forged in (
        {"verified": {"drill": "weekly", "at": "2030-01-01T00:00:00Z"}},
        {"phase": "Completed"},
        {"conditions": [{"type": "Verified", "status": "True", "reason": "Passed",
                         "message": "", "lastTransitionTime": "2030-01-01T00:00:00Z"}]},
        {"expiresAt": None, "attempts": 9},
    ):  # fmt: skip
        code, text = await _status(testbed_state, namespace, forged, runner)
        assert code == 403, (forged, code, text)
        assert "may set only the artifact's fields" in text, text

    # Once the operator has completed it, the runner writes nothing more.
    assert (await _status(testbed_state, namespace, {"phase": "Completed"}))[0] == 200
    code, text = await _status(testbed_state, namespace, {"sha256": "b" * 64}, runner)
    assert code == 403
    assert "only while the Backup is Running" in text
    stored = _stored(kubectl, namespace)
    assert stored["sha256"] == "a" * 64
    assert "verified" not in stored
    assert stored["attempts"] == 1


async def test_the_runner_of_an_earlier_backup_of_the_name_reports_nothing_to_the_next(
    kubectl: Kubectl, testbed_state: State, unwatched_namespace: str
) -> None:
    """The attack: a runner whose identity outlived its Backup (deleted with
    ``--cascade=orphan``, or while garbage collection lags) reports its artifact as that
    of a later Backup of the same name, which its Role names."""
    namespace = unwatched_namespace
    _, earlier = _backup(kubectl, namespace)
    kubectl("delete", "backup", "nightly", "-n", namespace, "--cascade=orphan")
    later, runner = _backup(kubectl, namespace)
    assert runner != earlier
    assert (await _status(testbed_state, namespace, {"phase": "Running", "attempts": 1}))[0] == 200

    code, text = await _status(testbed_state, namespace, ARTIFACT, earlier)

    assert code == 403, text
    assert "only to the Backup it was made for" in text
    assert "sha256" not in _stored(kubectl, namespace)
    assert (await _status(testbed_state, namespace, ARTIFACT, runner))[0] == 200
    assert later.metadata.uid in runner


def _pod_spec(account: str, *, deprecated: bool = False) -> dict[str, Any]:
    return {
        ("serviceAccount" if deprecated else "serviceAccountName"): account,
        "restartPolicy": "Never",
        "containers": [{"name": "r", "image": "localhost/dockyard:absent",
                        "command": ["dockyard"], "args": ["--help"]}],
    }  # fmt: skip


def _pod(account: str, **kwargs: bool) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "posing"},
            "spec": _pod_spec(account, **kwargs)}  # fmt: skip


def _job(account: str) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "posing"},
            "spec": {"backoffLimit": 0, "template": {"spec": _pod_spec(account)}}}  # fmt: skip


def test_only_the_operators_jobs_run_as_a_backup_runner_account(
    kubectl: Kubectl, unwatched_namespace: str
) -> None:
    """The attack: a tenant who may create Pods and Jobs in its namespace runs one as
    ``backup-runner-<uid>`` (the uid is on the Backup) and reports an artifact of its
    choosing while the real runner dumps. (The built-in ``edit`` role used here may also
    act as the account through its token or impersonation, which no admission policy
    stops: docs/rbac.md.)"""
    namespace = unwatched_namespace
    _, runner = _backup(kubectl, namespace)
    account = runner.rsplit(":", 1)[1]
    tenant = f"tenant-{namespace}"
    kubectl("create", "rolebinding", "edit", "--clusterrole=edit", f"--user={tenant}",
            "-n", namespace)  # fmt: skip

    def create(manifest: dict[str, Any], user: str | None) -> tuple[int, str]:
        as_user = [f"--as={user}"] if user else []
        done = kubectl("create", "--dry-run=server", "-n", namespace, *as_user, "-f", "-",
                       input=json.dumps(manifest), check=False)  # fmt: skip
        return done.returncode, done.stderr

    for manifest, says in (
        (_pod(account), "only the Job controller makes Pods"),
        (_pod(account, deprecated=True), "only the Job controller makes Pods"),
        (_job(account), "only the Dockyard operator makes Jobs"),
    ):
        code, text = create(manifest, tenant)
        assert code != 0, manifest
        assert says in text, text
        assert account in text
    # Not even the cluster's admin makes such a Pod by hand: only the Job controller.
    code, text = create(_pod(account), None)
    assert code != 0
    assert "only the Job controller" in text, text
    # The tenant's own Pods and Jobs, under its own accounts, are its business.
    assert create(_pod("default"), tenant) == (0, "")
    assert create(_job("default"), tenant)[0] == 0

    # The operator's Job (here the admin's, who holds backups/runner), and the Pod the
    # Job controller makes for it.
    kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(_job(account)))

    def made() -> list[dict[str, Any]]:
        found = kubectl("get", "pods", "-n", namespace, "-l", "job-name=posing", "-o", "json")
        return list(json.loads(found.stdout)["items"])

    pods = wait_for(made, timeout=60)
    assert [p["spec"]["serviceAccountName"] for p in pods] == [account]
