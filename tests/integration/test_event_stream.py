"""``GET /api/v1/events`` streams the durable event log: a client that reconnects with
``Last-Event-ID`` after an API restart gets every event it missed, once, in order; and
each event is shown only to callers who may watch its kind in its namespace.

The events are appended the way the operator appends them (``event_log.append_now``);
the API, its stream and its authorization are the real ones, on the test bed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from dockyard.api.app import create_app
from dockyard.core import event_log, events
from dockyard.core.events import EnvironmentEventData, EventType, ObjectRef, RunEventData
from dockyard.testbed.cluster import State, Testbed
from dockyard.testbed.processes import free_port
from tests.conftest import Kubectl, api_settings

pytestmark = pytest.mark.usefixtures("crds_installed", "platform_migrated")


async def _serve(state: State) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(create_app(api_settings(state)))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner, f"http://127.0.0.1:{port}"


async def _append(state: State, *logged: events.Event) -> None:
    pool = await asyncpg.create_pool(api_settings(state).database_dsn(), min_size=1, max_size=1)
    try:
        await event_log.append_now(pool, list(logged))
    finally:
        await pool.close()


def _backup_completed(namespace: str, name: str) -> events.Event:
    ref = ObjectRef(kind="Backup", namespace=namespace, name=name, uid=str(uuid.uuid4()),
                    generation=1)  # fmt: skip
    return events.make(EventType.BACKUP_COMPLETED, RunEventData(object=ref, phase="Completed"))


def _environment_ready(namespace: str, name: str) -> events.Event:
    ref = ObjectRef(kind="Environment", namespace=namespace, name=name, uid=str(uuid.uuid4()),
                    generation=1)  # fmt: skip
    return events.make(EventType.ENVIRONMENT_READY, EnvironmentEventData(object=ref, phase="Ready"))


class _Sse:
    """The events of one open stream, parsed as an EventSource would."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, within: float = 10) -> dict[str, Any]:
        """The next event that is not a comment (keep-alive)."""
        fields: dict[str, Any] = {}
        async with asyncio.timeout(within):
            while True:
                line = (await self.response.content.readline()).decode().rstrip("\n")
                if not line:
                    if fields:
                        return fields
                    continue
                if line.startswith(":"):
                    continue
                key, _, value = line.partition(": ")
                fields[key] = json.loads(value) if key == "data" else value

    async def logged(self, count: int) -> list[dict[str, Any]]:
        """The next ``count`` logged events (live environment changes are skipped)."""
        found: list[dict[str, Any]] = []
        while len(found) < count:
            event = await self.next()
            if "id" in event:
                found.append(event)
        return found


@contextlib.asynccontextmanager
async def _open(
    http: aiohttp.ClientSession, url: str, token: str, last: str | None = None, **query: str
) -> AsyncIterator[_Sse]:
    headers = {"Authorization": f"Bearer {token}"}
    if last is not None:
        headers["Last-Event-ID"] = last
    async with http.get(f"{url}/api/v1/events", headers=headers, params=query) as response:
        assert response.status == 200, await response.text()
        assert (await response.content.readline()).startswith(b": connected")
        await response.content.readline()
        yield _Sse(response)


def _viewer(kubectl: Kubectl, testbed: Testbed, namespace: str) -> str:
    user = f"vic-{uuid.uuid4().hex[:6]}"
    kubectl("create", "rolebinding", user, "--clusterrole=dockyard-viewer", f"--user={user}",
            "-n", namespace)  # fmt: skip
    return testbed.user_token(user, [])


@pytest.mark.usefixtures("roles")
async def test_a_client_that_reconnects_after_an_api_restart_misses_nothing(
    testbed: Testbed, testbed_state: State, kubectl: Kubectl, namespace: str
) -> None:
    token = _viewer(kubectl, testbed, namespace)
    sent = [_backup_completed(namespace, f"b{i}") for i in range(5)]
    async with aiohttp.ClientSession() as http:
        runner, url = await _serve(testbed_state)
        try:
            async with _open(http, url, token, namespace=namespace) as stream:
                await _append(testbed_state, *sent[:2])
                first = await stream.logged(2)
        finally:
            await runner.cleanup()
        assert [e["data"]["id"] for e in first] == [e.id for e in sent[:2]]
        assert [e["event"] for e in first] == ["backup.completed"] * 2

        # While no API runs, two more events are logged (the operator does not wait).
        await _append(testbed_state, *sent[2:4])
        runner, url = await _serve(testbed_state)
        try:
            async with _open(http, url, token, last=first[-1]["id"], namespace=namespace) as stream:
                missed = await stream.logged(2)
                await _append(testbed_state, sent[4], sent[0])  # sent[0] again: logged once
                live = await stream.logged(1)
        finally:
            await runner.cleanup()
    assert [e["data"]["id"] for e in missed + live] == [e.id for e in sent[2:]]
    seqs = [int(e["id"]) for e in first + missed + live]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 5
    assert missed[0]["data"]["data"]["object"]["name"] == "b2"


@pytest.fixture
def environment_watcher(kubectl: Kubectl, testbed: Testbed, namespace: str) -> str:
    """A user who may watch Environments in the namespace, but not Backups."""
    user = f"eve-{uuid.uuid4().hex[:6]}"
    kubectl("create", "role", "env-watch", "--verb=get,list,watch",
            "--resource=environments.dockyard.io", "-n", namespace)  # fmt: skip
    kubectl("create", "rolebinding", user, "--role=env-watch", f"--user={user}",
            "-n", namespace)  # fmt: skip
    return testbed.user_token(user, [])


@pytest.mark.usefixtures("roles")
async def test_each_event_is_shown_only_to_callers_who_may_watch_its_kind(
    testbed: Testbed,
    testbed_state: State,
    kubectl: Kubectl,
    namespace: str,
    environment_watcher: str,
) -> None:
    viewer = _viewer(kubectl, testbed, namespace)
    backup, ready = _backup_completed(namespace, "b"), _environment_ready(namespace, "e")
    elsewhere = _environment_ready(f"{namespace}-other", "e")
    async with aiohttp.ClientSession() as http:
        runner, url = await _serve(testbed_state)
        try:
            seen: dict[str, list[str]] = {}
            for who, token in (("viewer", viewer), ("env-only", environment_watcher)):
                async with _open(http, url, token, namespace=namespace, lastEventId="0") as stream:
                    await _append(testbed_state, backup, elsewhere, ready)
                    found = []
                    while ready.id not in found:
                        found.append((await stream.next())["data"].get("id"))
                    seen[who] = [i for i in found if i in {backup.id, ready.id, elsewhere.id}]
            async with http.get(
                f"{url}/api/v1/events",
                headers={"Authorization": f"Bearer {viewer}", "Last-Event-ID": "12ab"},
            ) as bad:
                problem = await bad.json()
                status = bad.status
        finally:
            await runner.cleanup()
    assert seen["viewer"] == [backup.id, ready.id]
    assert seen["env-only"] == [ready.id]
    assert status == 422
    assert problem["errors"][0]["field"] == "header.Last-Event-ID"


@pytest.mark.usefixtures("roles")
async def test_a_namespace_made_again_under_its_name_does_not_replay_the_earlier_ones_events(
    testbed: Testbed,
    testbed_state: State,
    kubectl: Kubectl,
    viewer_everywhere: str,
) -> None:
    # An earlier team's namespace logs a backup, then is deleted; its name is used again.
    reused = f"t-reused-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", reused)
    try:
        before = await _last_seq(testbed_state)
        earlier = [_backup_completed(reused, "their-backup"), _environment_ready(reused, "theirs")]
        await _append(testbed_state, *earlier)
        kubectl("delete", "namespace", reused, "--timeout=120s")
        kubectl("create", "namespace", reused)
        newcomer = _viewer(kubectl, testbed, reused)
        own = _backup_completed(reused, "our-backup")
        async with aiohttp.ClientSession() as http:
            runner, url = await _serve(testbed_state)
            try:
                async with _open(http, url, newcomer, last=str(before), namespace=reused) as stream:
                    await _append(testbed_state, own)
                    replayed = await stream.logged(1)
                async with _open(
                    http, url, viewer_everywhere, last=str(before), namespace=reused
                ) as stream:
                    history = await stream.logged(3)
            finally:
                await runner.cleanup()
    finally:
        kubectl("delete", "namespace", reused, "--wait=false", check=False)
    # The newcomer replays from before the earlier namespace's event, and gets only their own.
    assert [e["data"]["id"] for e in replayed] == [own.id]
    # Who may watch backups in every namespace still reads the name's whole history.
    assert [e["data"]["id"] for e in history] == [*(e.id for e in earlier), own.id]


async def _last_seq(state: State) -> int:
    pool = await asyncpg.create_pool(api_settings(state).database_dsn(), min_size=1, max_size=1)
    try:
        return await event_log.last_seq(pool)
    finally:
        await pool.close()


@pytest.fixture
def viewer_everywhere(kubectl: Kubectl, testbed: Testbed) -> Iterator[str]:
    """A user who may read (and watch) Dockyard's kinds in every namespace."""
    user = f"ada-{uuid.uuid4().hex[:6]}"
    kubectl("create", "clusterrolebinding", user, "--clusterrole=dockyard-viewer", f"--user={user}")
    yield testbed.user_token(user, [])
    kubectl("delete", "clusterrolebinding", user, "--wait=false", check=False)
