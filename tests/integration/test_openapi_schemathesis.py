"""The OpenAPI document tells the truth: schemathesis runs every check against the live
API with a real token (fuzzing, the coverage phase and the stateful phase over the
document's links) and finds 0 failures.

The configuration, with each exception and its reason, is ``schemathesis.toml`` beside
this file. The seed is fixed, so a failure replays; the examples are bounded, so the run
takes a few minutes.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from xml.etree import ElementTree

import pytest
from aiohttp import web

from dockyard.api.app import create_app
from dockyard.testbed.cluster import State, Testbed
from dockyard.testbed.processes import free_port
from tests.conftest import Kubectl, api_settings

pytestmark = pytest.mark.usefixtures("crds_installed", "platform_migrated")

CONFIG = Path(__file__).with_name("schemathesis.toml")
SEED = "20261204"
MAX_EXAMPLES = "5"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.usefixtures("roles")
async def test_schemathesis_finds_no_failure_in_the_live_api(
    kubectl: Kubectl, testbed: Testbed, testbed_state: State, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    namespace, limits = f"st-{suffix}", f"st-{suffix}-limits"
    admin = f"schemathesis-{suffix}"
    kubectl("create", "clusterrolebinding", admin, "--clusterrole=dockyard-admin",
            f"--user={admin}")  # fmt: skip
    for name in (namespace, limits):
        kubectl("create", "namespace", name)
    runner = web.AppRunner(create_app(api_settings(testbed_state)))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    junit = tmp_path / "schemathesis.xml"
    try:
        await asyncio.sleep(1)  # the ClusterRoleBinding reaches the authorizer
        run = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "--config-file", str(CONFIG),
            "--no-color",
            "run", f"http://127.0.0.1:{port}/api/v1/openapi.json",
            "--header", f"Authorization: Bearer {testbed.user_token(admin, [])}",
            "--seed", SEED,
            "--max-examples", MAX_EXAMPLES,
            # One worker: hypothesis's lambda descriptions race in CPython 3.11's ast.
            "--workers", "1",
            "--generation-database", "none",
            "--report", "junit", "--report-junit-path", str(junit),
            cwd=tmp_path,
            env={
                **os.environ,
                "SCHEMATHESIS_NAMESPACE": namespace,
                "SCHEMATHESIS_LIMITS_NAMESPACE": limits,
            },
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(run.communicate(), timeout=900)
    finally:
        await runner.cleanup()
        for name in (namespace, limits):
            kubectl("delete", "namespace", name, "--wait=false")
        kubectl("delete", "clusterrolebinding", admin)
    text = output.decode(errors="replace")
    assert run.returncode == 0, text[-20000:]
    suite = ElementTree.parse(junit).getroot()  # noqa: S314 (the report this run wrote)
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    assert suite is not None
    # Each of the 52 operations (all but the apiserver's audit sink) is a test case,
    # besides the stateful run; none failed.
    assert int(suite.get("tests", "0")) >= 52
    assert (suite.get("failures"), suite.get("errors")) == ("0", "0")
    assert "Stateful" in text[text.rfind("SUMMARY") :]
