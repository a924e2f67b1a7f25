"""Fixtures the integration modules share (the session's test bed is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from dockyard.core.settings import Settings
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl, api_settings


@pytest.fixture(scope="session", autouse=True)
def no_platform_rate_limits(kubectl: Kubectl) -> None:
    """No shipped RateLimitPolicy in the platform namespace, where every test's API would
    hold every request to it. ``make dev`` applies them there (``manifests/``: 60
    unauthenticated requests a minute per address), and leaves them on a test bed it
    found already up; the rate-limit tests apply them in namespaces of their own."""
    kubectl(
        "delete", "ratelimitpolicies", "-n", Settings().namespace,
        "-l", "app.kubernetes.io/part-of=dockyard", "--ignore-not-found", check=False,
    )  # fmt: skip


@pytest.fixture
async def platform_pool(testbed_state: State) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the test bed's platform database, as the API and operator reach it."""
    async with asyncpg.create_pool(
        api_settings(testbed_state).database_dsn(), min_size=1, max_size=2
    ) as pool:
        yield pool
