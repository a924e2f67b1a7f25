"""Callers without credentials cannot lock valid tokens out, nor flood the apiserver with
TokenReviews: the shipped anonymous budget and the per-address review cap are separate.

The real API, the test bed's Redis and apiserver; each test's fresh namespace is its
app's platform namespace (see ``tests.integration.ratelimits``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from ipaddress import ip_network
from typing import Any

import asyncpg
import pytest
import yaml
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from dockyard.api.app import create_app
from dockyard.core import migrations
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import ROOT, Kubectl
from tests.integration.ratelimits import RULES_PATH, apply, in_force, settings

Client = TestClient[Any, Any]
ClientFactory = Callable[..., AbstractAsyncContextManager[Client]]
pytestmark = pytest.mark.usefixtures("crds_installed")

# The API sits behind an ingress on this address, as in the staging and production overlays.
INGRESS = [ip_network("127.0.0.1/32")]


@pytest.fixture(scope="module")
async def migrated(testbed_state: State) -> None:
    conn = await asyncpg.connect(testbed_state.database_url)
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()


@pytest.fixture
def api(
    aiohttp_client: AiohttpClient, testbed_state: State, namespace: str, migrated: None
) -> ClientFactory:
    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Client]:
        client = await aiohttp_client(create_app(settings(testbed_state, namespace, **overrides)))
        try:
            yield client
        finally:
            await client.close()  # here, not at the test's end: a test may start another

    return start


def _defaults(kubectl: Kubectl, namespace: str) -> list[str]:
    policies = list(
        yaml.safe_load_all((ROOT / "manifests" / "ratelimit-defaults.yaml").read_text())
    )
    for policy in policies:
        policy["metadata"]["namespace"] = namespace
    apply(kubectl, *policies)
    return [p["metadata"]["name"] for p in policies]


def _bearer(token: str, address: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if address is not None:
        headers["X-Forwarded-For"] = address
    return headers


async def test_a_spent_anonymous_budget_does_not_refuse_a_new_valid_token(
    api: ClientFactory, kubectl: Kubectl, namespace: str, testbed: Testbed
) -> None:
    names = _defaults(kubectl, namespace)
    async with api() as client:
        for name in names:
            await in_force(client.app, namespace, name)
        # Everyone behind the one ingress address: an attacker spends its anonymous budget.
        statuses = [(await client.get(RULES_PATH)).status for _ in range(70)]
        assert statuses[-1] == 429
        # A token the API has never seen, from the same address, is still served.
        dave = testbed.user_token(f"dave-{uuid.uuid4().hex[:6]}", [])
        response = await client.get(RULES_PATH, headers=_bearer(dave))
        assert response.status == 200, await response.text()
        assert "per-subject" in response.headers["RateLimit-Policy"]


async def test_made_up_tokens_are_capped_per_address_apart_from_the_anonymous_budget(
    api: ClientFactory, kubectl: Kubectl, namespace: str, testbed: Testbed
) -> None:
    names = _defaults(kubectl, namespace)
    attacker, colleague = "203.0.113.7", "198.51.100.8"
    async with api(token_reviews_per_minute=5, trusted_proxies=INGRESS) as client:
        for name in names:
            await in_force(client.app, namespace, name)
        bogus = [
            (await client.get(RULES_PATH, headers=_bearer(f"bogus-{i}", attacker))).status
            for i in range(8)
        ]
        # Five reviews, then refused without one.
        assert bogus == [401] * 5 + [429] * 3
        refused = await client.get(RULES_PATH, headers=_bearer("bogus-late", attacker))
        assert refused.status == 429
        assert "unrecognised bearer tokens" in (await refused.json())["detail"]
        # The anonymous budget (60) is not what refused them: no-token requests still get 401.
        anonymous = await client.get(RULES_PATH, headers={"X-Forwarded-For": attacker})
        assert anonymous.status == 401
        # Another client address behind the same ingress has its own review cap.
        erin = testbed.user_token(f"erin-{uuid.uuid4().hex[:6]}", [])
        served = await client.get(RULES_PATH, headers=_bearer(erin, colleague))
        assert served.status == 200, await served.text()


async def test_the_review_cap_holds_without_any_rate_limit_policy(
    api: ClientFactory, testbed: Testbed
) -> None:
    # No policy at all in the app's platform namespace: the cap still bounds reviews.
    async with api(token_reviews_per_minute=2) as client:
        bogus = [
            (await client.get(RULES_PATH, headers=_bearer(f"bogus-{i}"))).status for i in range(4)
        ]
        assert bogus == [401, 401, 429, 429]
