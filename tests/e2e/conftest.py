"""The e2e suite runs the built image (``make image``, ``DOCKYARD_IMAGE``) with podman.

``make e2e`` builds the image first; a run without podman, or without root for it,
skips the suite with one line that says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Generator
from typing import Any

import pytest

IMAGE = os.environ.get("DOCKYARD_IMAGE", "localhost/dockyard:dev")
# crun refuses this kernel's hybrid cgroups; the defaults ask for more than the hard limits.
RUNTIME = ("--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")

Podman = Callable[..., subprocess.CompletedProcess[str]]

# The deployed platform's containers, whose logs stand beside any failure of a test that
# used them: an Environment that never became Ready is explained there, or nowhere.
CONTAINERS = ("dockyard-e2e-operator", "dockyard-e2e-api")
CONTAINER_LOG_TAIL = 120


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed and "deployed" in getattr(item, "fixturenames", ()):
        for name in CONTAINERS:
            logs = subprocess.run(
                ["podman", "logs", "--tail", str(CONTAINER_LOG_TAIL), name],
                capture_output=True, text=True, check=False, timeout=30,
            )  # fmt: skip
            report.sections.append((f"{name} log (tail)", logs.stdout + logs.stderr))


def _why_not() -> str | None:
    if shutil.which("podman") is None:
        return "podman is not installed (make image installs it)"
    if os.geteuid() != 0:
        return "podman runs the image as root here, and this is not root"
    found = subprocess.run(
        ["podman", "image", "exists", IMAGE], capture_output=True, check=False
    ).returncode
    return None if found == 0 else f"no image {IMAGE}: run make image first"


@pytest.fixture(scope="session")
def podman() -> Podman:
    why = _why_not()
    if why is not None:
        pytest.skip(why)

    def run(
        *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["podman", *args], capture_output=True, text=True, check=check, timeout=timeout
        )

    return run
