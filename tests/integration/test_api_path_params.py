"""Path parameters are Kubernetes names, checked before authorization: a ``{name}`` that
smuggles ``%2F..`` segments cannot reach an object of another namespace.

Against the real apiserver with the shipped roles; the operator does not run here (a
status is written as the admin, as the operator would).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dockyard.testbed.cluster import Testbed
from tests.conftest import Kubectl, get_json, wait_for

Client = TestClient[web.Request, web.Application]
Headers = dict[str, str]
pytestmark = pytest.mark.usefixtures("crds_installed")

PROBLEMS = "https://dockyard.io/problems/"


def _namespace(kubectl: Kubectl) -> str:
    # Outside every session's operator pattern: nothing reconciles these objects.
    name = f"paths-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    return name


@pytest.fixture
def two_namespaces(kubectl: Kubectl) -> Iterator[tuple[str, str]]:
    pair = (_namespace(kubectl), _namespace(kubectl))
    yield pair
    for name in pair:
        kubectl("delete", "namespace", name, "--wait=false", check=False)


def _bind(kubectl: Kubectl, user: str, role: str, namespace: str) -> None:
    kubectl(
        "create",
        "rolebinding",
        f"{user}-{role}",
        f"--clusterrole=dockyard-{role}",
        f"--user={user}",
        "-n",
        namespace,
    )
    wait_for(
        lambda: (
            kubectl(
                "auth",
                "can-i",
                "patch",
                "restores.dockyard.io",
                f"--as={user}",
                "-n",
                namespace,
                check=False,
            ).stdout.strip()
            == "yes"
        ),
        timeout=10,
        interval=0.1,
    )


def _headers(testbed: Testbed, user: str) -> Headers:
    return {"Authorization": f"Bearer {testbed.user_token(user, [])}"}


async def _problem(response: Any) -> dict[str, Any]:
    assert response.content_type == "application/problem+json", await response.text()
    body: dict[str, Any] = await response.json()
    return body


@pytest.mark.usefixtures("roles")
async def test_an_encoded_slash_in_a_name_cannot_approve_a_restore_of_another_namespace(
    client: Client, testbed: Testbed, kubectl: Kubectl, two_namespaces: tuple[str, str]
) -> None:
    mine, theirs = two_namespaces
    # Mallory may approve in her own namespace; in theirs she is only a developer.
    mallory, victim = f"mallory-{uuid.uuid4().hex[:6]}", f"victim-{uuid.uuid4().hex[:6]}"
    _bind(kubectl, mallory, "operator", mine)
    _bind(kubectl, mallory, "developer", theirs)
    _bind(kubectl, victim, "developer", theirs)
    created = await client.post(
        f"/api/v1/namespaces/{theirs}/restores",
        json={"metadata": {"name": "r"}, "spec": {"source": {"backupRef": {"name": "b"}}}},
        headers=_headers(testbed, victim),
    )
    assert created.status == 201, await created.text()
    kubectl(
        "patch",
        "restore",
        "r",
        "-n",
        theirs,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": "AwaitingApproval"}}),
    )

    crafted = f"x%2F..%2F..%2F..%2F{theirs}%2Frestores%2Fr"
    response = await client.post(
        f"/api/v1/namespaces/{mine}/restores/{crafted}/approve",
        headers=_headers(testbed, mallory),
    )

    assert response.status in (400, 404), await response.text()
    body = await _problem(response)
    assert body["type"] == PROBLEMS + "invalid-name"
    annotations = get_json(kubectl, "restore", "r", "-n", theirs)["metadata"]
    assert "dockyard.io/approved-by" not in (annotations.get("annotations") or {})  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/namespaces/Not_A_Label/environments",
        "/api/v1/namespaces/a.b/restores",
        "/api/v1/namespaces/" + "n" * 64 + "/backups",
        "/api/v1/namespaces/ok/environments/UPPER",
        "/api/v1/namespaces/ok/restores/a..b",
        "/api/v1/namespaces/-ok/backups/b",
        "/api/v1/namespaces/ok/restores/a%2Fb/plan",
        "/api/v1/namespaces/ok/restoredrills/" + "a" * 254 + "/runs",
    ],
)
async def test_a_path_parameter_that_is_not_a_kubernetes_name_is_400_without_a_token(
    client: Client, path: str
) -> None:
    # No token: the name is refused before authentication is even attempted.
    response = await client.get(path)
    assert response.status == 400, await response.text()
    body = await _problem(response)
    assert body["type"] == PROBLEMS + "invalid-name"


async def test_me_for_a_namespace_that_cannot_exist_allows_nothing(
    client: Client, testbed: Testbed
) -> None:
    response = await client.get(
        "/api/v1/me?namespace=a%2Fb", headers=_headers(testbed, f"u-{uuid.uuid4().hex[:6]}")
    )
    body = await response.json()
    assert response.status == 200, body
    assert body["namespace"] == "a/b"
    assert all(p["verbs"] == [] for p in body["permissions"])


def test_the_openapi_document_publishes_the_name_patterns() -> None:
    from dockyard.api.app import registry
    from dockyard.api.openapi import build_document

    document = build_document(registry().operations)
    operation = document["paths"]["/api/v1/namespaces/{namespace}/restores/{name}/approve"]["post"]
    schemas = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert schemas["namespace"]["maxLength"] == 63
    assert schemas["namespace"]["pattern"].startswith("^[a-z0-9]")
    assert schemas["name"]["maxLength"] == 253
