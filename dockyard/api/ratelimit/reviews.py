"""The cap on TokenReviews each client address may cause, apart from every other budget.

A token the API has not reviewed recently costs one TokenReview at the apiserver, valid
or not. Made-up tokens must not be able to flood the apiserver, so each address may have
at most ``DOCKYARD_TOKEN_REVIEWS_PER_MINUTE`` unknown tokens reviewed a minute; past it,
the next unknown token is answered 429 without a review. This cap is its own bucket: the
anonymous budget of the rate limit policies (requests without valid credentials) is
never consulted for a token, so callers without credentials cannot lock out a valid
token by spending it. Tokens whose answer is cached pass without touching the cap.

The bucket is kept where the rate limiter keeps its counters (Redis when configured, so
every replica shares it), under the platform namespace so that two installations
sharing one Redis keep their own caps. While Redis cannot be reached, the cap is kept
in this process's memory instead, whatever the failure mode: it protects the
apiserver, so it never lapses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from dockyard.api import errors
from dockyard.api.ratelimit import gcra
from dockyard.api.ratelimit.addresses import Network, address_group
from dockyard.api.ratelimit.backends import (
    Bucket,
    Limiter,
    LimiterUnavailable,
    MemoryLimiter,
    ceil_seconds,
)

logger = logging.getLogger(__name__)

KEY = "token-reviews:"


class ReviewCap:
    """Per-address TokenReview budget: ``admit`` before reviewing a token not yet known."""

    def __init__(
        self,
        limiter: Limiter,
        *,
        per_minute: int,
        scope: str,
        client_networks: Sequence[Network] = (),
        local: MemoryLimiter | None = None,
    ) -> None:
        self.limiter = limiter
        self.client_networks = tuple(client_networks)
        self.prefix = f"{KEY}{scope}:"
        self.quota = gcra.Quota(requests=per_minute, period=60.0)
        # While the shared counters are down, this replica's own (``local``) count.
        if isinstance(limiter, MemoryLimiter):
            local = limiter
        self._local = local if local is not None else MemoryLimiter()

    async def admit(self, address: str) -> None:
        """Charge one review to ``address``; the 429 problem when its cap is spent."""
        key = self.prefix + address_group(address, self.client_networks)
        bucket = Bucket(key=key, quota=self.quota, cost=1, enforced=True)
        try:
            [result] = await self.limiter.check([bucket])
        except LimiterUnavailable:
            [result] = self._local.check_now([bucket])
        if not result.allowed:
            raise errors.too_many_requests(
                ceil_seconds(result.retry_after),
                "Too many unrecognised bearer tokens from this address; retry later.",
            )
