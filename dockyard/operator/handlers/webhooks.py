"""Webhook handlers: check each Webhook when it appears or changes, forget it when gone.

Delivering is the dispatcher's background loop (``dockyard.operator.webhooks``), not a
handler's: Kopf only tells it which Webhooks exist and what they ask for. A rotated
signing Secret takes effect when the Webhook is next changed (annotate it).
"""

from __future__ import annotations

from typing import Any

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import WEBHOOKS
from dockyard.operator.services import OperatorMemo, reconciles


@reconciles(WEBHOOKS)
async def check(*, body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    await memo.services.webhooks.check(dict(body))


@kopf.on.event(API_VERSION, WEBHOOKS.plural, id="webhook-gone")
async def gone(*, type: str | None, uid: str | None, memo: OperatorMemo, **_: Any) -> None:
    if type == "DELETED" and uid:
        await memo.services.webhooks.remove(uid)
