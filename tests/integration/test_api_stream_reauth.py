"""An open event stream re-checks its caller: a token that stops being valid, or a
RoleBinding that is deleted, ends the stream with a final ``event: error`` problem.

Test bed tokens are OIDC ID tokens the apiserver trusts until they expire (they cannot
be revoked), so the token case uses a token minted to expire a few seconds in.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from dockyard.api import errors
from dockyard.core.models.common import API_VERSION
from dockyard.testbed.cluster import Testbed
from tests.conftest import Kubectl, StartApi

Client = TestClient[object, object]
pytestmark = pytest.mark.usefixtures("crds_installed")

INTERVAL = 1.0
CACHE_TTL = 1.0
# interval + both cache TTLs + room for a slow shared test bed
ENDS_WITHIN = INTERVAL + 2 * CACHE_TTL + 10


@pytest.fixture
async def client(start_api: StartApi) -> Client:
    return await start_api(
        auth_cache_ttl=CACHE_TTL,
        authz_cache_ttl=CACHE_TTL,
        stream_reauth_interval=INTERVAL,
    )


def _bind_viewer(kubectl: Kubectl, namespace: str) -> str:
    user = f"watcher-{uuid.uuid4().hex[:6]}"
    kubectl(
        "create",
        "rolebinding",
        "watcher",
        "--clusterrole=dockyard-viewer",
        f"--user={user}",
        "-n",
        namespace,
    )
    return user


async def _open(client: Client, path: str, token: str) -> ClientResponse:
    stream = await client.get(path, headers={"Authorization": f"Bearer {token}"})
    assert stream.status == 200, await stream.text()
    assert (await stream.content.readline()).startswith(b": connected")
    return stream


async def _final_error(stream: ClientResponse) -> tuple[dict[str, Any], float]:
    """Read until the stream's ``event: error``; its problem and when it came."""
    started = time.monotonic()

    async def read() -> dict[str, Any]:
        event: dict[str, str] = {}
        while True:
            raw = await stream.content.readline()
            if raw == b"":
                raise AssertionError("the stream ended without an error event")
            line = raw.decode().rstrip("\n")
            if not line:
                if event.get("event") == "error":
                    document: dict[str, Any] = json.loads(event["data"])
                    return document
                event = {}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(": ")
            event[field] = value

    try:
        problem = await asyncio.wait_for(read(), timeout=ENDS_WITHIN + 20)
    except TimeoutError:
        raise AssertionError(
            f"the stream was still open {ENDS_WITHIN + 20:g}s after access was gone"
        ) from None
    elapsed = time.monotonic() - started
    # ... and then the stream ends.
    assert await asyncio.wait_for(stream.content.read(), timeout=10) == b""
    return problem, elapsed


@pytest.mark.usefixtures("roles")
async def test_a_deleted_rolebinding_ends_a_namespace_stream(
    client: Client, testbed: Testbed, kubectl: Kubectl, namespace: str
) -> None:
    user = _bind_viewer(kubectl, namespace)
    stream = await _open(
        client, f"/api/v1/events?namespace={namespace}", testbed.user_token(user, [])
    )
    await asyncio.sleep(INTERVAL * 2)  # a re-check that still allows keeps the stream open
    assert not stream.content.at_eof()
    kubectl("delete", "rolebinding", "watcher", "-n", namespace)
    problem, elapsed = await _final_error(stream)
    assert problem["type"] == errors.TYPE_BASE + "forbidden"
    assert problem["status"] == 403
    assert elapsed < ENDS_WITHIN


@pytest.mark.usefixtures("roles")
async def test_a_deleted_rolebinding_ends_an_all_namespaces_stream(
    client: Client, testbed: Testbed, kubectl: Kubectl, namespace: str
) -> None:
    kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": API_VERSION,
                "kind": "Environment",
                "metadata": {"name": "watched"},
                "spec": {"tier": "development", "image": "shop:1.0"},
            }
        ),
    )
    user = _bind_viewer(kubectl, namespace)
    token = testbed.user_token(user, [])
    # The stream shows the namespaces whose environments the API's cache holds when it
    # opens (one that never showed anything has nothing to lose): wait until "watched"
    # is there, and readable.
    for _ in range(60):
        seen = await client.get(
            f"/api/v1/namespaces/{namespace}/environments/watched",
            headers={"Authorization": f"Bearer {token}"},
        )
        if seen.status == 200:
            break
        await asyncio.sleep(0.5)
    assert seen.status == 200, await seen.text()
    stream = await _open(client, "/api/v1/events", token)
    await asyncio.sleep(INTERVAL * 2)
    assert not stream.content.at_eof()
    kubectl("delete", "rolebinding", "watcher", "-n", namespace)
    problem, elapsed = await _final_error(stream)
    assert problem["status"] == 403
    assert elapsed < ENDS_WITHIN


@pytest.mark.usefixtures("roles")
async def test_an_expired_token_ends_the_stream(
    client: Client, testbed: Testbed, kubectl: Kubectl, namespace: str
) -> None:
    user = _bind_viewer(kubectl, namespace)
    lifetime = 6
    token = testbed.user_token(user, [], ttl_seconds=lifetime)
    stream = await _open(client, f"/api/v1/events?namespace={namespace}", token)
    problem, elapsed = await _final_error(stream)
    assert problem["type"] == errors.TYPE_BASE + "unauthorized"
    assert problem["status"] == 401
    assert elapsed < lifetime + ENDS_WITHIN
