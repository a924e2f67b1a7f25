"""The one-page lists of the plain kinds (webhooks, rate-limit and scaling policies,
backup stores): their ``?labelSelector=`` holds to the paged lists' limits, refused with
422 past them rather than cut short, which would apply half a filter."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from dockyard.api import errors, keys
from dockyard.api.app import registry
from dockyard.api.openapi import build_document
from dockyard.api.routes.webhooks import ROUTES

Object = dict[str, Any]


class Cache:
    """A synced watch cache of webhooks in namespace shop, one per tier."""

    resource_version = 7

    def __init__(self) -> None:
        self.objects = [
            {
                "metadata": {
                    "namespace": "shop",
                    "name": tier,
                    "labels": {"team": "shop", "tier": tier},
                }
            }
            for tier in ("production", "staging")
        ]
        self.listed = 0

    async def wait_synced(self) -> None:
        return None

    def list(
        self, *, namespaces: object = None, predicate: Callable[[Object], bool] | None = None
    ) -> list[Object]:
        self.listed += 1
        return [o for o in self.objects if predicate is None or predicate(o)]


def _list(query: dict[str, str]) -> tuple[Cache, web.Response | errors.Problem]:
    app = web.Application()
    cache = Cache()
    app[keys.WEBHOOK_CACHE] = cache  # type: ignore[misc]
    request = make_mocked_request(
        "GET",
        f"/api/v1/namespaces/shop/webhooks?{urlencode(query)}",
        match_info={"namespace": "shop"},
        app=app,
    )
    try:
        return cache, asyncio.run(ROUTES.list_namespaced(request))
    except errors.Problem as problem:
        return cache, problem


def _names(answer: web.Response | errors.Problem) -> list[str]:
    assert isinstance(answer, web.Response)
    assert answer.status == 200
    assert isinstance(answer.body, bytes)
    return [o["metadata"]["name"] for o in json.loads(answer.body)["items"]]


def test_a_label_selector_of_1024_characters_filters_as_a_whole() -> None:
    selector = "x!=1234," + "team=shop," * 100 + "tier!=production"
    assert len(selector) == 1024
    _, answer = _list({"labelSelector": selector})
    assert _names(answer) == ["staging"]


def test_a_label_selector_over_1024_characters_is_refused_not_cut_short() -> None:
    """Cut at 1024, this one would end in ``tier`` (has a tier) and list production."""
    selector = "team=shop," * 102 + "tier!=production"
    assert selector[:1024].endswith(",tier")
    cache, answer = _list({"labelSelector": selector})
    assert isinstance(answer, errors.Problem)
    assert answer.status == 422
    assert [e.field for e in answer.errors or []] == ["query.labelSelector"]
    assert cache.listed == 0


@pytest.mark.parametrize("selector", ["team=shöp", "team=shop\ttier=x"])
def test_a_label_selector_of_other_than_printable_ascii_is_refused(selector: str) -> None:
    _, answer = _list({"labelSelector": selector})
    assert isinstance(answer, errors.Problem)
    assert [e.field for e in answer.errors or []] == ["query.labelSelector"]


def test_an_unknown_parameter_is_refused_with_its_name() -> None:
    _, answer = _list({"labelSelector": "team=shop", "colour": "red"})
    assert isinstance(answer, errors.Problem)
    assert answer.status == 422
    assert [e.field for e in answer.errors or []] == ["query.colour"]


@pytest.mark.parametrize(
    "operation",
    [
        "listNamespacedWebhooks",
        "listNamespacedRateLimitPolicies",
        "listNamespacedScalingPolicies",
        "listBackupStores",
    ],
)
def test_a_plain_list_documents_its_label_selector_as_the_paged_lists_do(operation: str) -> None:
    document = build_document(registry().operations)
    operations = {op["operationId"]: op for m in document["paths"].values() for op in m.values()}
    query = {p["name"]: p for p in operations[operation]["parameters"] if p["in"] == "query"}
    paged = {p["name"]: p for p in operations["listNamespacedBackups"]["parameters"]}
    assert query == {"labelSelector": paged["labelSelector"]}
    assert query["labelSelector"]["schema"]["maxLength"] == 1024
