"""Webhook handlers: check each Webhook when it appears or changes, forget it when gone.

Delivering is the dispatcher's background loop (``dockyard.operator.webhooks``), not a
handler's: Kopf only tells it which Webhooks exist and what they ask for. A rotated
signing Secret takes effect when the Webhook is next changed (annotate it). A Webhook
refused for its Secret (applied before the Secret, say) is checked again every
``SECRET_RECHECK_SECONDS`` while it is, so that making the Secret is enough.
"""

from __future__ import annotations

from typing import Any, Final

import kopf

from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import WEBHOOKS
from dockyard.operator.services import OperatorMemo, reconciles

SECRET_RECHECK_SECONDS: Final = 15.0
_SECRET_REASONS: Final = frozenset({"SecretNotFound", "InvalidSecret"})


def _refused_for_its_secret(status: kopf.Status, **_: Any) -> bool:
    conditions = status.get("conditions") or ()
    ready: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
    return ready.get("status") == "False" and ready.get("reason") in _SECRET_REASONS


@reconciles(WEBHOOKS)
async def check(*, body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    await memo.services.webhooks.check(dict(body))


@kopf.timer(
    API_VERSION,
    WEBHOOKS.plural,
    id="secret-recheck",
    interval=SECRET_RECHECK_SECONDS,
    when=_refused_for_its_secret,
)
async def recheck(*, body: kopf.Body, memo: OperatorMemo, **_: Any) -> None:
    await memo.services.webhooks.check(dict(body))


@kopf.on.event(API_VERSION, WEBHOOKS.plural, id="webhook-gone")
async def gone(*, type: str | None, uid: str | None, memo: OperatorMemo, **_: Any) -> None:
    if type == "DELETED" and uid:
        await memo.services.webhooks.remove(uid)
