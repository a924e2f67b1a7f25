"""The image as built: it runs as uid 10001 on a read-only root filesystem, carries
pg_dump of the server's major version, and holds no compiler and no pip cache."""

from __future__ import annotations

import re
import subprocess

import pytest

from dockyard import __version__
from dockyard.testbed.cluster import State
from tests.e2e.conftest import IMAGE, RUNTIME, Podman

# As the manifests run it: read-only, /tmp an emptyDir (here a tmpfs), no root.
LOCKED = (*RUNTIME, "--read-only", "--tmpfs", "/tmp", "--user", "10001:10001")  # noqa: S108


def _run(podman: Podman, *command: str, entrypoint: str | None = None) -> str:
    args = ["run", "--rm", *LOCKED]
    if entrypoint is not None:
        args += ["--entrypoint", entrypoint]
    return podman(*args, IMAGE, *command).stdout


def test_dockyard_runs_as_10001_on_a_read_only_root(podman: Podman) -> None:
    assert _run(podman, "--version").strip() == f"dockyard {__version__}"
    assert _run(podman, "-u", entrypoint="id").strip() == "10001"
    # Nothing can be written outside /tmp.
    refused = podman(
        "run", "--rm", *LOCKED, "--entrypoint", "touch", IMAGE, "/opt/x", check=False
    )  # fmt: skip
    assert refused.returncode != 0
    assert "Read-only file system" in refused.stderr
    config = podman("image", "inspect", "--format", "{{.Config.User}}", IMAGE).stdout.strip()
    assert config == "10001:10001"


def test_pg_dump_is_of_the_servers_major_version(podman: Podman, testbed_state: State) -> None:
    server = subprocess.run(
        ["psql", testbed_state.database_url, "-tAc", "SHOW server_version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    major = server.split(".")[0].strip()
    assert major.isdigit(), server
    for tool in ("pg_dump", "pg_restore"):
        shown = _run(podman, "--version", entrypoint=tool)
        assert re.search(rf"\(PostgreSQL\) {major}\.\d+", shown), shown


@pytest.mark.parametrize("tool", ["gcc", "cc", "c++", "make", "pip", "pip3"])
def test_no_compiler_and_no_pip_in_the_runtime(podman: Podman, tool: str) -> None:
    found = podman(
        "run", "--rm", *LOCKED, "--entrypoint", "sh", IMAGE, "-c", f"command -v {tool}",
        check=False,
    )  # fmt: skip
    assert found.returncode != 0, found.stdout


def test_no_pip_cache_or_build_leftovers(podman: Podman) -> None:
    leftovers = podman(
        "run", "--rm", *RUNTIME, "--user", "0", "--entrypoint", "sh", IMAGE, "-c",
        "ls -d /root/.cache /root/.cache/pip /src /wheels /var/lib/apt/lists/*.gz 2>/dev/null;"
        " find / -xdev -name '*.whl' 2>/dev/null | head -5",
        check=False,
    )  # fmt: skip
    assert leftovers.stdout.strip() == ""


def test_the_plugin_and_the_runner_are_in_the_image(podman: Podman) -> None:
    assert _run(podman, "--version", entrypoint="kubectl-dockyard").strip().endswith(__version__)
    usage = _run(podman, "backup-run", "--help")
    assert "--storage" in usage
