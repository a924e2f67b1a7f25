"""concurrencyPolicy Replace on the real apiserver: the run it replaces is stopped, its
runner Job with it, and a run that completed since the schedule listed it is left be.

``ScheduleRuns._cancel`` runs here as the operator runs it, in a namespace no operator
watches, so each Backup's status is only what the test (and the cancel) writes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
import pytest
from kopf._core.engines import posting

from dockyard.core.kube import KubeClient, load_config
from dockyard.core.models.backup import Backup
from dockyard.core.settings import Settings
from dockyard.operator.backups.schedules import ScheduleRuns
from dockyard.operator.runs.context import RunContext
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl, wait_for
from tests.integration.test_backup_operator import _backup, _get

pytestmark = pytest.mark.usefixtures("crds_installed")


@pytest.fixture
async def runs(testbed_state: State) -> AsyncIterator[ScheduleRuns]:
    # Outside an operator, Kopf has no settings to post Events with: none are posted.
    quiet = kopf.OperatorSettings()
    quiet.posting.enabled = False
    token = posting.settings_var.set(quiet)
    kube = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
    try:
        yield ScheduleRuns(RunContext.create(kube, Settings(), None))
    finally:
        await kube.close()
        posting.settings_var.reset(token)


def _job_backup(kubectl: Kubectl, namespace: str, name: str, phase: str) -> Backup:
    """A Job-mode Backup at ``phase`` and its runner Job (suspended: no pod runs)."""
    kubectl("apply", "-f", "-", input=json.dumps(_backup(namespace, name, Path("/backups"),
                                                         runner="Job")))  # fmt: skip
    status = {"status": {"phase": phase, "attempts": 1}}
    kubectl("patch", "backup", name, "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps(status))  # fmt: skip
    raw = _get(kubectl, namespace, "backup", name)
    assert raw is not None
    owner = {"apiVersion": "dockyard.io/v1alpha1", "kind": "Backup", "name": name,
             "uid": raw["metadata"]["uid"], "controller": True}  # fmt: skip
    job: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"backup-{name}-1", "namespace": namespace,
                     "labels": {"dockyard.io/backup": name}, "ownerReferences": [owner]},
        "spec": {
            "suspend": True,
            "template": {"spec": {"restartPolicy": "Never",
                                  "containers": [{"name": "runner", "image": "dockyard"}]}},
        },
    }  # fmt: skip
    kubectl("apply", "-f", "-", input=json.dumps(job))
    return Backup.model_validate(raw)


async def test_replace_stops_a_job_runs_backup_and_its_job(
    kubectl: Kubectl, unwatched_namespace: str, runs: ScheduleRuns
) -> None:
    namespace = unwatched_namespace
    running = _job_backup(kubectl, namespace, "nightly-1", "Running")

    await runs._cancel({}, running, replaced_by="nightly-2")

    status = (_get(kubectl, namespace, "backup", "nightly-1") or {})["status"]
    assert status["phase"] == "Failed"
    assert "replaced by nightly-2" in status["message"]
    wait_for(lambda: _get(kubectl, namespace, "job", "backup-nightly-1-1") is None, timeout=30)


async def test_replace_leaves_a_backup_that_completed_since_it_was_listed(
    kubectl: Kubectl, unwatched_namespace: str, runs: ScheduleRuns
) -> None:
    namespace = unwatched_namespace
    listed = _job_backup(kubectl, namespace, "nightly-1", "Running")
    # It completes between the schedule's listing and its cancel.
    done = {"status": {"phase": "Completed"}}
    kubectl("patch", "backup", "nightly-1", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", json.dumps(done))  # fmt: skip

    await runs._cancel({}, listed, replaced_by="nightly-2")

    status = (_get(kubectl, namespace, "backup", "nightly-1") or {})["status"]
    assert status["phase"] == "Completed"
    assert _get(kubectl, namespace, "job", "backup-nightly-1-1") is not None
