"""ScalingPolicies through the REST API, against the real apiserver, as real users: the
same objects and the same refusals as kubectl."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dockyard.testbed.cluster import Testbed
from tests.conftest import Kubectl, StartApi, get_json

Client = TestClient[object, object]
pytestmark = pytest.mark.usefixtures("crds_installed")

MERGE_PATCH = "application/merge-patch+json"


@pytest.fixture
async def client(start_api: StartApi) -> Client:
    return await start_api()


def _user(testbed: Testbed, kubectl: Kubectl, namespace: str, role: str) -> dict[str, str]:
    user = f"{role}-{uuid.uuid4().hex[:6]}"
    kubectl(
        "create",
        "rolebinding",
        role,
        f"--clusterrole=dockyard-{role}",
        f"--user={user}",
        "-n",
        namespace,
    )
    return {"Authorization": f"Bearer {testbed.user_token(user, [])}"}


@pytest.fixture
def developer(testbed: Testbed, kubectl: Kubectl, namespace: str, roles: None) -> dict[str, str]:
    return _user(testbed, kubectl, namespace, "developer")


@pytest.fixture
def viewer(testbed: Testbed, kubectl: Kubectl, namespace: str, roles: None) -> dict[str, str]:
    return _user(testbed, kubectl, namespace, "viewer")


def _body(name: str = "shop", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"team": "shop"}},
        "spec": {"targetRef": {"name": "shop"}, "minReplicas": 2, "maxReplicas": 6, **spec},
    }


async def test_create_get_list_patch_delete(
    client: Client, developer: dict[str, str], namespace: str, kubectl: Kubectl
) -> None:
    base = f"/api/v1/namespaces/{namespace}/scalingpolicies"
    schedule = {"name": "office", "schedule": "0 8 * * 1-5", "duration": "10h", "minReplicas": 4}
    created = await client.post(
        base, json=_body(metrics={"cpuUtilization": 70}, schedules=[schedule]), headers=developer
    )
    body = await created.json()
    assert created.status == 201, body
    assert created.headers["ETag"] == f'"{body["metadata"]["resourceVersion"]}"'
    assert body["spec"]["pauseDuringRestore"] is True
    assert body["spec"]["schedules"][0]["timeZone"] == "UTC"
    stored = get_json(kubectl, "scalingpolicy", "shop", "-n", namespace)
    assert stored["spec"]["metrics"] == {"cpuUtilization": 70}  # type: ignore[index]

    listed = await client.get(base, params={"labelSelector": "team=shop"}, headers=developer)
    assert [item["metadata"]["name"] for item in (await listed.json())["items"]] == ["shop"]
    none = await client.get(base, params={"labelSelector": "team=other"}, headers=developer)
    assert (await none.json())["items"] == []

    # The session's operator writes the policy's status meanwhile, which moves its
    # resourceVersion on: a 412 then is right, so read the ETag again and retry.
    for _ in range(5):
        got = await client.get(f"{base}/shop", headers=developer)
        assert got.status == 200
        etag = got.headers["ETag"]
        patched = await client.patch(
            f"{base}/shop",
            data=json.dumps({"spec": {"maxReplicas": 8, "paused": True}}),
            headers={**developer, "Content-Type": MERGE_PATCH, "If-Match": etag},
        )
        if patched.status != 412:
            break
        await asyncio.sleep(0.5)
    assert patched.status == 200, await patched.text()
    assert (await patched.json())["spec"]["maxReplicas"] == 8
    stored = get_json(kubectl, "scalingpolicy", "shop", "-n", namespace)
    assert stored["spec"]["paused"] is True  # type: ignore[index]

    stale = await client.patch(
        f"{base}/shop",
        data=json.dumps({"spec": {"maxReplicas": 9}}),
        headers={**developer, "Content-Type": MERGE_PATCH, "If-Match": etag},
    )
    assert stale.status == 412

    deleted = await client.delete(f"{base}/shop", headers=developer)
    assert deleted.status == 204
    result = kubectl("get", "scalingpolicy", "shop", "-n", namespace, check=False)
    assert "NotFound" in result.stderr
    missing = await client.get(f"{base}/shop", headers=developer)
    assert missing.status == 404


@pytest.mark.parametrize(
    ("spec", "field", "message"),
    [
        ({"minReplicas": 7}, "spec", "minReplicas must not exceed maxReplicas"),
        ({"metrics": {"cpuUtilization": 0}}, "spec.metrics.cpuUtilization", "greater than"),
        ({"metrics": {"memoryUtilization": 101}}, "spec.metrics.memoryUtilization", "less than"),
        (
            {
                "schedules": [
                    {"name": "x", "schedule": "0 8 * * * *", "duration": "1h", "minReplicas": 2}
                ]
            },
            "spec.schedules[0].schedule",
            "expected 5 fields",
        ),
    ],
)
async def test_invalid_policies_are_refused_with_field_paths(
    client: Client,
    developer: dict[str, str],
    namespace: str,
    spec: dict[str, Any],
    field: str,
    message: str,
) -> None:
    response = await client.post(
        f"/api/v1/namespaces/{namespace}/scalingpolicies", json=_body(**spec), headers=developer
    )
    problem = await response.json()
    assert response.status == 422, problem
    assert response.content_type == "application/problem+json"
    assert any(
        error["field"] == field and message in error["message"] for error in problem["errors"]
    ), problem


async def test_a_patch_that_breaks_the_range_is_refused(
    client: Client, developer: dict[str, str], namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/scalingpolicies"
    assert (await client.post(base, json=_body(), headers=developer)).status == 201
    response = await client.patch(
        f"{base}/shop",
        data=json.dumps({"spec": {"maxReplicas": 1}}),
        headers={**developer, "Content-Type": MERGE_PATCH},
    )
    assert response.status == 422
    assert "minReplicas must not exceed maxReplicas" in await response.text()


async def test_a_viewer_reads_but_cannot_write(
    client: Client,
    developer: dict[str, str],
    viewer: dict[str, str],
    namespace: str,
) -> None:
    base = f"/api/v1/namespaces/{namespace}/scalingpolicies"
    assert (await client.post(base, json=_body(), headers=developer)).status == 201
    assert (await client.get(f"{base}/shop", headers=viewer)).status == 200
    refused = await client.post(base, json=_body("other"), headers=viewer)
    assert refused.status == 403
    assert (await client.delete(f"{base}/shop", headers=viewer)).status == 403
