"""What a failed webhook delivery is: whether it counts against the receiver's circuit
breaker, when it is tried again, and how the Webhook's status describes it.
"""

from __future__ import annotations

import random

import aiohttp

from dockyard.core.breakers import is_outage
from dockyard.runner.endpoints import AddressRefused

# What the Webhook's status (and the deliveries table) holds of a receiver's status:
# HTTP's range. An answer outside it (600, say) is a failure like any non-2xx, and only
# the error's words give its code.
_HTTP_STATUSES = range(100, 600)


class DeliveryFailed(Exception):
    """The receiver answered, but not with a 2xx (counts against its breaker)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the receiver answered {status}")
        self.status = status

    @property
    def recorded(self) -> int | None:
        """The status as recorded: ``None`` for one outside HTTP's 100 to 599."""
        return self.status if self.status in _HTTP_STATUSES else None


def trips_breaker(exc: BaseException) -> bool:
    """Whether ``exc`` counts against the receiver's breaker: no 2xx, no answer, or no
    connection."""
    return isinstance(exc, DeliveryFailed | aiohttp.ClientError) or is_outage(exc)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds before retry ``attempt`` + 1: exponential and capped, jittered between
    half and all of it so that receivers coming back are not hit by every retry at once."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not a secret  # nosec B311


def describe(exc: BaseException) -> str:
    """Why a delivery failed, for the Webhook's status: never the URL (its query may hold
    a token) nor the receiver's own bytes, which aiohttp quotes when they are not HTTP."""
    if isinstance(exc, DeliveryFailed):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):
        where = f"cannot connect to {exc.host}:{exc.port}"
        if isinstance(refused := exc.os_error, AddressRefused):
            # Not the address: the platform's internal addresses are not the tenant's to
            # see (the dispatcher logs it at debug level).
            return (
                f"{where}: {refused.host} resolves to a {refused.kind} address, which the "
                "operator does not connect to (DOCKYARD_WEBHOOK_ALLOWED_NETWORKS allows networks)"
            )
        return f"{where}: {exc.os_error.strerror or exc.os_error}"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{type(exc).__name__}: the receiver's answer could not be read as HTTP"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}"
    # The others' words may quote the URL (InvalidURL) or what the receiver sent (a
    # ClientPayloadError's chunk, a ServerDisconnectedError's partial headers).
    return type(exc).__name__


def refused_address(exc: BaseException) -> AddressRefused | None:
    """The SSRF guard's refusal of the address a connection's host resolved to, if that
    is why ``exc`` (a connection failure) happened."""
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, AddressRefused):
        return exc.os_error
    return None
