"""What stands in for the test bed's nodes: kwok's fake nodes, and ``runner-pods``.

kwok marks the fake nodes Ready and moves their pods through their phases without
running anything (``stages.yaml``), so Deployments become Available and Jobs complete.
Runner pods are the exception: the ``runner-pods`` process (see ``runner_pods``) runs
each as a process on this machine, as a kubelet would.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import resources
from pathlib import Path

import yaml

from dockyard.testbed.processes import Launcher, TestbedError

NODE_ANNOTATION = "kwok.x-k8s.io/node"
RUNNER_PODS = "runner-pods"


def start_kwok(launcher: Launcher, kubeconfig: Path, port: int) -> None:
    """kwok, managing the nodes annotated ``NODE_ANNOTATION=fake`` with our stages."""
    stages = resources.files("dockyard.testbed").joinpath("stages.yaml").read_text()
    stages_path = launcher.dir / "kwok-stages.yaml"
    stages_path.write_text(stages)
    launcher.spawn(
        "kwok",
        [
            str(launcher.bin.path("kwok")),
            f"--kubeconfig={kubeconfig}",
            f"--config={stages_path}",
            "--manage-all-nodes=false",
            f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
            "--node-lease-duration-seconds=40",
            "--cidr=10.244.0.0/16",
            "--node-ip=10.240.0.1",
            f"--server-address=127.0.0.1:{port}",
        ],
    )


def create_nodes(launcher: Launcher, admin: Path) -> None:
    """Create ``config.nodes`` fake nodes across three zones and wait until they are Ready."""
    nodes = [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"kwok-node-{index}",
                "annotations": {NODE_ANNOTATION: "fake"},
                "labels": {
                    "type": "kwok",
                    "kubernetes.io/hostname": f"kwok-node-{index}",
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    "topology.kubernetes.io/zone": f"zone-{index % 3}",
                },
            },
        }
        for index in range(launcher.config.nodes)
    ]
    manifest = yaml.safe_dump_all(nodes)
    kubectl = [str(launcher.bin.path("kubectl")), f"--kubeconfig={admin}"]
    subprocess.run(
        [*kubectl, "apply", "-f", "-"],
        input=manifest,
        text=True,
        capture_output=True,
        check=True,
    )
    launcher.progress(f"kwok: waiting for {len(nodes)} fake node(s) to be Ready")
    result = subprocess.run(
        [
            *kubectl,
            "wait",
            "--for=condition=Ready",
            "node",
            "--all",
            f"--timeout={int(launcher.config.start_timeout)}s",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise TestbedError(
            f"fake nodes never became Ready: {result.stderr}\n{launcher.tail('kwok')}"
        )


def start_runner_pods(launcher: Launcher, admin: Path) -> None:
    """The stand-in kubelet that runs runner pods here (kwok runs no containers)."""
    launcher.spawn(
        RUNNER_PODS,
        [
            sys.executable,
            "-m",
            "dockyard.testbed.runner_pods",
            "--kubeconfig",
            str(admin),
            "--work-dir",
            str(launcher.dir),
        ],
    )
