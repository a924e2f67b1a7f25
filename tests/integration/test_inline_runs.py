"""What stops an inline run (``InlineRuns``), with its object on the test bed's real
apiserver: a ConfigMap stands for the Backup, Restore or RestoreDrill, since the watch
reads the object at its path and needs nothing of its kind.

- the object deleted, being deleted, or made again under its name: the run is
  cancelled, saying why;
- past the point of no return (``uninterruptible``) neither that, nor ``cancel``, nor
  the deadline stops it; a cancel asked for just before ends it there, before the
  part that must not be cut short.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from dockyard.core.kube import KubeClient, load_config
from dockyard.operator.runs import inline
from dockyard.operator.runs.inline import (
    InlineRuns,
    RunCancelled,
    RunDeadlineExceeded,
    RunOrphaned,
)
from dockyard.operator.runs.slots import FairSlots
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl

HOLD = "dockyard.io/test-hold"


@pytest.fixture
async def kube(testbed_state: State) -> AsyncIterator[KubeClient]:
    client = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
    yield client
    await client.close()


@pytest.fixture(autouse=True)
def quick_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inline, "GONE_POLL_SECONDS", 0.2)


def _object(kubectl: Kubectl, namespace: str, name: str, *, held: bool = False) -> str:
    """A ConfigMap standing for a run's object; its uid."""
    meta: dict[str, object] = {"name": name, "namespace": namespace}
    if held:
        meta["finalizers"] = [HOLD]
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta}
    made = kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest)).stdout
    return str(json.loads(made)["metadata"]["uid"])


def _path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/configmaps/{name}"


def _runs(kube: KubeClient, deadline: float = 60.0) -> InlineRuns:
    return InlineRuns(kube, FairSlots(2, 2), deadline)


async def _started(runs: InlineRuns, uid: str, started: asyncio.Event) -> None:
    await asyncio.wait_for(started.wait(), 10)
    assert runs.running_here(uid)


async def test_a_run_whose_object_is_deleted_is_cancelled(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    uid = _object(kubectl, namespace, "run")
    runs, started = _runs(kube), asyncio.Event()

    async def work() -> str:
        started.set()
        await asyncio.sleep(30)
        return "finished"

    run = asyncio.create_task(
        runs.run(uid, work(), path=_path(namespace, "run"), namespace=namespace)
    )
    await _started(runs, uid, started)
    kubectl("delete", "configmap", "run", "-n", namespace)

    with pytest.raises(RunOrphaned, match="the run was cancelled: its object was deleted"):
        await asyncio.wait_for(run, 10)
    assert not runs.running_here(uid)


async def test_a_run_whose_object_is_made_again_or_being_deleted_is_cancelled(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    runs = _runs(kube)
    first = _object(kubectl, namespace, "again")
    held = _object(kubectl, namespace, "held", held=True)
    try:
        tasks, started = {}, {uid: asyncio.Event() for uid in (first, held)}

        async def work(uid: str) -> None:
            started[uid].set()
            await asyncio.sleep(30)

        for uid, name in ((first, "again"), (held, "held")):
            tasks[uid] = asyncio.create_task(
                runs.run(uid, work(uid), path=_path(namespace, name), namespace=namespace)
            )
            await _started(runs, uid, started[uid])
        # kubectl blocks the event loop: the watch sees only the object made again.
        kubectl("delete", "configmap", "again", "-n", namespace)
        _object(kubectl, namespace, "again")
        kubectl("delete", "configmap", "held", "-n", namespace, "--wait=false")

        # Made again, or deleted if a read was already on its way: either way orphaned.
        with pytest.raises(RunOrphaned, match="its object was deleted"):
            await asyncio.wait_for(tasks[first], 10)
        with pytest.raises(RunOrphaned, match="its object is being deleted"):
            await asyncio.wait_for(tasks[held], 10)
    finally:
        kubectl("patch", "configmap", "held", "-n", namespace, "--type=merge",
                "-p", '{"metadata":{"finalizers":null}}', check=False)  # fmt: skip


async def test_past_the_point_of_no_return_a_run_goes_to_its_end(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    uid = _object(kubectl, namespace, "switch")
    runs = _runs(kube, deadline=1.0)
    committed, finish = asyncio.Event(), asyncio.Event()

    async def work() -> str:
        await runs.uninterruptible(uid)
        committed.set()
        await finish.wait()
        await asyncio.sleep(1.5)  # past the deadline too
        return "switched over"

    run = asyncio.create_task(
        runs.run(uid, work(), path=_path(namespace, "switch"), namespace=namespace)
    )
    await asyncio.wait_for(committed.wait(), 10)
    kubectl("delete", "configmap", "switch", "-n", namespace)
    await asyncio.sleep(1.0)  # five reads of the object, which is gone

    assert runs.cancel(uid, "told to") is False
    finish.set()
    assert await asyncio.wait_for(run, 10) == "switched over"


async def test_a_cancel_asked_for_before_the_point_of_no_return_ends_the_run_there(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    uid = _object(kubectl, namespace, "early")
    runs, reached = _runs(kube), []

    async def work() -> None:
        # As if the cancel came between two steps: it is raised at the point of no return.
        assert runs.cancel(uid, "a newer run replaced it")
        await runs.uninterruptible(uid)
        reached.append("the switch-over")

    with pytest.raises(RunCancelled, match="a newer run replaced it"):
        await runs.run(uid, work(), path=_path(namespace, "early"), namespace=namespace)
    assert reached == []


async def test_a_run_short_of_its_point_of_no_return_is_stopped_by_its_deadline(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    uid = _object(kubectl, namespace, "slow")
    runs = _runs(kube, deadline=0.5)

    with pytest.raises(RunDeadlineExceeded, match=r"did not finish within 0\.5s"):
        await runs.run(uid, asyncio.sleep(5), path=_path(namespace, "slow"), namespace=namespace)


async def test_a_cancel_some_cleanup_swallowed_still_ends_the_run_at_the_point_of_no_return(
    kubectl: Kubectl, namespace: str, kube: KubeClient
) -> None:
    uid = _object(kubectl, namespace, "swallowed")
    runs, reached = _runs(kube), []

    async def work() -> None:
        assert runs.cancel(uid, "told to")
        with contextlib.suppress(asyncio.CancelledError):  # as a cleanup on the way might
            await asyncio.sleep(5)
        await runs.uninterruptible(uid)
        reached.append("the switch-over")

    with pytest.raises(RunCancelled, match="told to"):
        await runs.run(uid, work(), path=_path(namespace, "swallowed"), namespace=namespace)
    assert reached == []


def _unreachable(state: State, tmp_path: Path) -> Path:
    """The test bed's kubeconfig, at a port where nothing listens: every read fails with
    a connection error, not a KubeError."""
    config = yaml.safe_load(Path(state.kubeconfig).read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = "https://127.0.0.1:9"
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(yaml.safe_dump(config))
    return unreachable


async def test_an_apiserver_the_watch_cannot_reach_neither_stops_nor_breaks_the_run(
    kubectl: Kubectl, namespace: str, testbed_state: State, tmp_path: Path
) -> None:
    kube = KubeClient.connect(load_config(_unreachable(testbed_state, tmp_path), {}))
    runs = _runs(kube)
    try:
        uid = _object(kubectl, namespace, "cut-off")

        async def work() -> str:
            await asyncio.sleep(1.0)  # five failed reads
            return "finished"

        path = _path(namespace, "cut-off")
        assert await runs.run(uid, work(), path=path, namespace=namespace) == "finished"
        assert not runs.running_here(uid)
    finally:
        await kube.close()
