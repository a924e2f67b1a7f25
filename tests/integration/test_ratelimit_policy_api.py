"""RateLimitPolicies through the REST API, as real users, against the real apiserver."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from dockyard.api.app import create_app
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import Kubectl, get_json
from tests.integration.ratelimits import eventually, rule, settings

Client = TestClient[Any, Any]
pytestmark = pytest.mark.usefixtures("crds_installed")
ONE = "/api/v1/namespaces/{namespace}/ratelimitpolicies/{name}"


@pytest.fixture
async def client(
    testbed_state: State, namespace: str, platform_migrated: None, aiohttp_client: AiohttpClient
) -> Client:
    # A platform namespace with no policies: the test's namespace is a tenant.
    return await aiohttp_client(create_app(settings(testbed_state, f"{namespace}-platform")))


def _user(testbed: Testbed, kubectl: Kubectl, namespace: str, role: str) -> dict[str, str]:
    user = f"{role}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "rolebinding", user, f"--clusterrole=dockyard-{role}", f"--user={user}",
            "-n", namespace)  # fmt: skip
    return {"Authorization": f"Bearer {testbed.user_token(user, [])}"}


@pytest.mark.usefixtures("roles")
async def test_operators_manage_policies_and_developers_only_read_them(
    client: Client, testbed: Testbed, kubectl: Kubectl, namespace: str
) -> None:
    operator = _user(testbed, kubectl, namespace, "operator")
    developer = _user(testbed, kubectl, namespace, "developer")
    base = f"/api/v1/namespaces/{namespace}/ratelimitpolicies"
    body = {
        "metadata": {"name": "reads", "labels": {"team": "shop"}},
        "spec": {"rules": [rule("get-one", 100, match={"methods": ["GET"], "paths": [ONE]})]},
    }

    denied = await client.post(base, json=body, headers=developer)
    assert denied.status == 403
    created = await client.post(base, json=body, headers=operator)
    policy = await created.json()
    assert created.status == 201, policy
    assert created.headers["ETag"] == f'"{policy["metadata"]["resourceVersion"]}"'
    assert policy["spec"]["rules"][0]["key"] == "Subject"
    assert get_json(kubectl, "rlp", "reads", "-n", namespace)["spec"] == policy["spec"]

    listed = await (await client.get(f"{base}?labelSelector=team%3Dshop", headers=developer)).json()
    assert [p["metadata"]["name"] for p in listed["items"]] == ["reads"]

    # Every API without Redis writes the policies' status (one replica is what such a
    # setup means); on the shared test bed another worker's API may too. Once the status
    # reports this generation it is settled, and the ETag read next stays current.
    await eventually(lambda: _status_settled(kubectl, namespace, "reads"))
    got = await client.get(f"{base}/reads", headers=developer)
    assert got.status == 200
    etag = got.headers["ETag"]
    patch_headers = {**operator, "Content-Type": "application/merge-patch+json", "If-Match": etag}
    tighter = {"spec": {"rules": [rule("get-one", 2, match={"methods": ["GET"], "paths": [ONE]})]}}
    patched = await client.patch(f"{base}/reads", data=json.dumps(tighter), headers=patch_headers)
    assert patched.status == 200, await patched.text()
    assert (await patched.json())["spec"]["rules"][0]["limit"]["requests"] == 2
    stale = await client.patch(f"{base}/reads", data=json.dumps(tighter), headers=patch_headers)
    assert stale.status == 412

    # The policy is this namespace's: reads of its objects are now limited, for the
    # developer as for anyone, within seconds of the write.
    statuses: list[int] = []
    for _ in range(100):
        statuses.append((await client.get(f"{base}/reads", headers=developer)).status)
        if statuses[-1] == 429:
            break
        await asyncio.sleep(0.05)
    assert statuses[-1] == 429

    # The API's status reporter writes the policy's throttles every few seconds, which
    # moves its resourceVersion: a 412 is right when that happened in between.
    for _ in range(5):
        fresh = get_json(kubectl, "rlp", "reads", "-n", namespace)["metadata"]["resourceVersion"]  # type: ignore[index]
        deleted = await client.delete(
            f"{base}/reads", headers={**operator, "If-Match": f'"{fresh}"'}
        )
        if deleted.status != 412:
            break
        now = get_json(kubectl, "rlp", "reads", "-n", namespace)["metadata"]["resourceVersion"]  # type: ignore[index]
        assert now != fresh, "412 for the version just read"
    assert deleted.status == 204
    assert kubectl("get", "rlp", "-n", namespace, "-o", "name").stdout == ""


@pytest.mark.usefixtures("roles")
async def test_invalid_policies_come_back_as_problems_with_field_paths(
    client: Client, testbed: Testbed, kubectl: Kubectl, namespace: str
) -> None:
    operator = _user(testbed, kubectl, namespace, "operator")
    base = f"/api/v1/namespaces/{namespace}/ratelimitpolicies"

    schema = await client.post(
        base, json={"metadata": {"name": "a"}, "spec": {"rules": [rule("r", 0)]}}, headers=operator
    )
    assert schema.status == 422
    assert "spec.rules[0].limit.requests" in {e["field"] for e in (await schema.json())["errors"]}

    # Only the apiserver's CEL rules know this one.
    cel = await client.post(
        base,
        json={"metadata": {"name": "b"}, "spec": {"rules": [rule("r", 5, key="Header")]}},
        headers=operator,
    )
    problem = await cel.json()
    assert cel.status == 422, problem
    assert any(
        e["field"] == "spec.rules[0].header" and "required when key is Header" in e["message"]
        for e in problem["errors"]
    )


def _status_settled(kubectl: Kubectl, namespace: str, name: str) -> bool:
    policy: dict[str, Any] = get_json(kubectl, "rlp", name, "-n", namespace)
    status = policy.get("status") or {}
    return bool(status.get("observedGeneration") == policy["metadata"]["generation"])
