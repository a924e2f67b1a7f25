"""GCRA arithmetic: capacity at rest, the sustained rate, cost, and who is charged."""

from __future__ import annotations

import pytest

from dockyard.api.ratelimit.gcra import Quota, commits, evaluate


def drain(quota: Quota, now: float, cost: int = 1) -> tuple[int, float | None]:
    """Send requests at one instant until one is refused; (allowed count, final TAT)."""
    tat: float | None = None
    allowed = 0
    while True:
        outcome = evaluate(quota, tat, now, cost)
        if not outcome.allowed:
            return allowed, tat
        tat = outcome.tat
        allowed += 1


@pytest.mark.parametrize(
    ("requests", "period", "burst"), [(10, 1, 0), (600, 60, 100), (3, 1, 2), (7, 86400, 0)]
)
def test_a_bucket_at_rest_lets_requests_plus_burst_through_at_once(
    requests: int, period: float, burst: int
) -> None:
    allowed, _ = drain(Quota(requests, period, burst), now=1000.0)
    assert allowed == requests + burst


def test_after_the_burst_requests_pass_at_the_sustained_rate() -> None:
    quota = Quota(10, 1.0)  # one every 100 ms
    _, tat = drain(quota, now=0.0)
    assert not evaluate(quota, tat, 0.05).allowed
    later = evaluate(quota, tat, 0.1)
    assert later.allowed
    assert later.remaining == 0
    assert not evaluate(quota, later.tat, 0.15).allowed


def test_a_refusal_says_how_long_to_wait_and_changes_nothing() -> None:
    quota = Quota(10, 1.0)
    _, tat = drain(quota, now=0.0)
    refused = evaluate(quota, tat, 0.02)
    assert refused.tat == tat
    assert refused.retry_after == pytest.approx(0.08)
    assert refused.reset == pytest.approx(0.98)
    assert evaluate(quota, tat, 0.02 + refused.retry_after).allowed


def test_remaining_and_reset_count_down_from_a_full_bucket() -> None:
    quota = Quota(5, 10.0, burst=1)
    first = evaluate(quota, None, 0.0)
    assert (first.remaining, first.reset) == (5, pytest.approx(2.0))
    second = evaluate(quota, first.tat, 0.0)
    assert (second.remaining, second.reset) == (4, pytest.approx(4.0))


def test_cost_takes_several_units_and_cannot_exceed_the_capacity() -> None:
    quota = Quota(10, 1.0, burst=2)
    allowed, _ = drain(quota, now=0.0, cost=4)
    assert allowed == 3  # 12 units
    assert not evaluate(quota, None, 0.0, cost=13).allowed


def test_an_idle_bucket_refills_completely_and_no_further() -> None:
    quota = Quota(10, 1.0)
    _, tat = drain(quota, now=0.0)
    allowed, _ = drain(quota, now=60.0)
    assert allowed == 10
    assert evaluate(quota, tat, 60.0).remaining == 9


def test_enforced_buckets_are_charged_all_or_nothing_and_shadow_ones_alone() -> None:
    assert commits([True, True, True], [True, True, False]) == [True, True, True]
    # A shadow refusal changes nothing for the enforced ones, nor for other shadow ones.
    assert commits([True, False, True], [True, False, False]) == [True, False, True]


def test_a_request_an_enforced_bucket_refuses_charges_no_bucket_at_all() -> None:
    # Neither the enforced buckets nor the shadow one that would have let it through.
    assert commits([True, False, True], [True, True, False]) == [False, False, False]


def test_a_quota_must_be_positive() -> None:
    with pytest.raises(ValueError, match="requests > 0"):
        Quota(0, 1.0)
