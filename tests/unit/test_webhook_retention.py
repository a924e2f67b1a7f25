"""Which deleted Webhooks a retention pass forgets: those the database holds rows for
and the apiserver, asked after the database, no longer lists; none when the apiserver
cannot say."""

from __future__ import annotations

from typing import Any, cast

import asyncpg
import pytest

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.settings import Settings
from dockyard.operator.webhooks.retention import DeliveryRetention


class _Database:
    def __init__(self, uids: list[str], calls: list[str]) -> None:
        self.uids, self.calls = uids, calls

    async def fetch(self, query: str, *args: Any) -> list[dict[str, str]]:
        self.calls.append("database")
        return [{"webhook_uid": uid} for uid in self.uids]


class _Apiserver:
    def __init__(self, answer: dict[str, Any] | KubeError, calls: list[str]) -> None:
        self.answer, self.calls = answer, calls

    async def get(self, path: str, params: Any = None) -> dict[str, Any]:
        self.calls.append(f"apiserver {path}")
        if isinstance(self.answer, KubeError):
            raise self.answer
        return self.answer


def _retention(
    held: list[str], answer: dict[str, Any] | KubeError
) -> tuple[DeliveryRetention, list[str]]:
    calls: list[str] = []
    retention = DeliveryRetention(
        cast(KubeClient, _Apiserver(answer, calls)),
        cast(asyncpg.Pool, _Database(held, calls)),
        Settings(),
    )
    return retention, calls


async def test_rows_of_webhooks_the_apiserver_no_longer_has_are_forgotten() -> None:
    listed = {"kind": "WebhookList", "items": [{"metadata": {"uid": "live"}}]}
    retention, calls = _retention(["live", "gone"], listed)

    await retention.find_orphans()
    assert retention.unforgotten == set()  # a suspect on a first pass
    await retention.find_orphans()

    assert retention.unforgotten == {"gone"}
    assert retention.suspects == set()
    # The database first: a Webhook made between the two reads has no rows yet.
    listing = "apiserver /apis/dockyard.io/v1alpha1/webhooks"
    assert calls == ["database", listing, "database", listing]


async def test_a_webhook_listed_again_is_no_longer_a_suspect() -> None:
    retention, _ = _retention(["back"], {"kind": "WebhookList", "items": []})
    await retention.find_orphans()
    assert retention.suspects == {"back"}
    cast(_Apiserver, retention.kube).answer = {
        "kind": "WebhookList",
        "items": [{"metadata": {"uid": "back"}}],
    }

    await retention.find_orphans()
    await retention.find_orphans()

    assert retention.unforgotten == set()


@pytest.mark.parametrize("status", [404, 403, 500])
async def test_nothing_is_forgotten_when_the_apiserver_cannot_say(status: int) -> None:
    retention, _ = _retention(["live", "gone"], KubeError(status, {"reason": "x"}))

    for _ in range(2):
        await retention.find_orphans()

    assert retention.unforgotten == retention.suspects == set()


async def test_no_rows_ask_the_apiserver_nothing() -> None:
    retention, calls = _retention([], {"items": []})

    await retention.find_orphans()

    assert calls == ["database"]


@pytest.mark.parametrize(
    "answer",
    [
        {"message": "<html>Sign in to the proxy</html>"},  # a non-JSON 200, as read
        {"kind": "WebhookList", "items": [], "metadata": {"continue": "next-page"}},
        {"kind": "WebhookList", "items": [{"metadata": {}}]},
        {"kind": "WebhookList", "items": ["not an object"]},
        {"kind": "BackupList", "items": []},
    ],
    ids=["not-a-list", "one-page-of-several", "no-uid", "not-an-object", "another-kind"],
)
async def test_an_answer_that_is_no_full_list_of_webhooks_forgets_nothing(
    answer: dict[str, Any],
) -> None:
    retention, _ = _retention(["live"], answer)

    for _ in range(2):
        await retention.find_orphans()

    assert retention.unforgotten == retention.suspects == set()
