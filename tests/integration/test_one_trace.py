"""One trace from REST to the runner: POST a Backup, and the API's span, the operator's
reconcile, the runner Job's run and its storage write share one trace id.

The spans are collected by an OTLP/HTTP receiver in this test, which decodes the
protobuf export requests with the OpenTelemetry protocol's own message types
(``opentelemetry-proto``). The OpenTelemetry Collector was not built for this: the
receiver is all the test needs, and a real exporter (the SDK's OTLP/HTTP one, in three
processes) sends to it. The API runs in this process, the operator in a process of its
own for this test's namespace, and the runner in the Job's pod (the test bed's stand-in
kubelet runs it as a local process).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from pytest_aiohttp import AiohttpClient

from dockyard.api.app import create_app
from dockyard.testbed.cluster import State, Testbed
from dockyard.testbed.processes import free_port
from tests.conftest import Kubectl, api_settings, backup_settings, start_operator, stop_operator
from tests.integration.test_backup_operator import _backup, _environment, _key_secret

pytestmark = pytest.mark.usefixtures("crds_installed", "platform_migrated")


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str


class Receiver:
    """OTLP/HTTP ``/v1/traces``: every span of every export request, decoded."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.url = ""

    async def traces(self, request: web.Request) -> web.Response:
        export = ExportTraceServiceRequest()
        export.ParseFromString(await request.read())
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        Span(
                            service=attributes.get("service.name", ""),
                            name=span.name,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                        )
                    )
        return web.Response(status=200, content_type="application/x-protobuf")

    def in_trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans if s.trace_id == trace_id]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    made = Receiver()
    app = web.Application()
    app.router.add_post("/v1/traces", made.traces)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    made.url = f"http://127.0.0.1:{port}"
    yield made
    await runner.cleanup()


@pytest.fixture
def traced_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A namespace outside the session operator's reach."""
    name = f"traced-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "environments", "--all", "-n", name, "--timeout=60s", check=False)
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def traced_operator(
    kubectl: Kubectl,
    receiver: Receiver,
    traced_namespace: str,
    testbed_env: dict[str, str],
    backup_root: Path,
    tmp_path: Path,
) -> Iterator[None]:
    env = {
        **testbed_env,
        **backup_settings(backup_root),
        "DOCKYARD_RECONCILE_INTERVAL": "3",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    proc = start_operator(traced_namespace, env, tmp_path / "operator.log")
    yield
    # While the operator runs, so that its finalizer lets the environment go.
    kubectl("delete", "environments", "--all", "-n", traced_namespace, "--timeout=60s",
            check=False)  # fmt: skip
    stop_operator(proc)


@pytest.mark.usefixtures("roles")
async def test_one_trace_spans_the_api_the_operator_the_runner_and_the_storage_write(
    receiver: Receiver,
    traced_operator: None,
    traced_namespace: str,
    kubectl: Kubectl,
    testbed: Testbed,
    testbed_state: State,
    backup_root: Path,
    aiohttp_client: AiohttpClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    namespace = traced_namespace
    await asyncio.to_thread(_environment, kubectl, testbed_state, namespace)
    await asyncio.to_thread(_key_secret, kubectl, namespace)
    user = f"dev-{uuid.uuid4().hex[:6]}"
    kubectl("create", "rolebinding", user, "--clusterrole=dockyard-developer",
            f"--user={user}", "-n", namespace)  # fmt: skip
    headers = {"Authorization": f"Bearer {testbed.user_token(user, [])}"}
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
    api = await aiohttp_client(create_app(api_settings(testbed_state)))
    manifest = _backup(namespace, "traced", backup_root, runner="Job")

    async def created() -> Any:
        response = await api.post(
            f"/api/v1/namespaces/{namespace}/backups",
            json={"metadata": {"name": "traced"}, "spec": manifest["spec"]},
            headers=headers,
        )
        if response.status == 201:
            return await response.json()
        assert response.status == 403, await response.text()
        return None

    backup = await _until(created, within=30)  # 403 until the RoleBinding is seen
    trace_id = backup["metadata"]["annotations"]["dockyard.io/traceparent"].split("-")[1]

    def whole() -> bool:
        names = {(s.service, s.name) for s in receiver.in_trace(trace_id)}
        return {
            ("dockyard-operator", "reconcile Backup"),
            ("dockyard-runner", "backup-run"),
            ("dockyard-runner", "storage.write"),
        } <= names and any(s.service == "dockyard-api" for s in receiver.in_trace(trace_id))

    async def complete() -> bool:
        return whole()

    await _until(complete, within=150)
    spans = receiver.in_trace(trace_id)
    by_id = {s.span_id: s for s in spans}
    write = next(s for s in spans if s.name == "storage.write")
    run = by_id[write.parent_id]
    assert (run.service, run.name) == ("dockyard-runner", "backup-run")
    # The runner's run continues a span of the operator's reconcile, which continues
    # the API's request: one chain, not three traces that happen to share an id.
    parent = by_id[run.parent_id]
    chain = []
    while parent is not None:
        chain.append(parent.service)
        parent = by_id.get(parent.parent_id)
    assert "dockyard-operator" in chain
    assert chain[-1] == "dockyard-api"


async def _until(check: Any, within: float) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if found := await check():
            return found
        await asyncio.sleep(0.5)
    raise AssertionError(f"not within {within}s")
