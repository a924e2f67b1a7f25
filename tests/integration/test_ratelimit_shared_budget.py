"""Two ``dockyard api`` processes sharing Redis hold one global limit, not one each."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from dockyard.core import migrations
from dockyard.testbed.cluster import State, free_port
from tests.conftest import Kubectl
from tests.integration.ratelimits import RULES_PATH, apply, manifest, rule

pytestmark = pytest.mark.usefixtures("crds_installed")

RATE = 20  # requests per second, burst 0: a bucket at rest holds 20
SECONDS = 5.0
WORKERS_PER_PROCESS = 6


@pytest.fixture
def processes(
    testbed_state: State,
    testbed_env: dict[str, str],
    namespace: str,
    tmp_path: Path,
) -> Iterator[list[str]]:
    """Two API processes with ``namespace`` as their platform namespace, sharing Redis."""

    async def migrate() -> None:
        conn = await asyncpg.connect(testbed_state.database_url)
        try:
            await migrations.migrate(conn)
        finally:
            await conn.close()

    asyncio.run(migrate())
    env = {
        **testbed_env,
        "DOCKYARD_NAMESPACE": namespace,
        "DOCKYARD_REDIS_URL": testbed_state.redis_url,
        "DOCKYARD_METRICS_PORT": "null",
        "DOCKYARD_LOG_LEVEL": "ERROR",
    }
    started: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for index in range(2):
            port = free_port()
            log = (tmp_path / f"api-{index}.log").open("wb")
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "dockyard.cli", "api", "--port", str(port)],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        yield urls
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def _until_limited(http: aiohttp.ClientSession, url: str, marker: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            async with http.get(url + RULES_PATH) as response:
                if marker in response.headers.get("RateLimit-Policy", ""):
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never enforced the policy")


async def test_two_api_processes_sharing_redis_hold_one_global_limit(
    processes: list[str], kubectl: Kubectl, namespace: str
) -> None:
    apply(
        kubectl,
        manifest(
            namespace,
            "shared",
            rule("per-address", RATE, "second", key="ClientIP", match={"paths": [RULES_PATH]}),
        ),
    )
    allowed = {url: 0 for url in processes}
    throttled = 0
    async with aiohttp.ClientSession() as http:
        for url in processes:
            await _until_limited(http, url, f'"{namespace}/shared/per-address"')
        await asyncio.sleep(2)  # let the bucket refill after the probes

        started = time.monotonic()
        last_sent = started

        async def worker(url: str) -> None:
            nonlocal throttled, last_sent
            while time.monotonic() - started < SECONDS:
                last_sent = max(last_sent, time.monotonic())
                # No token: 401 once the limiter let it through, 429 when it did not.
                async with http.get(url + RULES_PATH) as response:
                    await response.read()
                    if response.status == 429:
                        throttled += 1
                    else:
                        assert response.status == 401
                        allowed[url] += 1

        await asyncio.gather(
            *(worker(url) for url in processes for _ in range(WORKERS_PER_PROCESS))
        )

    window = last_sent - started
    expected = RATE + RATE * window  # a full bucket, then the sustained rate
    total = sum(allowed.values())
    assert throttled > total, "the load never pushed past the limit"
    assert all(allowed.values()), f"both processes must serve: {allowed}"
    assert abs(total - expected) <= 0.05 * expected, (total, expected, allowed)
