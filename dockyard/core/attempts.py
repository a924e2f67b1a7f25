"""What to do with a backup, restore or drill run that failed or was interrupted.

This module owns the retry policy of long-running work: a run found in progress after
an operator restart is resumed when its runner is still alive (a Job), and otherwise
counted as a failed attempt; a failed attempt is retried after an exponential backoff
until the policy's attempts are used up, and then the work is marked Failed. Nothing is
ever left Running with no runner behind it. Errors that a retry cannot fix (a checksum
mismatch, a missing backup) give up at once.

``status.attempts`` counts runs started; the operator writes ``next_attempt`` into it
when it starts the retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

INTERRUPTED_REASON: Final = "interrupted: the run stopped with the operator or its Job"


class RecoveryAction(StrEnum):
    """What the operator does next with a run."""

    RESUME = "Resume"
    """Follow the runner again; it is still working."""
    RETRY = "Retry"
    """Start the run again after ``delay_seconds``."""
    GIVE_UP = "GiveUp"
    """Mark the work Failed with ``message``."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently work is retried."""

    max_attempts: int = 3
    base_delay_seconds: float = 30.0
    max_delay_seconds: float = 600.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.base_delay_seconds < 0:
            raise ValueError("max_attempts must be at least 1 and delays not negative")

    def delay(self, attempts: int) -> float:
        """The wait before the attempt after ``attempts`` failed ones: doubling, capped."""
        exponent = max(attempts - 1, 0)
        return min(self.max_delay_seconds, self.base_delay_seconds * 2.0**exponent)


DEFAULT_POLICY: Final = RetryPolicy()


@dataclass(frozen=True, slots=True)
class Recovery:
    """The decision: the action, the attempt to start (for Retry), and why."""

    action: RecoveryAction
    message: str
    delay_seconds: float = 0.0
    next_attempt: int | None = None


def after_failure(
    *, attempts: int, reason: str, retryable: bool = True, policy: RetryPolicy = DEFAULT_POLICY
) -> Recovery:
    """What to do after attempt number ``attempts`` failed for ``reason``."""
    if not retryable:
        return Recovery(RecoveryAction.GIVE_UP, reason)
    if attempts >= policy.max_attempts:
        plural = "attempt" if attempts == 1 else "attempts"
        return Recovery(RecoveryAction.GIVE_UP, f"{reason} (gave up after {attempts} {plural})")
    return Recovery(
        RecoveryAction.RETRY,
        f"{reason}; retrying (attempt {attempts + 1} of {policy.max_attempts})",
        delay_seconds=policy.delay(attempts),
        next_attempt=attempts + 1,
    )


def recover_interrupted(
    *, attempts: int, runner_alive: bool, policy: RetryPolicy = DEFAULT_POLICY
) -> Recovery:
    """What to do with a run found in progress when the operator (re)starts.

    ``runner_alive`` says whether something still executes it (a Job that has neither
    succeeded nor failed); an inline run dies with the operator process.
    """
    if runner_alive:
        return Recovery(RecoveryAction.RESUME, "the runner is still working; following it again")
    # A run that never recorded its start still counts: it may have begun.
    return after_failure(attempts=max(attempts, 1), reason=INTERRUPTED_REASON, policy=policy)


__all__ = [
    "DEFAULT_POLICY",
    "INTERRUPTED_REASON",
    "Recovery",
    "RecoveryAction",
    "RetryPolicy",
    "after_failure",
    "recover_interrupted",
]
