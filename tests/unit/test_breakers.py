"""The dependency breakers: what opens them, what an open one answers, how they close."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from dockyard.core.breakers import Breakers, Dependency, DependencyUnavailable


def gauge(registry: CollectorRegistry, dependency: Dependency) -> float | None:
    return registry.get_sample_value(
        "dockyard_dependency_breaker_state", {"dependency": dependency.value}
    )


async def fail(breakers: Breakers, dependency: Dependency, exc: BaseException) -> None:
    with pytest.raises(DependencyUnavailable):
        async with breakers.guard(dependency):
            raise exc


async def test_outages_open_the_breaker_and_an_open_one_refuses_at_once() -> None:
    registry = CollectorRegistry()
    breakers = Breakers(failure_threshold=2, open_seconds=30, registry=registry)
    assert gauge(registry, Dependency.POSTGRES) == 0

    await fail(breakers, Dependency.POSTGRES, TimeoutError())
    await fail(breakers, Dependency.POSTGRES, ConnectionRefusedError())
    assert breakers.is_open(Dependency.POSTGRES)
    assert gauge(registry, Dependency.POSTGRES) == 2

    entered = False
    with pytest.raises(DependencyUnavailable) as refused:
        async with breakers.guard(Dependency.POSTGRES):
            entered = True
    assert not entered
    assert refused.value.dependency is Dependency.POSTGRES
    assert refused.value.reason == "circuit breaker open"
    assert 29 <= refused.value.retry_after <= 30
    # One dependency's outage leaves the others closed.
    assert gauge(registry, Dependency.REDIS) == 0
    async with breakers.guard(Dependency.REDIS):
        pass


async def test_answers_of_the_dependency_pass_through_and_do_not_count() -> None:
    breakers = Breakers(failure_threshold=1, open_seconds=30, registry=CollectorRegistry())
    for _ in range(3):
        with pytest.raises(KeyError):
            async with breakers.guard(Dependency.KUBERNETES):
                raise KeyError("a 404 is an answer")
    assert not breakers.is_open(Dependency.KUBERNETES)


async def test_a_timeout_is_reported_as_the_dependency_being_unavailable() -> None:
    breakers = Breakers(failure_threshold=5, registry=CollectorRegistry())
    with pytest.raises(DependencyUnavailable) as unavailable:
        async with breakers.guard(Dependency.REDIS):
            raise TimeoutError
    assert unavailable.value.reason == "no answer in time"
    assert isinstance(unavailable.value.__cause__, TimeoutError)
    assert str(unavailable.value) == "redis is unavailable: no answer in time"


async def test_after_open_seconds_one_success_closes_it_and_one_failure_reopens_it() -> None:
    registry = CollectorRegistry()
    breakers = Breakers(failure_threshold=1, open_seconds=0.05, registry=registry)
    await fail(breakers, Dependency.S3, OSError("reset"))
    assert gauge(registry, Dependency.S3) == 2
    await asyncio.sleep(0.1)
    await fail(breakers, Dependency.S3, TimeoutError())  # the half-open trial fails
    assert breakers.is_open(Dependency.S3)
    await asyncio.sleep(0.1)
    async with breakers.guard(Dependency.S3):
        pass
    assert not breakers.is_open(Dependency.S3)
    assert gauge(registry, Dependency.S3) == 0


async def test_a_forgotten_instance_leaves_no_state_series_or_record() -> None:
    """One breaker per Webhook: a deleted Webhook's must go with it, or every Webhook
    ever delivered to stays in memory (and in the gauge)."""
    registry = CollectorRegistry()
    breakers = Breakers(failure_threshold=1, open_seconds=30, registry=registry)
    for uid in ("gone", "kept"):
        with pytest.raises(DependencyUnavailable):
            async with breakers.guard(Dependency.WEBHOOK, uid):
                raise TimeoutError
    labels = {"dependency": "webhook:gone"}
    assert registry.get_sample_value("dockyard_dependency_breaker_state", labels) == 2

    breakers.forget(Dependency.WEBHOOK, "gone")

    assert registry.get_sample_value("dockyard_dependency_breaker_state", labels) is None
    assert not breakers.is_open(Dependency.WEBHOOK, "gone")
    assert breakers.is_open(Dependency.WEBHOOK, "kept")
    records = breakers._factory.uow.contexts.breakers  # type: ignore[attr-defined]
    assert "webhook:gone" not in records
    assert "webhook:kept" in records
    async with breakers.guard(Dependency.WEBHOOK, "gone"):  # a new one, closed
        pass
