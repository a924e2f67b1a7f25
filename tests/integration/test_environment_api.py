"""Environments through the REST API, against the real apiserver, as real users."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from dockyard.api.routes.kinds import KindRoutes
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import Kubectl, get_json

Client = TestClient[object, object]
pytestmark = pytest.mark.usefixtures("crds_installed")


@pytest.fixture
def developer(testbed: Testbed, kubectl: Kubectl, namespace: str, roles: None) -> dict[str, str]:
    user = f"dev-{uuid.uuid4().hex[:6]}"
    kubectl(
        "create",
        "rolebinding",
        "dev",
        "--clusterrole=dockyard-developer",
        f"--user={user}",
        "-n",
        namespace,
    )
    return {"Authorization": f"Bearer {testbed.user_token(user, [])}"}


@pytest.fixture
def viewer(testbed: Testbed, kubectl: Kubectl, namespace: str, roles: None) -> dict[str, str]:
    user = f"viewer-{uuid.uuid4().hex[:6]}"
    kubectl(
        "create",
        "rolebinding",
        "view",
        "--clusterrole=dockyard-viewer",
        f"--user={user}",
        "-n",
        namespace,
    )
    return {"Authorization": f"Bearer {testbed.user_token(user, [])}"}


def _body(name: str, tier: str = "development", **spec: object) -> dict[str, object]:
    return {
        "metadata": {"name": name, "labels": {"team": "shop"}},
        "spec": {"tier": tier, "image": "shop:1.0", **spec},
    }


async def test_create_get_patch_delete(
    client: Client, developer: dict[str, str], namespace: str, kubectl: Kubectl
) -> None:
    base = f"/api/v1/namespaces/{namespace}/environments"
    created = await client.post(base, json=_body("shop"), headers=developer)
    body = await created.json()
    assert created.status == 201, body
    assert created.headers["ETag"] == f'"{body["metadata"]["resourceVersion"]}"'
    assert "managedFields" not in body["metadata"]
    # The object really is in Kubernetes, created as the developer.
    assert get_json(kubectl, "environment", "shop", "-n", namespace)["spec"]["image"] == "shop:1.0"  # type: ignore[index]

    # The operator may write status between a read and the patch (a new
    # resourceVersion, so 412): re-read and patch again, as a client would.
    for _ in range(5):
        got = await client.get(f"{base}/shop", headers=developer)
        assert got.status == 200
        etag = got.headers["ETag"]
        patched = await client.patch(
            f"{base}/shop",
            data=json.dumps({"spec": {"image": "shop:1.1"}}),
            headers={
                **developer,
                "Content-Type": "application/merge-patch+json",
                "If-Match": etag,
            },
        )
        if patched.status != 412:
            break
    assert patched.status == 200, await patched.text()
    assert (await patched.json())["spec"]["image"] == "shop:1.1"
    assert patched.headers["ETag"] != etag

    stale = await client.patch(
        f"{base}/shop",
        data=json.dumps({"spec": {"image": "shop:1.2"}}),
        headers={**developer, "Content-Type": "application/merge-patch+json", "If-Match": etag},
    )
    assert stale.status == 412
    assert (await stale.json())["type"] == "https://dockyard.io/problems/precondition-failed"
    assert get_json(kubectl, "environment", "shop", "-n", namespace)["spec"]["image"] == "shop:1.1"  # type: ignore[index]

    stale_delete = await client.delete(f"{base}/shop", headers={**developer, "If-Match": etag})
    assert stale_delete.status == 412
    # The operator may write status meanwhile (a new resourceVersion): re-read, then delete.
    for _ in range(5):
        fresh = await client.get(f"{base}/shop", headers=developer)
        deleted = await client.delete(
            f"{base}/shop", headers={**developer, "If-Match": fresh.headers["ETag"]}
        )
        if deleted.status != 412:
            break
    assert deleted.status == 202


async def test_invalid_bodies_come_back_with_field_paths(
    client: Client, developer: dict[str, str], namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/environments"
    bad = await client.post(
        base,
        json={"metadata": {"name": "x"}, "spec": {"tier": "prod", "image": "a:1", "extra": 1}},
        headers=developer,
    )
    problem = await bad.json()
    assert bad.status == 422
    fields = {e["field"] for e in problem["errors"]}
    assert {"spec.tier", "spec.extra"} <= fields
    # A rule only the apiserver knows (CEL) comes back the same way.
    cel = await client.post(base, json=_body("prod", "production", replicas=1), headers=developer)
    problem = await cel.json()
    assert cel.status == 422, problem
    assert any(
        e["field"] == "spec.replicas" and "at least 2 replicas" in e["message"]
        for e in problem["errors"]
    )


async def test_a_name_beginning_with_a_digit_is_refused_saying_why(
    client: Client, developer: dict[str, str], namespace: str
) -> None:
    """Its Service would be refused after its database was made: refused up front."""
    base = f"/api/v1/namespaces/{namespace}/environments"
    refused = await client.post(base, json=_body("1shop"), headers=developer)
    problem = await refused.json()
    assert refused.status == 422, problem
    [error] = problem["errors"]
    assert error["field"] == "metadata.name"
    assert "DNS-1035 label" in error["message"]
    assert (await client.get(f"{base}/1shop", headers=developer)).status == 404


async def test_idempotent_post_replays_the_first_answer(
    client: Client, developer: dict[str, str], namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/environments"
    headers = {**developer, "Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = await client.post(base, json=_body("once"), headers=headers)
    second = await client.post(base, json=_body("once"), headers=headers)
    assert first.status == second.status == 201
    assert second.headers.get("Idempotency-Replayed") == "true"
    assert (await first.json())["metadata"]["uid"] == (await second.json())["metadata"]["uid"]
    other = await client.post(base, json=_body("twice"), headers=headers)
    assert other.status == 422
    assert (await other.json())["type"].endswith("idempotency-key-reused")
    # Without the key, the same POST is a conflict: the object exists.
    again = await client.post(base, json=_body("once"), headers=developer)
    assert again.status == 409


async def _trail(state: State, namespace: str, name: str) -> list[asyncpg.Record]:
    """The REST API's audit rows about the environment ``name``, oldest first."""
    conn = await asyncpg.connect(state.database_url)
    try:
        return list(
            await conn.fetch(
                "SELECT action, status_code, diff::text AS diff FROM audit_events "
                "WHERE source = 'rest' AND namespace = $1 AND name = $2 ORDER BY id",
                namespace,
                name,
            )
        )
    finally:
        await conn.close()


async def test_creates_and_changes_to_labels_or_annotations_are_audited_on_the_object(
    client: Client, developer: dict[str, str], namespace: str, testbed_state: State
) -> None:
    base = f"/api/v1/namespaces/{namespace}/environments"
    keyed = {**developer, "Idempotency-Key": f"key-{uuid.uuid4()}"}
    assert (await client.post(base, json=_body("shop"), headers=keyed)).status == 201
    assert (await client.post(base, json=_body("shop"), headers=keyed)).status == 201  # replayed
    assert (await client.post(base, json=_body("shop"), headers=developer)).status == 409
    # Annotations steer the operator (here: no default backups); no spec changes.
    metadata = {
        "labels": {"team": "cart"},
        "annotations": {"dockyard.io/default-backups": "false", "team.example/api-token": "s3"},
    }
    patched = await client.patch(
        f"{base}/shop",
        data=json.dumps({"metadata": metadata}),
        headers={**developer, "Content-Type": "application/merge-patch+json"},
    )
    assert patched.status == 200, await patched.text()

    # Each row names the object, the creates too (their path names only the collection).
    created, replayed, conflict, changed = await _trail(testbed_state, namespace, "shop")
    assert [r["status_code"] for r in (created, replayed, conflict)] == [201, 201, 409]
    assert all("op=createEnvironment" in r["action"] for r in (created, replayed, conflict))
    made = json.loads(created["diff"])
    assert made["/tier"] == {"to": "development"}
    assert made["/metadata/labels/team"] == {"to": "shop"}
    assert "op=patchEnvironment" in changed["action"]
    assert json.loads(changed["diff"]) == {
        "/metadata/annotations/dockyard.io~1default-backups": {"to": "false"},
        "/metadata/annotations/team.example~1api-token": {"to": "[redacted]"},
        "/metadata/labels/team": {"from": "shop", "to": "cart"},
    }


async def test_a_patch_is_recorded_against_the_version_it_was_applied_to(
    client: Client,
    developer: dict[str, str],
    namespace: str,
    testbed_state: State,
    kubectl: Kubectl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = f"/api/v1/namespaces/{namespace}/environments"
    assert (await client.post(base, json=_body("shop"), headers=developer)).status == 201
    stale = await (await client.get(f"{base}/shop", headers=developer)).json()
    # Someone else scales it with kubectl; this replica's cache has not seen that yet.
    kubectl("patch", "environment", "shop", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"replicas": 3}}))  # fmt: skip

    async def behind(self: KindRoutes, request: object) -> dict[str, object]:
        copied: dict[str, object] = json.loads(json.dumps(stale))
        return copied

    monkeypatch.setattr(KindRoutes, "cached", behind)
    patched = await client.patch(
        f"{base}/shop",
        data=json.dumps({"spec": {"image": "shop:2.0"}}),
        headers={**developer, "Content-Type": "application/merge-patch+json"},
    )
    assert patched.status == 200, await patched.text()
    assert (await patched.json())["spec"]["replicas"] == 3

    # The developer changed the image; the replicas are the other writer's, not theirs.
    *_, changed = await _trail(testbed_state, namespace, "shop")
    assert "op=patchEnvironment" in changed["action"]
    assert json.loads(changed["diff"]) == {"/image": {"from": "shop:1.0", "to": "shop:2.0"}}


async def test_lists_filter_and_paginate(
    client: Client, developer: dict[str, str], namespace: str, kubectl: Kubectl
) -> None:
    base = f"/api/v1/namespaces/{namespace}/environments"
    for i in range(5):
        tier = "staging" if i % 2 else "development"
        response = await client.post(base, json=_body(f"env-{i}", tier), headers=developer)
        assert response.status == 201
    kubectl("label", "environment", "env-3", "-n", namespace, "team=search", "--overwrite")
    await asyncio.sleep(0.5)  # the watch cache follows kubectl's change

    names: list[str] = []
    cursor = None
    while True:
        url = f"{base}?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url, headers=developer)).json()
        names += [o["metadata"]["name"] for o in page["items"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert names == [f"env-{i}" for i in range(5)]

    staging = await (await client.get(f"{base}?tier=staging", headers=developer)).json()
    assert [o["metadata"]["name"] for o in staging["items"]] == ["env-1", "env-3"]
    shop = await (
        await client.get(f"{base}?labelSelector=team%3Dshop,tier!=x", headers=developer)
    ).json()
    assert [o["metadata"]["name"] for o in shop["items"]] == ["env-0", "env-1", "env-2", "env-4"]
    everywhere = await (
        await client.get("/api/v1/environments?labelSelector=team%3Dsearch", headers=developer)
    ).json()
    assert [o["metadata"]["name"] for o in everywhere["items"]] == ["env-3"]
    bad = await client.get(f"{base}?labelSelector=%3D%3D", headers=developer)
    assert bad.status == 422
    assert (await bad.json())["errors"][0]["field"] == "query.labelSelector"


async def test_a_viewer_can_read_but_not_create(
    client: Client, viewer: dict[str, str], namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/environments"
    assert (await client.get(base, headers=viewer)).status == 200
    denied = await client.post(base, json=_body("nope"), headers=viewer)
    assert denied.status == 403
    assert (await denied.json())["type"] == "https://dockyard.io/problems/forbidden"


async def test_server_sent_events_report_a_change(
    client: Client, developer: dict[str, str], namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/environments"
    stream = await client.get(f"/api/v1/events?namespace={namespace}", headers=developer)
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    assert (await stream.content.readline()).startswith(b": connected")
    created = await client.post(base, json=_body("live"), headers=developer)
    assert created.status == 201

    async def next_event() -> dict[str, object]:
        event: dict[str, str] = {}
        while True:
            line = (await stream.content.readline()).decode().rstrip("\n")
            if not line:
                if "data" in event:
                    return {"event": event["event"], "data": json.loads(event["data"])}
                continue
            if line.startswith(":"):
                continue
            field, _, value = line.partition(": ")
            event[field] = value

    event = await asyncio.wait_for(next_event(), timeout=10)
    assert event["event"] == "ADDED"
    assert event["data"]["object"]["metadata"]["name"] == "live"  # type: ignore[index]
    stream.close()


async def test_a_write_whose_strings_hold_a_nul_is_refused_and_changes_nothing(
    client: Client, developer: dict[str, str], namespace: str, kubectl: Kubectl
) -> None:
    """The attack: the apiserver keeps a NUL in an annotation's value, which PostgreSQL
    stores in no text or jsonb. Taken, the write would land while its audit row (whose
    diff holds the value) could not be written: a change with no trail."""
    base = f"/api/v1/namespaces/{namespace}/environments"
    created = await client.post(base, json=_body("quiet"), headers=developer)
    assert created.status == 201, await created.text()
    merge = {**developer, "Content-Type": "application/merge-patch+json"}
    sneaky = {"metadata": {"annotations": {"note": "a\x00b"}}, "spec": {"image": "shop:6.6"}}

    patched = await client.patch(f"{base}/quiet", data=json.dumps(sneaky), headers=merge)

    assert patched.status == 422, await patched.text()
    [error] = (await patched.json())["errors"]
    assert error["field"] == "metadata.annotations.note"
    stored = get_json(kubectl, "environment", "quiet", "-n", namespace)
    assert stored["spec"]["image"] == "shop:1.0"  # type: ignore[index]
    assert "note" not in (stored["metadata"].get("annotations") or {})  # type: ignore[index]

    loud = _body("loud")
    loud["metadata"] = {"name": "loud", "annotations": {"note\x00": "hi"}}
    made = await client.post(base, json=loud, headers=developer)
    assert made.status == 422, await made.text()
    [error] = (await made.json())["errors"]
    assert error["field"] == "metadata.annotations.note\\u0000"
    assert kubectl("get", "environment", "loud", "-n", namespace, check=False).returncode != 0
