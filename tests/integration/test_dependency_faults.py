"""The API while one of its dependencies hangs (SIGSTOP), and after it returns (SIGCONT).

Each test stops one test bed process group, PostgreSQL's (the server and every backend)
or Redis's, for a few seconds and checks what a client sees meanwhile: answers within
the deadlines, 503 problem+json with ``Retry-After`` as the only server error, reads
from the watch caches going on, no write without its audit row, ``/readyz`` within a
second and honest about what it needs; then recovery within 5 s of the return.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from dockyard.api import keys
from dockyard.testbed.cluster import State, Testbed
from dockyard.testbed.faults import hung
from tests.conftest import PRODUCTION_KUBE_DEADLINES, Kubectl, StartApi

Client = TestClient[object, object]
# It hangs the test bed's PostgreSQL, Redis and apiserver: no other test meanwhile.
pytestmark = [pytest.mark.usefixtures("crds_installed"), pytest.mark.alone]

UNAVAILABLE = "https://dockyard.io/problems/dependency-unavailable"


@pytest.fixture
def developer(testbed: Testbed, kubectl: Kubectl, namespace: str, roles: None) -> dict[str, str]:
    user = f"dev-{uuid.uuid4().hex[:6]}"
    kubectl(
        "create",
        "rolebinding",
        "dev",
        "--clusterrole=dockyard-developer",
        f"--user={user}",
        "-n",
        namespace,
    )
    return {"Authorization": f"Bearer {testbed.user_token(user, [])}"}


async def _timed(coro: object) -> tuple[float, object]:
    started = time.monotonic()
    result = await coro  # type: ignore[misc]
    return time.monotonic() - started, result


async def _audited_statuses(state: State, namespace: str) -> list[int]:
    """The status codes of the audit rows of requests to ``namespace``, oldest first."""
    conn = await asyncpg.connect(state.database_url)
    try:
        rows = await conn.fetch(
            "SELECT status_code FROM audit_events WHERE namespace = $1 ORDER BY id", namespace
        )
        return [row["status_code"] for row in rows]
    finally:
        await conn.close()


async def test_while_postgres_hangs_writes_are_refused_fast_and_reads_go_on(
    start_api: StartApi,
    testbed_state: State,
    developer: dict[str, str],
    namespace: str,
    kubectl: Kubectl,
) -> None:
    client = await start_api(redis_url=None, breaker_open_seconds=1.0)
    base = f"/api/v1/namespaces/{namespace}/environments"
    body = {"metadata": {"name": "before"}, "spec": {"tier": "development", "image": "a:1"}}
    created = await client.post(base, json=body, headers=developer)
    assert created.status == 201, await created.text()
    # The caller's decisions are cached now; the watch cache holds the environment.

    with hung(testbed_state, "postgres"):
        answers = []
        for i in range(8):
            write = {"metadata": {"name": f"during-{i}"}, "spec": body["spec"]}
            seconds, response = await _timed(client.post(base, json=write, headers=developer))
            answers.append((seconds, response.status, response))
        for seconds, status, response in answers:
            assert status == 503, await response.text()  # type: ignore[attr-defined]
            assert seconds < 3.0
            assert response.headers["Retry-After"].isdigit()  # type: ignore[attr-defined]
            problem = await response.json()  # type: ignore[attr-defined]
            assert problem["type"] == UNAVAILABLE
            assert problem["dependency"] == "postgres"
        # Once the breaker is open, the refusal is immediate.
        assert answers[-1][0] < 0.5
        registry = client.server.app[keys.METRICS].registry
        state = registry.get_sample_value(
            "dockyard_dependency_breaker_state", {"dependency": "postgres"}
        )
        assert state == 2  # open

        seconds, read = await _timed(client.get(f"{base}/before", headers=developer))
        assert read.status == 200  # type: ignore[attr-defined]
        assert seconds < 3.0

        seconds, ready = await _timed(client.get("/readyz"))
        assert seconds < 1.0
        assert ready.status == 503  # type: ignore[attr-defined]
        checks = {c["name"]: c for c in (await ready.json())["checks"]}  # type: ignore[attr-defined]
        assert checks["postgres"]["ready"] is False
        assert checks["postgres"]["required"] is True
        live = await client.get("/healthz")
        assert live.status == 200

    returned = time.monotonic()
    while True:
        after = {"metadata": {"name": "after"}, "spec": body["spec"]}
        response = await client.post(base, json=after, headers=developer)
        if response.status == 201:
            break
        assert response.status == 503, await response.text()
        assert time.monotonic() - returned < 5.0, "no recovery within 5 s"
        await asyncio.sleep(0.2)

    # Nothing refused reached the cluster, and each write that did has its audit row.
    names = kubectl("get", "environments", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(names) == ["environment.dockyard.io/after", "environment.dockyard.io/before"]
    assert await _audited_statuses(testbed_state, namespace) == [201, 201]


async def test_while_redis_hangs_the_api_serves_and_stays_ready(
    start_api: StartApi,
    testbed_state: State,
    developer: dict[str, str],
    namespace: str,
) -> None:
    client = await start_api(redis_url=testbed_state.redis_url, ratelimit_failure_mode="open")
    base = f"/api/v1/namespaces/{namespace}/environments"
    with hung(testbed_state, "redis"):
        for _ in range(10):
            seconds, response = await _timed(client.get(base, headers=developer))
            assert response.status == 200  # type: ignore[attr-defined]
            assert seconds < 1.0
        seconds, ready = await _timed(client.get("/readyz"))
        assert seconds < 1.0
        body = await ready.json()  # type: ignore[attr-defined]
        assert ready.status == 200, body  # type: ignore[attr-defined]
        assert body["status"] == "ready"
        assert body["degraded"] == ["redis"]
        registry = client.server.app[keys.METRICS].registry
        ready_gauge = "dockyard_api_dependency_ready"
        assert registry.get_sample_value(ready_gauge, {"dependency": "redis"}) == 0
    returned = time.monotonic()
    while True:
        ready = await client.get("/readyz")
        if (await ready.json())["degraded"] == []:
            break
        assert time.monotonic() - returned < 5.0, "redis not back within 5 s"
        await asyncio.sleep(0.2)


async def test_while_the_apiserver_hangs_cached_callers_read_and_others_get_503(
    start_api: StartApi,
    testbed: Testbed,
    testbed_state: State,
    developer: dict[str, str],
    namespace: str,
) -> None:
    client = await start_api(
        redis_url=None, auth_cache_ttl=120, authz_cache_ttl=120, **PRODUCTION_KUBE_DEADLINES
    )
    base = f"/api/v1/namespaces/{namespace}/environments"
    body = {"metadata": {"name": "kept"}, "spec": {"tier": "development", "image": "a:1"}}
    deadline = time.monotonic() + 30
    while True:
        # On a test bed just started, the CRDs' storage may still be initializing (the
        # apiserver answers 429, the API 503 with Retry-After): a client retries.
        created = await client.post(base, json=body, headers=developer)
        if created.status != 503 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert created.status == 201, await created.text()
    read = await client.get(f"{base}/kept", headers=developer)  # caches the get decision
    assert read.status == 200
    assert "Warning" not in read.headers
    stranger = {"Authorization": f"Bearer {testbed.user_token('stranger-' + namespace, [])}"}
    # Every kind's cache has its first list (one may have been told to retry: the
    # apiserver answers 429 while a CRD's storage is initializing), as a replica that
    # has been serving a while has: only then do reads not need the apiserver.
    for cache in client.server.app[keys.WATCH_CACHES]:
        await cache.wait_synced(within=30)

    with hung(testbed_state, "kube-apiserver"):
        seconds, ready = await _timed(client.get("/readyz"))
        assert seconds < 1.0
        answer = await ready.json()  # type: ignore[attr-defined]
        assert ready.status == 200, answer  # type: ignore[attr-defined]
        assert answer["degraded"] == ["kubernetes"]

        seconds, cached = await _timed(client.get(f"{base}/kept", headers=developer))
        assert cached.status == 200  # type: ignore[attr-defined]
        assert seconds < 3.0
        assert (await cached.json())["metadata"]["name"] == "kept"  # type: ignore[attr-defined]
        assert cached.headers["Warning"].startswith("110 ")  # type: ignore[attr-defined]
        assert cached.headers["Age"].isdigit()  # type: ignore[attr-defined]

        seconds, unknown = await _timed(client.get(f"{base}/kept", headers=stranger))
        assert unknown.status == 503, await unknown.text()  # type: ignore[attr-defined]
        assert seconds < 3.0
        problem = await unknown.json()  # type: ignore[attr-defined]
        assert problem["dependency"] == "kubernetes"
        assert unknown.headers["Retry-After"].isdigit()  # type: ignore[attr-defined]

        write = {"metadata": {"name": "during"}, "spec": body["spec"]}
        seconds, refused = await _timed(client.post(base, json=write, headers=developer))
        assert refused.status == 503, await refused.text()  # type: ignore[attr-defined]
        assert seconds < 3.0

    returned = time.monotonic()
    while True:
        after = {"metadata": {"name": "after"}, "spec": body["spec"]}
        response = await client.post(base, json=after, headers=developer)
        if response.status == 201:
            break
        assert response.status == 503, await response.text()
        assert time.monotonic() - returned < 5.0, "no recovery within 5 s"
        await asyncio.sleep(0.2)
