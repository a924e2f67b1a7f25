"""The platform database's deadlines and breaker, against the test bed's PostgreSQL.

A pool that cannot hand out a connection in time, or a statement that runs past its
deadline, is an outage of PostgreSQL as far as the caller is concerned: it fails with
``DependencyUnavailable`` within its deadline, and enough of them in a row open the
breaker, which then refuses at once until it lets a trial call through.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry

from dockyard.core import db
from dockyard.core.breakers import Breakers, Dependency, DependencyUnavailable
from dockyard.core.settings import Settings
from dockyard.testbed.cluster import State

pytestmark = pytest.mark.integration


def _settings(state: State, **overrides: float) -> Settings:
    return Settings(
        database_url=state.database_url,
        kubeconfig=Path(state.kubeconfig),
        database_pool_min=1,
        database_pool_max=1,
        **overrides,
    )


async def test_a_busy_pool_fails_within_its_acquire_deadline(testbed_state: State) -> None:
    breakers = Breakers(failure_threshold=2, open_seconds=30, registry=CollectorRegistry())
    settings = _settings(testbed_state, database_acquire_timeout=0.3)
    async with db.pool_context(settings, breakers=breakers) as pool, pool.acquire() as held:
        assert await held.fetchval("SELECT 1") == 1
        started = time.monotonic()
        with pytest.raises(DependencyUnavailable) as waited:
            await pool.fetchval("SELECT 1")
        assert 0.25 <= time.monotonic() - started < 1.5
        assert waited.value.dependency is Dependency.POSTGRES
        assert waited.value.reason == "no answer in time"

        with pytest.raises(DependencyUnavailable):
            await pool.fetchval("SELECT 1")
        # Two in a row: the breaker is open and refuses without waiting.
        started = time.monotonic()
        with pytest.raises(DependencyUnavailable) as refused:
            await pool.fetchval("SELECT 1")
        assert time.monotonic() - started < 0.1
        assert refused.value.reason == "circuit breaker open"
        assert refused.value.retry_after > 25


async def test_a_statement_past_its_deadline_is_an_outage_a_sql_error_is_not(
    testbed_state: State,
) -> None:
    breakers = Breakers(failure_threshold=5, open_seconds=0.2, registry=CollectorRegistry())
    settings = _settings(testbed_state, database_command_timeout=0.3)
    async with db.pool_context(settings, breakers=breakers) as pool:
        started = time.monotonic()
        with pytest.raises(DependencyUnavailable):
            await pool.execute("SELECT pg_sleep(5)")
        assert time.monotonic() - started < 1.5

        for _ in range(6):
            with pytest.raises(asyncpg.UndefinedTableError):
                await pool.fetch("SELECT * FROM no_such_table_here")
        assert not breakers.is_open(Dependency.POSTGRES)
        # The pool recovers its connection: the next call answers.
        assert await pool.fetchval("SELECT 41 + 1") == 42


async def test_an_open_breaker_closes_after_one_good_trial(testbed_state: State) -> None:
    breakers = Breakers(failure_threshold=1, open_seconds=0.3, registry=CollectorRegistry())
    settings = _settings(testbed_state, database_command_timeout=0.2)
    async with db.pool_context(settings, breakers=breakers) as pool:
        with pytest.raises(DependencyUnavailable):
            await pool.execute("SELECT pg_sleep(2)")
        assert breakers.is_open(Dependency.POSTGRES)
        await asyncio.sleep(0.4)
        assert await pool.fetchval("SELECT 1") == 1
        assert not breakers.is_open(Dependency.POSTGRES)
