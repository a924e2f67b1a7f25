"""``Statuses``: what each Webhook's status shows of its deliveries, written when it changed.

The status holds the last attempt (``lastDelivery``), the failed attempts since the last
success (``consecutiveFailures``), the endpoint's breaker and the counts of pending
deliveries and dead letters. Only attempts are shown: a delivery the open breaker held
back was not one. The dispatcher's memory of each Webhook lives here, so that one
``forget`` drops all of it when the Webhook goes.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from dockyard.core import webhook_deliveries as store
from dockyard.core.breakers import Breakers, Dependency
from dockyard.core.metrics import OperatorMetrics
from dockyard.core.models.common import ObjectMeta
from dockyard.core.models.webhook import (
    BreakerState,
    LastDelivery,
    Webhook,
    WebhookConditionType,
    WebhookStatus,
)
from dockyard.operator.store import KindStore
from dockyard.operator.webhooks.targets import Target

_BREAKER_VALUES: Final = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
_BREAKER_STATES: Final = {
    "opened": BreakerState.OPEN,
    "half-opened": BreakerState.HALF_OPEN,
}
ERROR_LIMIT: Final = 512


class Statuses:
    """The last attempt and the failures in a row of each Webhook (by uid), and what its
    status last showed."""

    def __init__(
        self, webhooks: KindStore[Webhook], breakers: Breakers, metrics: OperatorMetrics | None
    ) -> None:
        self.webhooks = webhooks
        self.breakers = breakers
        self.metrics = metrics
        self.last: dict[str, LastDelivery] = {}
        self.failures: dict[str, int] = {}
        # What each Webhook's status last showed (uid -> status), to write only changes.
        self.shown: dict[str, dict[str, Any]] = {}

    def forget(self, uid: str) -> None:
        for memory in (self.shown, self.last, self.failures):
            memory.pop(uid, None)

    def delivered(self, target: Target, delivery: store.Claimed, status: int) -> None:
        self.failures[target.uid] = 0
        self._remember(target, delivery, status)

    def failed(
        self, target: Target, delivery: store.Claimed, status: int | None, error: str
    ) -> None:
        self.failures[target.uid] = self.failures.get(target.uid, 0) + 1
        self._remember(target, delivery, status, error)

    def _remember(
        self, target: Target, delivery: store.Claimed, status: int | None, error: str | None = None
    ) -> None:
        """Keep the last attempt: delivered, or failed with ``error`` (cut to what the
        status holds)."""
        self.last[target.uid] = LastDelivery(
            event_id=delivery.event_id,
            type=delivery.type,
            at=datetime.now(UTC),
            succeeded=error is None,
            status_code=status,
            error=None if error is None else error[:ERROR_LIMIT],
        )

    def breaker_state(self, uid: str) -> BreakerState:
        state = self.breakers.state_of(Dependency.WEBHOOK, uid)
        return _BREAKER_STATES.get(state, BreakerState.CLOSED)

    async def ready(
        self, meta: ObjectMeta, status: WebhookStatus, ready: tuple[bool, str, str]
    ) -> None:
        """Write a check's verdict: the Webhook's Ready condition (status, reason,
        message), for the generation it judged, over ``status``."""
        generation = meta.generation or 0
        status = status.with_condition(
            WebhookConditionType.READY, *ready, generation=generation
        ).model_copy(update={"observed_generation": generation})
        await self.webhooks.write_status(
            meta.namespace or "",
            meta.name or "",
            status.model_dump(
                mode="json", by_alias=True, include={"conditions", "observed_generation"}
            ),
            uid=meta.uid,
        )

    async def show(
        self, targets: Mapping[str, Target], counts: Mapping[str, Mapping[str, int]]
    ) -> None:
        """Write each of ``targets``' status (and metrics) where what it shows changed.
        ``targets`` is the dispatcher's own, read again after each write: a Webhook
        removed meanwhile is not written, nor remembered."""
        for uid, target in list(targets.items()):
            count = counts.get(uid)
            if uid not in targets or count is None:
                # Removed while an earlier one's status was written, or checked while
                # the counts were read: shown next pass.
                continue
            self._measure(target, count)
            last = self.last.get(uid)
            shown = {
                "lastDelivery": last.model_dump(mode="json", by_alias=True, exclude_none=True)
                if last is not None
                else None,
                "consecutiveFailures": self.failures.get(uid, 0),
                "breaker": self.breaker_state(uid).value,
                "pending": count["pending"],
                "deadLetters": count["dead"],
            }
            if self.shown.get(uid) == shown:
                continue
            if (
                await self.webhooks.write_status(
                    target.namespace,
                    target.name,
                    {k: v for k, v in shown.items() if v is not None},
                    uid=uid,
                )
                and uid in targets
            ):
                self.shown[uid] = shown

    def _measure(self, target: Target, counts: Mapping[str, int]) -> None:
        if self.metrics is None:
            return
        labels = (target.namespace, target.name)
        self.metrics.breaker.labels(*labels).set(_BREAKER_VALUES[self.breaker_state(target.uid)])
        self.metrics.dead_letters.labels(*labels).set(counts["dead"])
        self.metrics.pending.labels(*labels).set(counts["pending"])
