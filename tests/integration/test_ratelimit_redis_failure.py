"""Redis going away while the API limits requests: fail open (unchecked) or closed (each
replica keeps the limits in its own memory), as configured.

Each test starts a throwaway ``redis-server`` of its own and kills it: the test bed's
shared Redis is never touched.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from dockyard.api.app import create_app
from dockyard.testbed.cluster import State, Testbed, free_port
from tests.conftest import Kubectl
from tests.integration.ratelimits import (
    RULES_PATH,
    apply,
    in_force,
    manifest,
    metric,
    rule,
    settings,
)

pytestmark = pytest.mark.usefixtures("crds_installed")


class ThrowawayRedis:
    """A redis-server on a free loopback port, without persistence."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.port = free_port()
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            ping = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True
            )
            if ping.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        self.kill()
        raise AssertionError("the throwaway redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def redis() -> Iterator[ThrowawayRedis]:
    server = ThrowawayRedis()
    yield server
    server.kill()


@pytest.mark.parametrize("failure_mode", ["open", "closed"])
async def test_redis_going_away_is_handled_as_configured(
    testbed_state: State,
    testbed: Testbed,
    kubectl: Kubectl,
    namespace: str,
    redis: ThrowawayRedis,
    failure_mode: str,
) -> None:
    apply(kubectl, manifest(namespace, "limits", rule("per-user", 2)))
    alice = {"Authorization": f"Bearer {testbed.user_token(f'a-{uuid.uuid4().hex[:6]}', [])}"}
    app = create_app(
        settings(testbed_state, namespace, redis_url=redis.url, ratelimit_failure_mode=failure_mode)
    )
    async with TestClient(TestServer(app)) as client:
        await in_force(client.app, namespace, "limits")
        # Redis holds the counters: the third request is over the limit.
        assert [(await client.get(RULES_PATH, headers=alice)).status for _ in range(3)] == [
            200,
            200,
            429,
        ]

        redis.kill()
        response = await client.get(RULES_PATH, headers=alice)
        errors = {"backend": "redis", "failure_mode": failure_mode}
        assert metric(client.app, "dockyard_api_ratelimit_backend_errors_total", errors) == 1
        if failure_mode == "open":
            # Unchecked, so no limit state to report.
            assert response.status == 200
            assert "RateLimit" not in response.headers
        else:
            # Neither refused nor unchecked: this replica keeps the limit in memory.
            later = [await client.get(RULES_PATH, headers=alice) for _ in range(2)]
            assert [response.status, *(r.status for r in later)] == [200, 200, 429]
            assert "RateLimit" in response.headers
            problem = await later[-1].json()
            assert problem["type"] == "https://dockyard.io/problems/too-many-requests"
        # The probes are never limited, so never depend on Redis.
        assert (await client.get("/healthz")).status == 200
