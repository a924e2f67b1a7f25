"""BackupStores through the REST API, against the real apiserver, as real users.

A BackupStore is cluster-scoped: its routes have no namespace, and only a cluster-wide
grant opens them. The attack: a tenant holding every Dockyard right in its own namespace
(``dockyard-admin`` by RoleBinding) tries to read, create, change and delete the
cluster's stores over REST.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dockyard.testbed.cluster import Testbed
from tests.conftest import Kubectl, get_json, remove_backup_store

Client = TestClient[object, object]
# A store is felt cluster-wide (the operator fills Backups from it), so nothing else runs
# beside these tests; none of their stores is marked default.
pytestmark = [pytest.mark.usefixtures("crds_installed"), pytest.mark.alone]

BASE = "/api/v1/backupstores"
MERGE_PATCH = "application/merge-patch+json"


@pytest.fixture
def admin(testbed: Testbed, kubectl: Kubectl, roles: None) -> Iterator[dict[str, str]]:
    """A platform admin: ``dockyard-admin`` bound cluster-wide."""
    user = f"store-admin-{uuid.uuid4().hex[:6]}"
    kubectl("create", "clusterrolebinding", user, "--clusterrole=dockyard-admin", f"--user={user}")
    yield {"Authorization": f"Bearer {testbed.user_token(user, [])}"}
    kubectl("delete", "clusterrolebinding", user)


@pytest.fixture
def tenant(
    testbed: Testbed, kubectl: Kubectl, namespace: str, roles: None
) -> tuple[str, dict[str, str]]:
    """A tenant with every Dockyard right, in its own namespace only: its name and headers."""
    user = f"tenant-{uuid.uuid4().hex[:6]}"
    kubectl("create", "rolebinding", user, "--clusterrole=dockyard-admin", f"--user={user}",
            "-n", namespace)  # fmt: skip
    return user, {"Authorization": f"Bearer {testbed.user_token(user, [])}"}


@pytest.fixture
def store(kubectl: Kubectl) -> Iterator[str]:
    """A unique store name; the store is deleted after the test if it is still there."""
    name = f"t-store-{uuid.uuid4().hex[:8]}"
    yield name
    remove_backup_store(kubectl, name)


def _body(name: str, root: Path, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"team": "platform"}},
        "spec": {
            "storage": {"filesystem": {"path": str(root / name)}},
            "encryption": {"keySecretRef": {"name": "store-key", "key": "key"}},
            "secretNamespace": "dockyard-system",
            **spec,
        },
    }


def _fields(problem: dict[str, Any]) -> set[str]:
    return {error["field"] for error in problem.get("errors", [])}


async def _gone(client: Client, headers: dict[str, str], path: str) -> int:
    """The status of GET ``path`` once the watch cache has seen the delete (404)."""
    for _ in range(50):
        status = (await client.get(path, headers=headers)).status
        if status == 404:
            return status
        await asyncio.sleep(0.1)
    return status


async def test_an_admin_creates_reads_changes_and_deletes_a_store(
    client: Client, admin: dict[str, str], kubectl: Kubectl, store: str, tmp_path: Path
) -> None:
    body = _body(store, tmp_path)
    retry = {**admin, "Idempotency-Key": f"create-{store}"}
    created = await client.post(BASE, json=body, headers=retry)
    made = await created.json()
    assert created.status == 201, made
    assert created.headers["ETag"] == f'"{made["metadata"]["resourceVersion"]}"'
    assert "namespace" not in made["metadata"]
    # The same request again is the same answer, not a second create (nor a 409).
    replayed = await client.post(BASE, json=body, headers=retry)
    assert replayed.status == 201
    assert replayed.headers["Idempotency-Replayed"] == "true"
    assert (await replayed.json())["metadata"]["uid"] == made["metadata"]["uid"]
    # kubectl sees the very object.
    seen = get_json(kubectl, "backupstore", store)
    assert seen["metadata"]["uid"] == made["metadata"]["uid"]
    assert seen["spec"] == made["spec"]
    assert seen["spec"]["default"] is False

    listed = await client.get(f"{BASE}?labelSelector=team%3Dplatform", headers=admin)
    assert listed.status == 200
    assert store in [s["metadata"]["name"] for s in (await listed.json())["items"]]
    got = await client.get(f"{BASE}/{store}", headers=admin)
    assert got.status == 200
    etag = got.headers["ETag"]

    # Rotate the key: the current one moves to previousKeySecretRefs.
    rotation = {
        "spec": {
            "encryption": {
                "keySecretRef": {"name": "store-key-2", "key": "key"},
                "previousKeySecretRefs": [{"name": "store-key", "key": "key"}],
            }
        }
    }
    changing = {**admin, "Content-Type": MERGE_PATCH, "If-Match": etag}
    patched = await client.patch(f"{BASE}/{store}", data=json.dumps(rotation), headers=changing)
    assert patched.status == 200, await patched.text()
    after = get_json(kubectl, "backupstore", store)["spec"]["encryption"]
    assert after["keySecretRef"]["name"] == "store-key-2"
    assert after["previousKeySecretRefs"] == [{"name": "store-key", "key": "key"}]
    # The ETag read before the change no longer matches: nothing is written.
    stale = await client.patch(f"{BASE}/{store}", data=json.dumps(rotation), headers=changing)
    assert stale.status == 412
    refused = await client.delete(f"{BASE}/{store}", headers={**admin, "If-Match": etag})
    assert refused.status == 412
    assert get_json(kubectl, "backupstore", store)["metadata"]["uid"] == made["metadata"]["uid"]

    deleted = await client.delete(f"{BASE}/{store}", headers=admin)
    assert deleted.status == 204
    assert kubectl("get", "backupstore", store, check=False).returncode != 0
    assert await _gone(client, admin, f"{BASE}/{store}") == 404


async def test_a_created_store_is_audited_by_its_name_and_without_a_namespace(
    client: Client, admin: dict[str, str], store: str, tmp_path: Path
) -> None:
    created = await client.post(BASE, json=_body(store, tmp_path), headers=admin)
    assert created.status == 201, await created.text()

    trail = await client.get(
        f"/api/v1/audit-events?resource=backupstores&name={store}", headers=admin
    )
    assert trail.status == 200, await trail.text()
    [event] = (await trail.json())["items"]
    assert "op=createBackupStore" in event["action"]
    assert (event["namespace"], event["name"], event["statusCode"]) == (None, store, 201)


async def test_invalid_stores_are_problems_with_field_paths_and_nothing_is_written(
    client: Client, admin: dict[str, str], kubectl: Kubectl, store: str, tmp_path: Path
) -> None:
    schema = await client.post(
        BASE, json=_body(store, tmp_path, secretNamespace="Not_A_Namespace"), headers=admin
    )
    assert schema.status == 422
    assert schema.content_type == "application/problem+json"
    assert "spec.secretNamespace" in _fields(await schema.json())
    assert kubectl("get", "backupstore", store, check=False).returncode != 0
    no_values = {"matchExpressions": [{"key": "tier", "operator": "In"}]}
    selector = await client.post(
        BASE, json=_body(store, tmp_path, namespaceSelector=no_values), headers=admin
    )
    assert selector.status == 422
    problem = await selector.json()
    assert any(f.startswith("spec.namespaceSelector.matchExpressions") for f in _fields(problem))
    assert "In and NotIn need values" in json.dumps(problem)
    assert kubectl("get", "backupstore", store, check=False).returncode != 0

    created = await client.post(BASE, json=_body(store, tmp_path), headers=admin)
    assert created.status == 201, await created.text()
    # Only the apiserver's CEL rule knows that storage may not change.
    moved = {"spec": {"storage": {"filesystem": {"path": str(tmp_path / "elsewhere")}}}}
    cel = await client.patch(
        f"{BASE}/{store}",
        data=json.dumps(moved),
        headers={**admin, "Content-Type": MERGE_PATCH},
    )
    problem = await cel.json()
    assert cel.status == 422, problem
    assert "spec.storage" in _fields(problem), problem
    assert "immutable" in json.dumps(problem)
    kept = get_json(kubectl, "backupstore", store)["spec"]["storage"]
    assert kept == {"filesystem": {"path": str(tmp_path / store)}}


async def test_a_tenant_with_every_right_in_its_namespace_cannot_touch_the_stores(
    client: Client,
    admin: dict[str, str],
    tenant: tuple[str, dict[str, str]],
    kubectl: Kubectl,
    store: str,
    tmp_path: Path,
) -> None:
    attacker, headers = tenant
    created = await client.post(BASE, json=_body(store, tmp_path), headers=admin)
    assert created.status == 201, await created.text()
    mine = f"{store}-mine"

    assert (await client.get(BASE, headers=headers)).status == 403
    assert (await client.get(f"{BASE}/{store}", headers=headers)).status == 403
    assert (await client.post(BASE, json=_body(mine, tmp_path), headers=headers)).status == 403
    default = json.dumps({"spec": {"default": True}})
    hijack = await client.patch(
        f"{BASE}/{store}", data=default, headers={**headers, "Content-Type": MERGE_PATCH}
    )
    assert hijack.status == 403
    assert (await client.delete(f"{BASE}/{store}", headers=headers)).status == 403
    assert (await client.get(BASE)).status == 401

    # Nothing changed: the admin's store is as made, and the tenant's was never created.
    kept = get_json(kubectl, "backupstore", store)
    assert kept["spec"]["default"] is False
    assert (
        kept["metadata"]["resourceVersion"] == (await created.json())["metadata"]["resourceVersion"]
    )
    assert kubectl("get", "backupstore", mine, check=False).returncode != 0

    # Every attempt is in the audit trail, denied, with the verb it was refused.
    trail = f"/api/v1/audit-events?actor={attacker}&resource=backupstores"
    verbs: list[str] = []
    for _ in range(50):
        listed = await client.get(trail, headers=admin)
        assert listed.status == 200, await listed.text()
        items = (await listed.json())["items"]
        assert all((e["outcome"], e["statusCode"]) == ("denied", 403) for e in items), items
        verbs = sorted(e["action"].rpartition("verb=")[2] for e in items)
        if len(verbs) == 5:
            break
        await asyncio.sleep(0.1)
    assert verbs == ["create", "delete", "get", "list", "patch"]
