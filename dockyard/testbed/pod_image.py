"""Runner pods in the built image: how the stand-in kubelet runs one under podman.

When podman has a runner pod's image on this machine (``make image``), the pod runs in
it rather than as this checkout's code (``pod_launch.plan_launch`` with ``image``):
``run_in_image`` turns a planned launch into a ``podman run``; ``image_user`` finds
the image (and whom it runs as), ``remove_container`` cleans up after a killed run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from dockyard.testbed import pod_launch


# How the image runs here (podman as root): runc, as crun refuses this kernel's hybrid
# cgroups, and ulimits below the machine's hard ones.
PODMAN_RUNTIME: Final = (
    "--runtime", "runc", "--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096",
)  # fmt: skip


def run_in_image(
    launch: pod_launch.Launch,
    pod: Mapping[str, Any],
    image: str,
    args: list[str],
    inherited: Mapping[str, str],
    user: tuple[int, int],
) -> None:
    """Run the container in ``image`` with podman instead of this checkout's code.

    The private directory is mounted at its own path, so every path already rewritten
    into it (volumes, token, kubeconfig, termination log, TMPDIR) holds inside; so is a
    filesystem storage path (PersistentVolumeClaims are not mounted here). The container
    gets the pod's environment only, from a file (no secret in an argv); host network,
    read-only root, no capabilities. It runs as the image's user, who is given the
    private files and a storage directory this launch creates, except the files of its
    Secret and ConfigMap volumes (``as_a_kubelet_leaves``), and with the pod's
    ``fsGroup`` as a supplementary group, as a container runtime adds it.
    """
    from dockyard.testbed.pod_launch import VolumeFile  # the module that calls this one

    name = f"dockyard-pod-{str(pod['metadata']['uid'])[:18]}"
    own = {k: v for k, v in launch.env.items() if k not in inherited or inherited[k] != v}
    env_file = launch.root / "container.env"
    lines = "".join(f"{key}={value}\n" for key, value in own.items())
    launch.files[env_file] = VolumeFile(PurePosixPath(env_file.name), lines.encode(), 0o600)
    binds = [launch.root, *_storage_paths(args)]
    fs_group = (pod["spec"].get("securityContext") or {}).get("fsGroup")
    groups = [] if fs_group is None else ["--group-add", str(int(fs_group))]
    launch.argv = [
        "podman", "run", "--rm", "--name", name, *PODMAN_RUNTIME, "--network", "host",
        "--read-only", "--tmpfs", "/tmp", "--user", f"{user[0]}:{user[1]}", *groups,  # noqa: S108  # nosec B108  # the container's own tmpfs
        "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges", "--env-file", str(env_file),
        *(f"--volume={path}:{path}" for path in binds), image, *args,
    ]  # fmt: skip
    launch.env = {k: v for k, v in inherited.items() if k in ("PATH", "HOME", "LANG")}
    launch.container, launch.image, launch.owner = name, image, user
    launch.fs_group = None if fs_group is None else int(fs_group)
    launch.storage.extend(binds[1:])


def as_a_kubelet_leaves(launch: pod_launch.Launch) -> None:
    """Give the files of the pod's Secret and ConfigMap volumes back to root, with the
    modes the pod asked for, as a kubelet writes them: with the pod's ``fsGroup`` they
    are that group's, and group-readable (the kubelet adds ``0440`` to a read-only
    volume's files); without one, a ``defaultMode: 0400`` file is root's alone, and an
    image that runs as another user cannot read it, as on a real node."""
    volumes = launch.root / "volumes"
    for path, item in launch.files.items():
        if item.token or not path.is_relative_to(volumes):
            continue
        group = 0 if launch.fs_group is None else launch.fs_group
        os.chown(path, 0, group, follow_symlinks=False)
        path.chmod(item.mode if launch.fs_group is None else item.mode | 0o440)


def _storage_paths(args: list[str]) -> list[Path]:
    """The host directories that ``--storage=file://...`` arguments name."""
    found = []
    for arg in args:
        flag, _, value = arg.partition("=")
        if flag == "--storage" and value.startswith("file://"):
            found.append(Path(unquote(urlsplit(value).path)))
    return found


def image_user(image: str) -> tuple[int, int] | None:
    """The uid and gid ``image`` runs as, when podman has it on this machine (built by
    ``make image``) and this process is root; else None (the pod runs as a process)."""
    podman = shutil.which("podman")
    if podman is None or os.geteuid() != 0:
        return None
    try:
        found = subprocess.run(  # nosec B603  # a fixed argv, no shell
            [podman, "image", "inspect", "--format", "{{.Config.User}}", image],
            capture_output=True,
            check=False,
            timeout=30,
            text=True,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if found.returncode != 0:
        return None
    uid, _, gid = found.stdout.strip().partition(":")
    if not uid:
        return (0, 0)
    if not uid.isdigit() or (gid and not gid.isdigit()):
        return None  # a user name: no way to know its uid here without running it
    return (int(uid), int(gid or uid))


def remove_container(name: str) -> None:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(  # nosec B603 B607  # a fixed argv, no shell
            ["podman", "rm", "--force", "--time", "2", name],
            capture_output=True,
            check=False,
            timeout=60,
        )
