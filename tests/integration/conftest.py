"""Fixtures the integration modules share (the session's test bed is in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from dockyard.testbed.cluster import State
from tests.conftest import api_settings


@pytest.fixture
async def platform_pool(testbed_state: State) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the test bed's platform database, as the API and operator reach it."""
    async with asyncpg.create_pool(
        api_settings(testbed_state).database_dsn(), min_size=1, max_size=2
    ) as pool:
        yield pool
