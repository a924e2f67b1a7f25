"""The e2e suite runs the built image (``make image``, ``DOCKYARD_IMAGE``) with podman.

``make e2e`` builds the image first; a run without podman, or without root for it,
skips the suite with one line that says why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

import pytest

IMAGE = os.environ.get("DOCKYARD_IMAGE", "localhost/dockyard:dev")
# crun refuses this kernel's hybrid cgroups; the defaults ask for more than the hard limits.
RUNTIME = ("--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096")

Podman = Callable[..., subprocess.CompletedProcess[str]]


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
