"""How many event streams each user holds open on this replica, and the cap on them.

A stream is one request to the rate limiter, and then it stays: without a cap, one
token could hold any number of them, each with its own database reads and access
reviews. ``DOCKYARD_STREAMS_PER_USER`` bounds them per user (the authenticated user
name, so a user's tokens share the count) on each API replica; one more is 429.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from dockyard.api import errors

RETRY_AFTER = 5


class OpenStreams:
    """The streams open per user, up to ``limit`` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def count(self, user: str) -> int:
        return self._open[user]

    @contextlib.contextmanager
    def holding(self, user: str) -> Iterator[None]:
        """Hold one of ``user``'s slots while the stream runs; 429 when none is free."""
        if self._open[user] >= self.limit:
            raise errors.too_many_requests(
                RETRY_AFTER,
                f"User {user!r} already holds {self.limit} event streams open on this "
                "API replica (DOCKYARD_STREAMS_PER_USER); close one first.",
            )
        self._open[user] += 1
        try:
            yield
        finally:
            self._open[user] -= 1
            if not self._open[user]:
                del self._open[user]
