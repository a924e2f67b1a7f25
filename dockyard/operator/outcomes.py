"""How a reconcile pass ends, and how that becomes Kopf's retry semantics.

A pass never sleeps: when it has to wait (a database server that does not answer, open
connections that have to drain), it says so in an ``Outcome`` and the Kopf handler
raises ``TemporaryError(delay=...)``; a spec that can never work is a
``PermanentError``. Timers and watch-triggered passes ignore the outcome, as they run
again anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import kopf

# Retries start fast (a server restarting is back in seconds) and level off at five
# minutes (a server that is down for longer will not be back sooner for being asked).
BACKOFF_FIRST: Final = 5.0
BACKOFF_MAX: Final = 300.0


def backoff(attempt: int) -> float:
    """Seconds before retry number ``attempt`` (0 for the first retry): 5, 10, 20, ... 300."""
    return min(BACKOFF_FIRST * 2.0 ** max(attempt, 0), BACKOFF_MAX)


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of a pass: done, to be retried (after ``delay``, else a backoff), or failed."""

    retry: str | None = None
    delay: float | None = None
    failure: str | None = None

    @classmethod
    def done(cls) -> Outcome:
        return cls()

    @classmethod
    def again(cls, message: str, *, delay: float | None = None) -> Outcome:
        return cls(retry=message, delay=delay)

    @classmethod
    def failed(cls, message: str) -> Outcome:
        return cls(failure=message)

    def raise_if_unfinished(self, attempt: int) -> None:
        """Raise what tells Kopf to retry or to give up; return when the pass is done."""
        if self.failure is not None:
            raise kopf.PermanentError(self.failure)
        if self.retry is not None:
            delay = self.delay if self.delay is not None else backoff(attempt)
            raise kopf.TemporaryError(self.retry, delay=delay)
