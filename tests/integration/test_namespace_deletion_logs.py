"""Deleting a namespace does not fill the operator's log with errors.

When a namespace goes, its objects' finalizers still post Events, and the apiserver
refuses each one (the namespace is terminating). Kopf retries every post for about a
minute and logged each attempt at ERROR. Here a real operator watches a namespace with
one Backup whose deletion posts a Warning (its storage is outside the operator's
backup root, so its artifacts cannot be deleted); the namespace is deleted, and the
operator's own log (at DEBUG) shows the post refused, at DEBUG, never at ERROR.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import Kubectl, start_operator, stop_operator, wait_for
from tests.integration.test_inline_runner_boundaries import _operator_env

pytestmark = pytest.mark.usefixtures("crds_installed")

REFUSED = "NamespaceTerminating"


def _posting_lines(log: Path) -> list[dict[str, object]]:
    """The operator's log records of Kopf's Event poster that mention ``REFUSED``."""
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if REFUSED not in line or "kopf._core.engines.posting" not in line:
            continue
        try:
            found.append(json.loads(line))
        except ValueError:
            found.append({"raw": line})
    return found


def test_a_deleted_namespaces_refused_event_posts_are_no_errors(
    kubectl: Kubectl, testbed_env: dict[str, str], backup_root: Path, tmp_path: Path
) -> None:
    namespace = f"gone-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", namespace)
    log = tmp_path / "operator.log"
    env = {**_operator_env(testbed_env, backup_root), "DOCKYARD_LOG_LEVEL": "DEBUG"}
    proc: subprocess.Popen[bytes] | None = start_operator(namespace, env, log)
    try:
        backup = {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Backup",
            "metadata": {"name": "stray", "namespace": namespace},
            "spec": {
                "environmentRef": {"name": "absent"},
                "storage": {"filesystem": {"path": "/srv/elsewhere"}},
                "encryption": {"keySecretRef": {"name": "key", "key": "key"}},
            },
        }
        kubectl("create", "-f", "-", input=json.dumps(backup))

        def guarded() -> bool | None:
            found = kubectl("get", "backup", "stray", "-n", namespace, "-o", "json", check=False)
            meta = json.loads(found.stdout or "{}").get("metadata") or {}
            return bool(meta.get("finalizers")) or None

        assert wait_for(guarded, timeout=30)

        kubectl("delete", "namespace", namespace, "--wait=false")

        # The Backup's finalizer posts ArtifactNotDeleted; the apiserver refuses it.
        assert wait_for(lambda: _posting_lines(log) or None, timeout=60)
        stop_operator(proc)
        proc = None
        levels = [str(line.get("level", "?")).upper() for line in _posting_lines(log)]
        assert "ERROR" not in levels, levels
        assert "DEBUG" in levels, levels
    finally:
        if proc is not None:
            stop_operator(proc)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)
