"""The test bed is a real, RBAC-enforcing control plane with fake nodes and dynamic users."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from dockyard.testbed import versions
from dockyard.testbed.cluster import Testbed, TestbedConfig
from dockyard.testbed.faults import crashed
from dockyard.testbed.processes import accepts
from tests.conftest import Kubectl, get_json, wait_for


def test_apiserver_reports_the_pinned_version(kubectl: Kubectl) -> None:
    version = json.loads(kubectl("get", "--raw", "/version").stdout)
    assert version["gitVersion"] == versions.KUBERNETES


def test_user_token_authenticates_as_exactly_that_user_and_groups(
    testbed: Testbed, kubectl: Kubectl
) -> None:
    token = testbed.user_token("carol", ["qa", "dockyard:viewers"])
    review = json.loads(kubectl("auth", "whoami", "-o", "json", token=token).stdout)
    assert review["status"]["userInfo"]["username"] == "carol"
    assert set(review["status"]["userInfo"]["groups"]) == {
        "qa",
        "dockyard:viewers",
        "system:authenticated",
    }


def test_user_without_a_role_is_denied_until_bound(
    testbed: Testbed, kubectl: Kubectl, namespace: str
) -> None:
    token = testbed.user_token("dave", [])
    denied = kubectl("auth", "can-i", "list", "pods", "-n", namespace, token=token, check=False)
    assert denied.stdout.strip() == "no"
    assert denied.returncode == 1
    kubectl(
        "create", "rolebinding", "dave-view", "--clusterrole=view", "--user=dave", "-n", namespace
    )
    allowed = wait_for(
        lambda: (
            kubectl(
                "auth", "can-i", "list", "pods", "-n", namespace, token=token, check=False
            ).stdout.strip()
            == "yes"
        ),
        timeout=10,
    )
    assert allowed


def test_a_forged_token_is_unauthorized(kubectl: Kubectl) -> None:
    result = kubectl("get", "pods", token="not-a-real-token", check=False)
    assert result.returncode != 0
    assert "Unauthorized" in result.stderr


def test_deployments_become_available_and_jobs_complete_on_fake_nodes(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl(
        "create",
        "deployment",
        "web",
        "--image=registry.example/web:1.0",
        "--replicas=2",
        "-n",
        namespace,
    )
    kubectl(
        "create", "job", "once", "--image=registry.example/task:1.0", "-n", namespace, "--", "true"
    )
    kubectl("wait", "--for=condition=Available", "deployment/web", "-n", namespace, "--timeout=60s")
    kubectl("wait", "--for=condition=Complete", "job/once", "-n", namespace, "--timeout=60s")
    deployment = get_json(kubectl, "deployment", "web", "-n", namespace)
    assert deployment["status"]["availableReplicas"] == 2  # type: ignore[index]


def test_testbed_env_exports_work_in_a_shell(testbed_state: object) -> None:
    script = (
        f'eval "$({sys.executable} -m dockyard.cli testbed env)" && '
        "kubectl get --raw /readyz && echo && "
        'echo "$DOCKYARD_DATABASE_URL" && echo "$DOCKYARD_REDIS_URL"'
    )
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "ok"
    assert lines[1].startswith("postgresql://dockyard:")
    assert lines[2].startswith("redis://127.0.0.1:")


def test_testbed_up_again_says_it_is_already_up(testbed_state: object) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dockyard.cli", "testbed", "up"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "already up" in result.stdout


@pytest.fixture
def second_bed(tmp_path: Path, testbed: Testbed) -> Testbed:
    """Another test bed with its own state file, to stop and crash at will."""
    config = TestbedConfig(
        cache_dir=testbed.config.cache_dir, state_file=tmp_path / "state.json", nodes=1
    )
    return Testbed(config, progress=lambda _: None)


def test_down_stops_every_process_and_removes_the_directory(second_bed: Testbed) -> None:
    state, already = second_bed.up()
    assert not already
    assert all(p.alive() for p in state.processes)
    assert {p.name for p in state.processes} >= {
        "etcd",
        "kube-apiserver",
        "postgres",
        "redis",
        "kwok",
        "oidc",
    }
    assert second_bed.down()
    assert not any(p.alive() for p in state.processes)
    assert not Path(state.directory).exists()
    assert second_bed.state() is None


def test_up_cleans_up_after_a_crashed_run(second_bed: Testbed) -> None:
    import os
    import signal

    first, _ = second_bed.up()
    etcd = next(p for p in first.processes if p.name == "etcd")
    os.killpg(etcd.pid, signal.SIGKILL)  # the crash: one component dies, the rest linger
    wait_for(lambda: not etcd.alive(), timeout=10)
    second, already = second_bed.up()
    try:
        assert not already
        assert not any(p.alive() for p in first.processes)
        assert not Path(first.directory).exists()
        assert all(p.alive() for p in second.processes)
    finally:
        second_bed.down()


@pytest.mark.alone  # it kills the shared test bed's Redis
def test_a_crashed_process_is_restarted_in_place_and_recorded(testbed: Testbed) -> None:
    before = testbed.require()
    port = urlsplit(before.redis_url).port or 6379
    with crashed(testbed, "redis") as killed:
        assert not accepts(port)
        assert not killed.alive()
    after = testbed.require()  # healthy again: every recorded process runs
    restarted = next(p for p in after.processes if p.name == "redis")
    assert restarted.pid != killed.pid
    assert restarted.argv == killed.argv
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(16) == b"+PONG\r\n"
