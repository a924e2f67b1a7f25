"""One request cannot make the API send an unbounded number of SubjectAccessReviews.

The all-namespaces list asks once cluster-wide, then checks at most
``DOCKYARD_AUTHZ_FANOUT_NAMESPACES`` namespaces per request (``nextCursor`` continues),
with at most ``DOCKYARD_AUTHZ_FANOUT_CONCURRENCY`` reviews in flight; ``/api/v1/me`` keeps
to the same concurrency. The reviews are counted where the API sends them.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dockyard.api import keys
from dockyard.api.routes import me
from dockyard.core.models.common import API_VERSION
from dockyard.testbed.cluster import Testbed
from tests.conftest import Kubectl, StartApi

Client = TestClient[object, object]
pytestmark = pytest.mark.usefixtures("crds_installed")

PER_REQUEST = 4
CONCURRENCY = 2
EXTRA_NAMESPACES = 8
SAR_PATH = "/apis/authorization.k8s.io/v1/subjectaccessreviews"


class CountingKube:
    """The authorizer's Kubernetes client, counting the reviews it sends."""

    def __init__(self, kube: Any) -> None:
        self._kube = kube
        self.reviews = 0
        self.in_flight = 0
        self.peak = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._kube, name)

    async def create(self, path: str, body: Any, **kwargs: Any) -> Any:
        if path != SAR_PATH:
            return await self._kube.create(path, body, **kwargs)
        self.reviews += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            await asyncio.sleep(0.01)  # let concurrent reviews overlap, if they may
            return await self._kube.create(path, body, **kwargs)
        finally:
            self.in_flight -= 1

    def reset(self) -> None:
        self.reviews = self.peak = 0


def _environment(kubectl: Kubectl, namespace: str, name: str) -> None:
    manifest = {
        "apiVersion": API_VERSION,
        "kind": "Environment",
        "metadata": {"name": name},
        "spec": {"tier": "development", "image": "shop:1.0"},
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))


@pytest.fixture
def crowded(kubectl: Kubectl) -> Iterator[list[str]]:
    """Namespaces that each hold an environment the caller may not see."""
    names = [f"fan-{uuid.uuid4().hex[:6]}-{i}" for i in range(EXTRA_NAMESPACES)]
    for name in names:
        kubectl("create", "namespace", name)
        _environment(kubectl, name, "theirs")
    yield names
    for name in names:
        kubectl("delete", "environments", "--all", "-n", name, "--timeout=60s", check=False)
        kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
async def client(start_api: StartApi) -> tuple[Client, CountingKube]:
    client = await start_api(
        authz_cache_ttl=0,
        authz_fanout_namespaces=PER_REQUEST,
        authz_fanout_concurrency=CONCURRENCY,
    )
    authorizer = client.server.app[keys.AUTHORIZER]
    counter = CountingKube(authorizer.kube)
    authorizer.kube = counter
    return client, counter


async def _lister(
    http: Client, testbed: Testbed, kubectl: Kubectl, namespace: str, crowded: list[str]
) -> dict[str, str]:
    """Headers of a viewer of ``namespace`` alone, once the API's cache holds them all."""
    _environment(kubectl, namespace, "mine")
    user = f"lister-{uuid.uuid4().hex[:6]}"
    kubectl(
        "create",
        "rolebinding",
        "lister",
        "--clusterrole=dockyard-viewer",
        f"--user={user}",
        "-n",
        namespace,
    )
    cache = http.server.app[keys.ENVIRONMENT_CACHE]
    for _ in range(150):  # the watch cache sees the new environments within 30 s
        if {namespace, *crowded} <= cache.namespaces():
            break
        await asyncio.sleep(0.2)
    return {"Authorization": f"Bearer {testbed.user_token(user, [])}"}


async def _every_page(
    http: Client, counter: CountingKube, headers: dict[str, str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """Every environment the all-namespaces list shows, page by page, and its cursors;
    each page within the bounds on reviews."""
    seen: list[tuple[str, str]] = []
    cursors: list[str] = []
    cursor: str | None = None
    while True:
        counter.reset()
        query = "?limit=50" + (f"&cursor={cursor}" if cursor else "")
        response = await http.get(f"/api/v1/environments{query}", headers=headers)
        assert response.status == 200, await response.text()
        body = await response.json()
        # one cluster-wide review, then at most PER_REQUEST namespaces
        assert counter.reviews <= 1 + PER_REQUEST, (
            f"one list request sent {counter.reviews} reviews"
        )
        assert counter.peak <= CONCURRENCY
        seen += [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in body["items"]]
        cursor = body.get("nextCursor")
        if cursor is None:
            return seen, cursors
        cursors.append(cursor)
        assert len(cursors) < 1000


@pytest.mark.usefixtures("roles")
async def test_an_all_namespaces_list_checks_a_bounded_number_of_namespaces(
    client: tuple[Client, CountingKube],
    testbed: Testbed,
    kubectl: Kubectl,
    namespace: str,
    crowded: list[str],
) -> None:
    http, counter = client
    headers = await _lister(http, testbed, kubectl, namespace, crowded)
    seen, _ = await _every_page(http, counter, headers)
    assert seen == [(namespace, "mine")]


@pytest.mark.usefixtures("roles")
async def test_cursors_do_not_name_namespaces_the_caller_cannot_read(
    client: tuple[Client, CountingKube],
    testbed: Testbed,
    kubectl: Kubectl,
    namespace: str,
    crowded: list[str],
) -> None:
    """The list goes on after the last namespace it checked, readable or not: its cursor
    must not let the caller read that namespace's name."""
    http, counter = client
    headers = await _lister(http, testbed, kubectl, namespace, crowded)
    _, tokens = await _every_page(http, counter, headers)
    assert tokens, "the list should have needed more than one page"
    for token in tokens:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        assert not [ns for ns in crowded if ns.encode() in raw], raw
    # An altered cursor is refused, not followed.
    altered = tokens[0][:-2] + ("AA" if not tokens[0].endswith("AA") else "BB")
    response = await http.get(f"/api/v1/environments?cursor={altered}", headers=headers)
    assert response.status == 422
    assert [e["field"] for e in (await response.json())["errors"]] == ["query.cursor"]


async def test_me_keeps_its_reviews_in_bounds(
    client: tuple[Client, CountingKube], testbed: Testbed
) -> None:
    http, counter = client
    headers = {"Authorization": f"Bearer {testbed.user_token(f'me-{uuid.uuid4().hex[:6]}', [])}"}
    for _ in range(2):
        counter.reset()
        name = f"nowhere-{uuid.uuid4().hex[:6]}"
        response = await http.get(f"/api/v1/me?namespace={name}", headers=headers)
        assert response.status == 200
        # One review per (resource, verb) pair /me reports, in the namespace and cluster-wide.
        assert counter.reviews <= len(me.PAIRS) + len(me.CLUSTER_PAIRS) == 61
        assert counter.peak <= CONCURRENCY, f"/me had {counter.peak} reviews in flight"
