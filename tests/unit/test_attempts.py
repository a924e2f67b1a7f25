"""Interrupted and failed runs: resumed, retried with backoff, or failed; never left running."""

from __future__ import annotations

import pytest

from dockyard.core.attempts import (
    INTERRUPTED_REASON,
    RecoveryAction,
    RetryPolicy,
    after_failure,
    recover_interrupted,
)

POLICY = RetryPolicy(max_attempts=3, base_delay_seconds=30, max_delay_seconds=100)


def test_a_run_whose_runner_still_works_is_resumed() -> None:
    recovery = recover_interrupted(attempts=1, runner_alive=True, policy=POLICY)

    assert recovery.action == RecoveryAction.RESUME
    assert recovery.next_attempt is None


def test_a_run_whose_runner_died_is_retried_as_the_next_attempt() -> None:
    recovery = recover_interrupted(attempts=1, runner_alive=False, policy=POLICY)

    assert recovery.action == RecoveryAction.RETRY
    assert recovery.next_attempt == 2
    assert recovery.delay_seconds == 30
    assert recovery.message == f"{INTERRUPTED_REASON}; retrying (attempt 2 of 3)"


def test_a_run_that_never_recorded_its_start_counts_as_one_attempt() -> None:
    assert recover_interrupted(attempts=0, runner_alive=False, policy=POLICY).next_attempt == 2


def test_the_last_attempt_interrupted_fails_the_work() -> None:
    recovery = recover_interrupted(attempts=3, runner_alive=False, policy=POLICY)

    assert recovery.action == RecoveryAction.GIVE_UP
    assert recovery.message == f"{INTERRUPTED_REASON} (gave up after 3 attempts)"


@pytest.mark.parametrize(("attempts", "delay"), [(1, 30), (2, 60), (3, 100), (10, 100)])
def test_the_backoff_doubles_up_to_its_cap(attempts: int, delay: float) -> None:
    assert POLICY.delay(attempts) == delay


def test_an_error_a_retry_cannot_fix_gives_up_at_once() -> None:
    recovery = after_failure(attempts=1, reason="checksum mismatch", retryable=False, policy=POLICY)

    assert (recovery.action, recovery.message) == (RecoveryAction.GIVE_UP, "checksum mismatch")


def test_a_policy_needs_at_least_one_attempt() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
