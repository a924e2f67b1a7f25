"""``kubectl dockyard`` against the test bed, run as kubectl runs a plugin: the installed
``kubectl-dockyard`` executable, a kubeconfig of the user's own, and the answers read
from its output, its exit status and the objects it made."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console

from dockyard.core.kube import KubeClient, KubeConfig
from dockyard.plugin.approvals import restore_approve
from dockyard.plugin.commands import PluginError, Session
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import Kubectl, remove_backup_store, wait_for
from tests.integration.test_backup_operator import (
    _apply,
    _get,
    _storage,
)
from tests.integration.test_drill_operator import _drill
from tests.integration.test_restore_operator import (
    _backed_up,
    _empty_environment,
    migrated,  # noqa: F401  (the platform schema, for the backup catalog)
)

pytestmark = pytest.mark.usefixtures("operator_process")

PLUGIN = shutil.which("kubectl-dockyard", path=str(Path(sys.executable).parent))


def _kubeconfig(state: State, directory: Path, name: str, token: str | None = None) -> Path:
    """A kubeconfig of ``name``'s own: the admin's cluster, with a token when one is given."""
    admin = yaml.safe_load(Path(state.kubeconfig).read_text())
    if token is not None:
        admin["users"] = [{"name": name, "user": {"token": token}}]
        context = admin["contexts"][0]
        context["context"]["user"] = name
        admin["contexts"] = [context]
        admin["current-context"] = context["name"]
    path = directory / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(admin))
    return path


def _plugin(kubeconfig: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    assert PLUGIN, "kubectl-dockyard is installed with the package"
    return subprocess.run(
        [PLUGIN, *args],
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_kubectl_finds_the_plugin_and_a_wrong_command_line_is_one_line_and_exit_2(
    testbed_state: State, tmp_path: Path
) -> None:
    config = _kubeconfig(testbed_state, tmp_path, "admin")
    assert PLUGIN is not None
    listed = subprocess.run(
        ["kubectl", "plugin", "list"],
        env={**os.environ, "PATH": f"{Path(PLUGIN).parent}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert "kubectl-dockyard" in listed.stdout

    wrong = _plugin(config, "restore", "frobnicate", "x")
    assert wrong.returncode == 2
    assert len(wrong.stderr.strip().splitlines()) == 1
    assert "invalid choice: 'frobnicate'" in wrong.stderr
    assert _plugin(config, "drill", "run", "d", "--timeout", "soon").returncode == 2


def test_a_missing_object_or_kubeconfig_is_one_line_and_exit_1(
    testbed_state: State, namespace: str, tmp_path: Path
) -> None:
    config = _kubeconfig(testbed_state, tmp_path, "admin")
    missing = _plugin(config, "-n", namespace, "status", "nowhere")
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f"kubectl dockyard: error: Environment {namespace}/nowhere not found"
    )
    no_config = _plugin(tmp_path / "absent.kubeconfig", "status", "x")
    assert no_config.returncode == 1
    assert "no kubeconfig at" in no_config.stderr
    assert len(no_config.stderr.strip().splitlines()) == 1


def _exec_kubeconfig(state: State, directory: Path, name: str, script: str) -> Path:
    """A kubeconfig whose user logs in through an exec plugin: ``script``, run by this
    Python, as managed clusters' kubeconfigs run ``aws eks get-token`` and the like."""
    config = yaml.safe_load(_kubeconfig(state, directory, name, "unused").read_text())
    config["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": ["-c", script],
            "env": [{"name": "EXEC_DIR", "value": str(directory)}],
            "interactiveMode": "Never",
            "provideClusterInfo": True,
        }
    }
    path = directory / f"{name}-exec.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_kubeconfig_that_logs_in_through_an_exec_plugin_works_as_kubectls_does(
    kubectl: Kubectl,
    testbed: Testbed,
    testbed_state: State,
    namespace: str,
    tmp_path: Path,
    roles: None,
) -> None:
    """EKS, GKE and AKS kubeconfigs name a program that prints a token: the plugin sent
    no credentials at all, and the apiserver's refusal of system:anonymous read like a
    missing permission."""
    developer = f"dev-{uuid.uuid4().hex[:6]}"
    kubectl("create", "rolebinding", developer, "--clusterrole=dockyard-developer",
            f"--user={developer}", "-n", namespace)  # fmt: skip
    (tmp_path / "token").write_text(testbed.user_token(developer, []))
    script = (
        "import json, os, pathlib\n"
        "d = pathlib.Path(os.environ['EXEC_DIR'])\n"
        "(d / 'asked').write_text(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1',\n"
        "  'kind': 'ExecCredential', 'status': {'token': (d / 'token').read_text(),\n"
        "  'expirationTimestamp': '2999-01-01T00:00:00Z'}}))\n"
    )
    config = _exec_kubeconfig(testbed_state, tmp_path, developer, script)

    expected = f"kubectl dockyard: error: Environment {namespace}/nowhere not found"

    def answered() -> str | None:
        # The RoleBinding may take a moment to reach the authorizer: refused until then.
        said = _plugin(config, "-n", namespace, "status", "nowhere").stderr.strip()
        return said if "refused" not in said else None

    # Authenticated as the developer: a 404 of the namespace's Environment, not a refusal.
    assert wait_for(answered, timeout=30) == expected
    asked = json.loads((tmp_path / "asked").read_text())
    assert asked["kind"] == "ExecCredential"
    assert asked["spec"]["interactive"] is False
    cluster = asked["spec"]["cluster"]
    assert cluster["server"] == testbed_state.apiserver_url
    # The test bed's kubeconfig names its CA by file; the plugin is given it as data.
    ca = Path(testbed_state.directory) / "pki" / "ca.crt"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca.read_bytes()

    failing = _exec_kubeconfig(
        testbed_state, tmp_path, "broken", "import sys; print('tok-SECRET'); sys.exit(3)"
    )
    broke = _plugin(failing, "-n", namespace, "status", "x")
    assert broke.returncode == 1
    assert "exec plugin" in broke.stderr
    assert "exit status 3" in broke.stderr
    assert "tok-SECRET" not in broke.stderr + broke.stdout
    assert len(broke.stderr.strip().splitlines()) == 1


def test_stores_say_which_serve_the_namespace_and_need_cluster_rights(
    kubectl: Kubectl, testbed: Testbed, testbed_state: State, namespace: str, tmp_path: Path
) -> None:
    """Why a Backup waits with StoreNotAllowed, at a glance: the stores that serve the
    namespace by its labels, and those that do not."""
    kubectl("label", "namespace", namespace, "team=blue")
    names = {team: f"store-{team}-{uuid.uuid4().hex[:6]}" for team in ("blue", "red")}
    for team, name in names.items():
        store = {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "BackupStore",
            "metadata": {"name": name},
            "spec": {
                "storage": {"filesystem": {"path": f"/backups/{name}"}},
                "encryption": {"keySecretRef": {"name": "absent", "key": "key"}},
                "namespaceSelector": {"matchLabels": {"team": team}},
            },
        }
        kubectl("apply", "-f", "-", input=json.dumps(store))
    try:
        shown = _plugin(_kubeconfig(testbed_state, tmp_path, "admin"), "-n", namespace, "stores")
        assert shown.returncode == 0, shown.stderr
        rows = {
            line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[1:-1]]
            for line in shown.stdout.splitlines()
            if line.count("│") > 2 and "store-" in line
        }
        assert rows[names["blue"]][3:5] == ["yes", "team=blue"]
        assert rows[names["red"]][3:5] == ["no", "team=red"]
        # A developer's roles are namespaced: no BackupStore is theirs to read.
        developer = f"dev-{uuid.uuid4().hex[:6]}"
        kubectl("create", "rolebinding", developer, "--clusterrole=dockyard-developer",
                f"--user={developer}", "-n", namespace)  # fmt: skip
        as_developer = _kubeconfig(
            testbed_state, tmp_path, developer, testbed.user_token(developer, [])
        )
        refused = _plugin(as_developer, "-n", namespace, "stores")
        assert refused.returncode == 1
        assert refused.stderr.startswith("kubectl dockyard: error: the apiserver refused:")
        assert len(refused.stderr.strip().splitlines()) == 1
    finally:
        for name in names.values():
            remove_backup_store(kubectl, name)


def test_status_backup_and_drill_of_an_environment(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path, tmp_path: Path
) -> None:
    _backed_up(kubectl, testbed_state, namespace, backup_root)
    config = _kubeconfig(testbed_state, tmp_path, "admin")

    # The plugin shows the Environment's status, whose lastBackup the reconciler's next
    # pass writes once the Backup has completed.
    def last_backup() -> object:
        environment = _get(kubectl, namespace, "environment", "shop") or {}
        return (environment.get("status", {}).get("lastBackup") or {}).get("name")

    assert wait_for(last_backup, timeout=30) == "nightly"
    shown = _plugin(config, "-n", namespace, "status", "shop")
    assert shown.returncode == 0, shown.stderr
    assert f"{namespace}/shop" in shown.stdout
    assert "Ready" in shown.stdout
    assert "Last backup" in shown.stdout
    assert "nightly" in shown.stdout
    assert "RPO" in shown.stdout
    assert "ago" in shown.stdout

    # A backup now, with the storage and key of the environment's schedule.
    _apply(
        kubectl,
        namespace,
        {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "BackupSchedule",
            "metadata": {"name": "shop-nightly"},
            "spec": {
                "environmentRef": {"name": "shop"},
                "schedule": "@yearly",
                "suspend": True,
                "template": {
                    "storage": _storage(backup_root, namespace),
                    "encryption": {"keySecretRef": {"name": "backup-key", "key": "key"}},
                },
            },
        },
    )
    taken = _plugin(config, "-n", namespace, "backup", "shop", "--name", "now", "--wait")
    assert taken.returncode == 0, taken.stderr
    assert "backup now Completed" in taken.stdout
    backup = _get(kubectl, namespace, "backup", "now") or {}
    assert backup["spec"]["environmentRef"] == {"name": "shop"}
    assert backup["spec"]["storage"] == _storage(backup_root, namespace)
    assert backup["status"]["phase"] == "Completed"

    # A drill now, followed to its result.
    _apply(kubectl, namespace, _drill("weekly"))
    drilled = _plugin(config, "-n", namespace, "drill", "run", "weekly", "--watch")
    assert drilled.returncode == 0, drilled.stdout + drilled.stderr
    assert "Passed" in drilled.stdout
    last_run = (_get(kubectl, namespace, "restoredrill", "weekly") or {})["status"]["lastRun"]
    assert last_run["result"] == "Passed"


@pytest.mark.usefixtures("approval_policy")
def test_plan_create_approve_by_another_user_and_wait_for_a_production_restore(
    kubectl: Kubectl,
    testbed: Testbed,
    testbed_state: State,
    namespace: str,
    backup_root: Path,
    tmp_path: Path,
) -> None:
    _backed_up(kubectl, testbed_state, namespace, backup_root)
    _empty_environment(kubectl, namespace, "live", tier="production", replicas=2)
    alice, bob = f"alice-{uuid.uuid4().hex[:5]}", f"bob-{uuid.uuid4().hex[:5]}"
    for user in (alice, bob):
        kubectl(
            "create", "rolebinding", user, "--clusterrole=dockyard-operator", f"--user={user}",
            "-n", namespace,
        )  # fmt: skip
    as_alice = _kubeconfig(testbed_state, tmp_path, alice, testbed.user_token(alice, []))
    as_bob = _kubeconfig(testbed_state, tmp_path, bob, testbed.user_token(bob, []))
    wait_for(lambda: _plugin(as_bob, "-n", namespace, "status", "live").returncode == 0, 30)

    planned = _plugin(
        as_alice, "-n", namespace, "restore", "plan", "promote", "--backup", "nightly",
        "--into", "live",
    )  # fmt: skip
    assert planned.returncode == 0, planned.stderr
    assert "nightly of shop" in planned.stdout
    assert "required (another user)" in planned.stdout
    restore: dict[str, Any] = _get(kubectl, namespace, "restore", "promote") or {}
    assert restore["spec"]["dryRun"] is True
    assert restore["metadata"]["annotations"]["dockyard.io/requested-by"] == alice

    carried = _plugin(as_alice, "-n", namespace, "restore", "create", "promote")
    assert carried.returncode == 0, carried.stderr
    wait_for(
        lambda: (
            ((_get(kubectl, namespace, "restore", "promote") or {}).get("status") or {}).get(
                "phase"
            )
            == "AwaitingApproval"
        ),
        120,
    )

    own = _plugin(as_alice, "-n", namespace, "restore", "approve", "promote", "--yes")
    assert own.returncode == 1
    assert f"you ({alice}) requested restore promote" in own.stderr
    unasked = _plugin(as_bob, "-n", namespace, "restore", "approve", "promote")
    assert unasked.returncode == 1  # no terminal to ask in, and no --yes
    assert "pass --yes" in unasked.stderr

    approved = _plugin(as_bob, "-n", namespace, "restore", "approve", "promote", "--yes")
    assert approved.returncode == 0, approved.stderr
    assert "Safety backup" in approved.stdout  # the plan is shown before approving
    assert f"restore promote approved by {bob}" in approved.stdout

    waited = _plugin(as_alice, "-n", namespace, "restore", "wait", "promote", "--timeout", "240")
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "restore promote Completed" in waited.stdout
    status = (_get(kubectl, namespace, "restore", "promote") or {})["status"]
    assert status["approval"]["approvedBy"] == bob
    assert status["progress"]["bytesDone"] == status["progress"]["bytesTotal"]


def _awaiting_restore(kubectl: Kubectl, namespace: str, backup: str) -> None:
    """A planned Restore waiting for approval, as the operator would leave it (made by
    the admin, who then approves it: no requested-by, which the admission policy would
    hold to the admin)."""
    restore = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Restore",
        "metadata": {"name": "promote", "namespace": namespace},
        "spec": {"source": {"backupRef": {"name": backup}}},
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(restore))
    waiting = json.dumps({"status": {"phase": "AwaitingApproval"}})
    kubectl("patch", "restore", "promote", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", waiting)  # fmt: skip


async def test_an_approval_lands_only_on_the_restore_that_was_shown(
    kubectl: Kubectl, testbed_state: State, unwatched_namespace: str
) -> None:
    """The attack: while an approver reads the plan at the prompt, the requester deletes
    the Restore and makes another under its name (another backup); the approval must not
    land on the one nobody saw."""
    namespace = unwatched_namespace
    _awaiting_restore(kubectl, namespace, "nightly")
    kube = KubeClient.connect(KubeConfig.from_kubeconfig(Path(testbed_state.kubeconfig)))
    session = Session(kube, namespace, Console(file=io.StringIO(), width=160))

    def swapped(question: str) -> bool:
        kubectl("delete", "restore", "promote", "-n", namespace)
        _awaiting_restore(kubectl, namespace, "ancient")
        return True

    def touched(question: str) -> bool:
        # The operator writing its status meanwhile changes no spec and no plan.
        note = json.dumps({"status": {"message": "waiting for approval"}})
        kubectl("patch", "restore", "promote", "-n", namespace, "--subresource=status",
                "--type=merge", "-p", note)  # fmt: skip
        return True

    try:
        with pytest.raises(PluginError, match="changed while you were asked"):
            await restore_approve(session, "promote", yes=False, confirm=swapped)
        unseen = _get(kubectl, namespace, "restore", "promote") or {}
        assert unseen["spec"]["source"]["backupRef"]["name"] == "ancient"
        assert "dockyard.io/approved-by" not in (unseen["metadata"].get("annotations") or {})

        assert await restore_approve(session, "promote", yes=False, confirm=touched) == 0
        seen = _get(kubectl, namespace, "restore", "promote") or {}
        assert seen["metadata"]["annotations"]["dockyard.io/approved-by"]
    finally:
        await kube.close()


def test_a_reject_writes_who_and_why_and_refuses_what_it_cannot_reject(
    kubectl: Kubectl, testbed_state: State, unwatched_namespace: str, tmp_path: Path
) -> None:
    namespace = unwatched_namespace
    _awaiting_restore(kubectl, namespace, "nightly")
    config = _kubeconfig(testbed_state, tmp_path, "admin")
    reject = ("-n", namespace, "restore", "reject", "promote", "--yes")

    wordy = _plugin(config, *reject, "--reason", "x" * 257)
    assert wordy.returncode == 1
    assert wordy.stderr.strip() == "kubectl dockyard: error: keep --reason to 256 characters"

    done = _plugin(config, *reject, "--reason", "wrong backup")
    assert done.returncode == 0, done.stderr
    assert "rejected by" in done.stdout
    annotations = (_get(kubectl, namespace, "restore", "promote") or {})["metadata"]["annotations"]
    assert annotations["dockyard.io/rejected-by"]
    assert annotations["dockyard.io/rejection-reason"] == "wrong backup"
    approve = _plugin(config, "-n", namespace, "restore", "approve", "promote", "--yes")
    assert approve.returncode == 1
    assert "restore promote was rejected by" in approve.stderr

    failed = json.dumps({"status": {"phase": "Failed"}})
    kubectl("patch", "restore", "promote", "-n", namespace, "--subresource=status",
            "--type=merge", "-p", failed)  # fmt: skip
    late = _plugin(config, *reject)
    assert late.returncode == 1
    assert late.stderr.strip().endswith("restore promote is Failed, not AwaitingApproval")
