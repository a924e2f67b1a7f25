"""``make dev``, the README's first command: the whole platform starts on this machine,
answers, and stops on one Ctrl-C, taking down the test bed it started.

It runs after the other suites (``make quickstart``, part of ``make test``), on a test
bed of its own: ``dockyard dev`` applies the examples into ``default`` and runs an
operator that watches every namespace, which no other test should share.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from dockyard.testbed.cluster import Testbed
from tests.conftest import ROOT, free_port, wait_for

READY_LINE = "Dockyard is running:"


def _get(url: str) -> tuple[int, bytes]:
    try:
        # A URL this test builds: http on 127.0.0.1.
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310  # nosec B310
            return response.status, response.read()
    except OSError:
        return 0, b""


def _kubectl_json(*args: str) -> dict[str, Any]:
    state = Testbed().require()
    out = subprocess.run(
        [str(Path(state.bin_dir) / "kubectl"), *args, "-o", "json"],
        env={**os.environ, **state.env()},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)


def test_make_dev_starts_the_platform_and_one_ctrl_c_stops_it(tmp_path: Path) -> None:
    if Testbed().running() is not None:
        pytest.skip("a test bed is up: dockyard dev would apply its examples into it")
    port, log = free_port(), tmp_path / "dev.log"
    with log.open("wb") as out:
        dev = subprocess.Popen(
            [sys.executable, "-m", "dockyard.cli", "dev", "--port", str(port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the Ctrl-C below reaches dev alone, as a terminal's would
        )
    try:

        def started() -> bool:
            if dev.poll() is not None:
                output = log.read_text()
                raise AssertionError(f"dockyard dev exited with {dev.returncode}:\n{output}")
            return READY_LINE in log.read_text()

        wait_for(started, timeout=300, interval=1)
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _get(f"{base}/readyz")[0] == 200, timeout=60)
        status, body = _get(f"{base}/api/v1/openapi.json")
        assert status == 200
        assert "/api/v1/namespaces/{namespace}/environments" in json.loads(body)["paths"]
        # manifests/ and the self-contained examples are in the cluster.
        policies = _kubectl_json("get", "ratelimitpolicies", "-n", "dockyard-system")
        assert {p["metadata"]["name"] for p in policies["items"]} >= {"per-subject"}
        environments = _kubectl_json("get", "environments", "-n", "default")
        names = {e["metadata"]["name"] for e in environments["items"]}
        assert {"shop-dev", "shop-staging", "shop"} <= names
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            code = dev.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(dev.pid, signal.SIGKILL)
            raise
    output = log.read_text()
    assert code == 0, output
    assert "[dev] test bed stopped" in output
    deadline = time.monotonic() + 5
    while Testbed().running() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert Testbed().running() is None
