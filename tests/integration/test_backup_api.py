"""Backups, BackupSchedules, Restores and RestoreDrills through the REST API, against the
real apiserver with the real CRDs, as real users bound to the shipped roles.

The operator does not run here: objects simply exist, and where a test needs a status
(a phase, a plan, a run history) it writes it with ``kubectl --subresource=status`` as
the operator would. The namespaces are outside every session's operator pattern, so no
operator of a concurrent run reconciles them either.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from dockyard.api import keys
from dockyard.api.routes.kinds import KindRoutes
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import Kubectl, get_json, wait_for

Client = TestClient[web.Request, web.Application]
Headers = dict[str, str]
pytestmark = pytest.mark.usefixtures("crds_installed")

PROBLEMS = "https://dockyard.io/problems/"
MERGE_PATCH = "application/merge-patch+json"
STORAGE = {"filesystem": {"path": "/var/lib/dockyard/backups"}}
ENCRYPTION = {"keySecretRef": {"name": "backup-key", "key": "key"}}


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace that no operator watches (see the module docstring)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:30].strip("-")
    name = f"bkapi-{slug}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def _user(testbed: Testbed, kubectl: Kubectl, namespace: str, role: str) -> Headers:
    user = f"{role}-{uuid.uuid4().hex[:6]}"
    kubectl(
        "create",
        "rolebinding",
        f"{user}",
        f"--clusterrole=dockyard-{role}",
        f"--user={user}",
        "-n",
        namespace,
    )
    # The apiserver's authorizer learns of a new binding through a watch: wait for it, so
    # the first request is not refused by a binding it has not seen yet.
    wait_for(
        lambda: (
            kubectl(
                "auth",
                "can-i",
                "get",
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
    return {"Authorization": f"Bearer {testbed.user_token(user, [])}"}


@pytest.fixture
def developer(testbed: Testbed, kubectl: Kubectl, namespace: str, roles: None) -> Headers:
    return _user(testbed, kubectl, namespace, "developer")


@pytest.fixture
def operator(testbed: Testbed, kubectl: Kubectl, namespace: str, roles: None) -> Headers:
    return _user(testbed, kubectl, namespace, "operator")


@pytest.fixture
def second_operator(testbed: Testbed, kubectl: Kubectl, namespace: str, roles: None) -> Headers:
    return _user(testbed, kubectl, namespace, "operator")


async def _who(client: Client, headers: Headers) -> str:
    """The user name the apiserver gives the caller (as the API records it)."""
    response = await client.get("/api/v1/me", headers=headers)
    assert response.status == 200
    return str((await response.json())["user"])


def _backup(name: str, environment: str = "shop") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": {"team": "shop"}},
        "spec": {
            "environmentRef": {"name": environment},
            "storage": STORAGE,
            "encryption": ENCRYPTION,
        },
    }


def _restore(name: str, **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, **metadata},
        "spec": {"source": {"backupRef": {"name": "shop-1"}}},
    }


def _schedule(name: str, cron: str = "0 3 * * *") -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "environmentRef": {"name": "shop"},
            "schedule": cron,
            "template": {"storage": STORAGE, "encryption": ENCRYPTION},
        },
    }


def _drill(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "environmentRef": {"name": "shop"},
            "schedule": "30 4 * * *",
            "objectives": {"rtoSeconds": 600, "rpoSeconds": 86400},
        },
    }


def _set_status(
    kubectl: Kubectl, namespace: str, kind: str, name: str, status: dict[str, Any]
) -> None:
    """Write status as the operator would (the status subresource, as the admin)."""
    kubectl(
        "patch",
        kind,
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


async def _eventually_status(
    client: Client, url: str, headers: Headers, check: Any, attempts: int = 50
) -> dict[str, Any]:
    """GET ``url`` until ``check(body)`` holds: the watch cache follows kubectl's writes."""
    body: dict[str, Any] = {}
    for _ in range(attempts):
        response = await client.get(url, headers=headers)
        body = await response.json()
        if check(response.status, body):
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{url} never satisfied the check; last body: {body}")


# -- backups ------------------------------------------------------------------------------


async def test_a_backup_is_created_read_listed_and_deleted(
    client: Client, developer: Headers, namespace: str, kubectl: Kubectl
) -> None:
    base = f"/api/v1/namespaces/{namespace}/backups"
    created = await client.post(base, json=_backup("shop-1"), headers=developer)
    body = await created.json()
    assert created.status == 201, body
    assert created.headers["ETag"] == f'"{body["metadata"]["resourceVersion"]}"'
    assert body["spec"]["method"] == "Logical"  # the CRD's default, as stored
    stored = get_json(kubectl, "backup", "shop-1", "-n", namespace)
    assert stored["spec"]["environmentRef"] == {"name": "shop"}  # type: ignore[index]

    got = await client.get(f"{base}/shop-1", headers=developer)
    assert got.status == 200
    assert (await got.json())["metadata"]["name"] == "shop-1"

    listed = await (await client.get(base, headers=developer)).json()
    assert [o["metadata"]["name"] for o in listed["items"]] == ["shop-1"]
    assert listed["nextCursor"] is None

    deleted = await client.delete(f"{base}/shop-1", headers=developer)
    assert deleted.status == 204
    await _eventually_status(client, f"{base}/shop-1", developer, lambda status, _: status == 404)
    assert kubectl("get", "backup", "shop-1", "-n", namespace, check=False).returncode != 0


async def test_backup_lists_filter_by_environment_and_phase_and_page(
    client: Client, developer: Headers, namespace: str, kubectl: Kubectl
) -> None:
    base = f"/api/v1/namespaces/{namespace}/backups"
    for name, environment in [("a-1", "shop"), ("a-2", "shop"), ("b-1", "search"), ("a-3", "shop")]:
        response = await client.post(base, json=_backup(name, environment), headers=developer)
        assert response.status == 201, await response.text()
    _set_status(kubectl, namespace, "backup", "a-2", {"phase": "Completed"})

    names: list[str] = []
    cursor = None
    while True:
        url = f"{base}?environment=shop&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(url, headers=developer)).json()
        names += [o["metadata"]["name"] for o in page["items"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert names == ["a-1", "a-2", "a-3"]

    completed = await _eventually_status(
        client,
        f"{base}?phase=Completed",
        developer,
        lambda status, body: status == 200 and len(body["items"]) == 1,
    )
    assert completed["items"][0]["metadata"]["name"] == "a-2"

    bad = await client.get(f"{base}?phase=Done", headers=developer)
    assert bad.status == 422
    assert (await bad.json())["errors"][0]["field"] == "query.phase"


# -- restores: requester and approval ---------------------------------------------------


async def test_creating_a_restore_records_the_caller_as_requester(
    client: Client, developer: Headers, namespace: str, kubectl: Kubectl
) -> None:
    base = f"/api/v1/namespaces/{namespace}/restores"
    user = await _who(client, developer)
    created = await client.post(base, json=_restore("r1"), headers=developer)
    body = await created.json()
    assert created.status == 201, body
    assert body["metadata"]["annotations"]["dockyard.io/requested-by"] == user
    stored = get_json(kubectl, "restore", "r1", "-n", namespace)
    assert stored["metadata"]["annotations"]["dockyard.io/requested-by"] == user  # type: ignore[index]


async def test_a_client_supplied_requester_or_approver_is_refused(
    client: Client, developer: Headers, namespace: str, kubectl: Kubectl
) -> None:
    base = f"/api/v1/namespaces/{namespace}/restores"
    forged = _restore("forged", annotations={"dockyard.io/requested-by": "someone-else"})
    refused = await client.post(base, json=forged, headers=developer)
    problem = await refused.json()
    assert refused.status == 422, problem
    assert [e["field"] for e in problem["errors"]] == [
        "metadata.annotations.dockyard.io/requested-by"
    ]
    assert kubectl("get", "restore", "forged", "-n", namespace, check=False).returncode != 0

    assert (await client.post(base, json=_restore("r1"), headers=developer)).status == 201
    patched = await client.patch(
        f"{base}/r1",
        data=json.dumps({"metadata": {"annotations": {"dockyard.io/approved-by": "me"}}}),
        headers={**developer, "Content-Type": MERGE_PATCH},
    )
    assert patched.status == 422
    assert (await patched.json())["errors"][0]["field"] == (
        "metadata.annotations.dockyard.io/approved-by"
    )


async def test_a_claim_over_the_runners_own_files_is_refused_with_its_field(
    client: Client, developer: Headers, namespace: str, kubectl: Kubectl
) -> None:
    body = _backup("over-usr")
    body["spec"]["storage"] = {"filesystem": {"path": "/usr/lib", "claimName": "backups"}}

    refused = await client.post(f"/api/v1/namespaces/{namespace}/backups", json=body,
                                headers=developer)  # fmt: skip

    problem = await refused.json()
    assert refused.status == 422, problem
    [error] = problem["errors"]
    assert error["field"] == "spec.storage.filesystem.path"
    assert "must not be or lie under the runner image's own directories" in error["message"]
    assert kubectl("get", "backup", "over-usr", "-n", namespace, check=False).returncode != 0


async def test_the_operators_bookkeeping_annotations_are_neither_set_nor_removed_by_clients(
    client: Client, developer: Headers, namespace: str, kubectl: Kubectl
) -> None:
    # Kopf's records say which handlers ran for the object: a client who could write them
    # could have the operator take its object for handled (or for new).
    base = f"/api/v1/namespaces/{namespace}/backups"
    record = "operator.dockyard.io/create_fn"
    forged = _backup("forged")
    forged["metadata"]["annotations"] = {record: '{"success": true}'}
    refused = await client.post(base, json=forged, headers=developer)
    problem = await refused.json()
    assert refused.status == 422, problem
    assert [e["field"] for e in problem["errors"]] == [f"metadata.annotations.{record}"]
    assert kubectl("get", "backup", "forged", "-n", namespace, check=False).returncode != 0

    mine = _backup("shop-1")
    mine["metadata"]["annotations"] = {"team.example/owner": "ana"}
    assert (await client.post(base, json=mine, headers=developer)).status == 201
    kept = '{"success": true, "writtenFor": "x"}'
    # Written just before the patch: the API's cache may not have it yet, the apiserver does.
    kubectl("annotate", "backup", "shop-1", "-n", namespace, f"{record}={kept}", "late.example/x=y")
    headers = {**developer, "Content-Type": MERGE_PATCH}
    for value in ("{}", None):
        patched = await client.patch(
            f"{base}/shop-1",
            data=json.dumps({"metadata": {"annotations": {record: value}}}),
            headers=headers,
        )
        assert patched.status == 422, await patched.text()
        assert (await patched.json())["errors"][0]["field"] == f"metadata.annotations.{record}"

    # Removing every annotation removes the client's own, and keeps the operator's.
    cleared = await client.patch(
        f"{base}/shop-1", data=json.dumps({"metadata": {"annotations": None}}), headers=headers
    )
    assert cleared.status == 200, await cleared.text()
    annotations = get_json(kubectl, "backup", "shop-1", "-n", namespace)["metadata"]["annotations"]  # type: ignore[index]
    assert "team.example/owner" not in annotations
    assert "late.example/x" not in annotations
    assert annotations[record] == kept
    stale = await client.patch(
        f"{base}/shop-1",
        data=json.dumps({"metadata": {"annotations": None}}),
        headers={**headers, "If-Match": '"1"'},
    )
    assert stale.status == 412, await stale.text()


async def test_an_annotation_added_while_annotations_are_being_removed_is_not_lost_unseen(
    client: Client,
    developer: Headers,
    namespace: str,
    kubectl: Kubectl,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``annotations: null`` is sent as the removal, by name, of the annotations the API
    read, pinned to the version it read them at. One added in between makes it a 409,
    and nothing is removed: not the new one, which the client never saw."""
    base = f"/api/v1/namespaces/{namespace}/backups"
    mine = _backup("shop-1")
    mine["metadata"]["annotations"] = {"team.example/owner": "ana"}
    assert (await client.post(base, json=mine, headers=developer)).status == 201
    kube = client.app[keys.KUBE]
    real_patch = kube.merge_patch

    async def after_a_late_write(*args: Any, **kwargs: Any) -> dict[str, Any]:
        await asyncio.to_thread(
            kubectl, "annotate", "backup", "shop-1", "-n", namespace, "late.example/x=y"
        )
        return await real_patch(*args, **kwargs)

    monkeypatch.setattr(kube, "merge_patch", after_a_late_write)
    cleared = await client.patch(
        f"{base}/shop-1",
        data=json.dumps({"metadata": {"annotations": None}}),
        headers={**developer, "Content-Type": MERGE_PATCH},
    )

    problem = await cleared.json()
    assert cleared.status == 409, problem
    assert problem["type"] == PROBLEMS + "conflict"
    assert "changed while its annotations were being removed" in problem["detail"]
    annotations = get_json(kubectl, "backup", "shop-1", "-n", namespace)["metadata"]["annotations"]  # type: ignore[index]
    assert annotations["team.example/owner"] == "ana"
    assert annotations["late.example/x"] == "y"


async def test_removing_a_restores_annotations_keeps_its_requester(
    client: Client, developer: Headers, namespace: str, kubectl: Kubectl
) -> None:
    base = f"/api/v1/namespaces/{namespace}/restores"
    mine = _restore("r1", annotations={"team.example/ticket": "OPS-1"})
    assert (await client.post(base, json=mine, headers=developer)).status == 201
    requester = await _who(client, developer)
    cleared = await client.patch(
        f"{base}/r1",
        data=json.dumps({"metadata": {"annotations": None}}),
        headers={**developer, "Content-Type": MERGE_PATCH},
    )
    assert cleared.status == 200, await cleared.text()
    annotations = get_json(kubectl, "restore", "r1", "-n", namespace)["metadata"]["annotations"]  # type: ignore[index]
    assert annotations["dockyard.io/requested-by"] == requester
    assert "team.example/ticket" not in annotations


async def test_the_requester_cannot_approve_their_own_restore(
    client: Client, operator: Headers, namespace: str, kubectl: Kubectl
) -> None:
    base = f"/api/v1/namespaces/{namespace}/restores"
    assert (await client.post(base, json=_restore("r1"), headers=operator)).status == 201
    _set_status(kubectl, namespace, "restore", "r1", {"phase": "AwaitingApproval"})
    refused = await client.post(f"{base}/r1/approve", headers=operator)
    problem = await refused.json()
    assert refused.status == 403, problem
    assert problem["type"] == PROBLEMS + "approval-by-requester"
    annotations = get_json(kubectl, "restore", "r1", "-n", namespace)["metadata"]["annotations"]  # type: ignore[index]
    assert "dockyard.io/approved-by" not in annotations


async def test_a_second_operator_approves_a_restore_awaiting_approval(
    client: Client,
    developer: Headers,
    operator: Headers,
    namespace: str,
    kubectl: Kubectl,
    testbed_state: State,
) -> None:
    base = f"/api/v1/namespaces/{namespace}/restores"
    approver = await _who(client, operator)
    assert (await client.post(base, json=_restore("r1"), headers=developer)).status == 201

    pending = await client.post(f"{base}/r1/approve", headers=operator)
    assert pending.status == 409
    assert (await pending.json())["type"] == PROBLEMS + "not-awaiting-approval"

    _set_status(kubectl, namespace, "restore", "r1", {"phase": "AwaitingApproval"})
    # A developer holds no approve verb: RBAC refuses before anything is read.
    denied = await client.post(f"{base}/r1/approve", headers=developer)
    assert denied.status == 403
    assert (await denied.json())["type"] == PROBLEMS + "forbidden"

    approved = await client.post(f"{base}/r1/approve", headers=operator)
    body = await approved.json()
    assert approved.status == 200, body
    assert body["metadata"]["annotations"]["dockyard.io/approved-by"] == approver
    stored = get_json(kubectl, "restore", "r1", "-n", namespace)
    assert stored["metadata"]["annotations"]["dockyard.io/approved-by"] == approver  # type: ignore[index]

    # The audit trail names the approver and the annotation they set.
    conn = await asyncpg.connect(testbed_state.database_url)
    try:
        row = await conn.fetchrow(
            "SELECT actor, outcome, diff::text AS diff FROM audit_events "
            "WHERE namespace = $1 AND name = 'r1' AND action LIKE '%op=approveRestore%' "
            "AND status_code = 200",
            namespace,
        )
    finally:
        await conn.close()
    assert row is not None
    assert (row["actor"], row["outcome"]) == (approver, "succeeded")
    # The approver's groups go with the name, so the operator can re-check the verb.
    assert json.loads(row["diff"]) == {
        "/metadata/annotations/dockyard.io~1approved-by": {"to": approver},
        "/metadata/annotations/dockyard.io~1approver-groups": {"to": "system:authenticated"},
    }


async def test_the_plan_is_a_conflict_until_the_operator_writes_it(
    client: Client, developer: Headers, namespace: str, kubectl: Kubectl
) -> None:
    base = f"/api/v1/namespaces/{namespace}/restores"
    assert (await client.post(base, json=_restore("r1"), headers=developer)).status == 201
    early = await client.get(f"{base}/r1/plan", headers=developer)
    assert early.status == 409
    assert (await early.json())["type"] == PROBLEMS + "plan-not-ready"

    plan = {
        "backup": "shop-1",
        "sourceEnvironment": "shop",
        "target": "shop",
        "inPlace": True,
        "size": 1024,
        "tableCount": 1,
        "tables": [{"name": "public.orders", "rows": 42}],
        "estimatedDurationSeconds": 11,
    }
    _set_status(kubectl, namespace, "restore", "r1", {"plan": plan})
    body = await _eventually_status(
        client, f"{base}/r1/plan", developer, lambda status, _: status == 200
    )
    assert body["backup"] == "shop-1"
    assert body["tables"] == [{"name": "public.orders", "rows": 42}]
    assert body["estimatedDurationSeconds"] == 11


async def test_a_restore_with_two_sources_is_refused_with_the_field_path(
    client: Client, developer: Headers, namespace: str
) -> None:
    both = {
        "metadata": {"name": "both"},
        "spec": {
            "source": {
                "backupRef": {"name": "shop-1"},
                "environmentRef": {"name": "shop"},
                "select": "latest",
            }
        },
    }
    refused = await client.post(
        f"/api/v1/namespaces/{namespace}/restores", json=both, headers=developer
    )
    problem = await refused.json()
    assert refused.status == 422, problem
    assert any(
        e["field"] == "spec.source" and "exactly one of" in e["message"] for e in problem["errors"]
    )


# -- schedules and drills ---------------------------------------------------------------------


async def test_a_six_field_cron_is_refused_with_what_was_expected(
    client: Client, operator: Headers, namespace: str
) -> None:
    refused = await client.post(
        f"/api/v1/namespaces/{namespace}/backupschedules",
        json=_schedule("nightly", "0 0 3 * * *"),
        headers=operator,
    )
    problem = await refused.json()
    assert refused.status == 422, problem
    assert any(
        e["field"] == "spec.schedule" and "5 fields" in e["message"] for e in problem["errors"]
    )


async def test_run_now_sets_the_annotation_on_a_schedule_and_a_drill(
    client: Client, operator: Headers, developer: Headers, namespace: str, kubectl: Kubectl
) -> None:
    base = f"/api/v1/namespaces/{namespace}"
    created = await client.post(
        f"{base}/backupschedules", json=_schedule("nightly"), headers=operator
    )
    assert created.status == 201, await created.text()
    assert (
        await client.post(f"{base}/restoredrills", json=_drill("weekly"), headers=operator)
    ).status == 201

    for kind, plural, name in [
        ("backupschedule", "backupschedules", "nightly"),
        ("restoredrill", "restoredrills", "weekly"),
    ]:
        run = await client.post(f"{base}/{plural}/{name}/run", headers=operator)
        body = await run.json()
        assert run.status == 202, body
        assert "dockyard.io/run-now" in body["metadata"]["annotations"]
        stored = get_json(kubectl, kind, name, "-n", namespace)
        assert "dockyard.io/run-now" in stored["metadata"]["annotations"]  # type: ignore[index]

    # Developers may not change schedules, so they may not run them either.
    denied = await client.post(f"{base}/backupschedules/nightly/run", headers=developer)
    assert denied.status == 403
    missing = await client.post(f"{base}/restoredrills/nope/run", headers=operator)
    assert missing.status == 404


async def test_run_now_records_its_annotation_and_no_one_elses_change(
    client: Client,
    operator: Headers,
    namespace: str,
    kubectl: Kubectl,
    testbed_state: State,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = f"/api/v1/namespaces/{namespace}/backupschedules"
    created = await client.post(base, json=_schedule("nightly"), headers=operator)
    assert created.status == 201, await created.text()
    stale = await (await client.get(f"{base}/nightly", headers=operator)).json()
    # Someone labels it with kubectl; this replica's cache has not seen that yet.
    kubectl("label", "backupschedule", "nightly", "-n", namespace, "team=billing")

    async def behind(self: KindRoutes, request: object) -> dict[str, object]:
        copied: dict[str, object] = json.loads(json.dumps(stale))
        return copied

    monkeypatch.setattr(KindRoutes, "cached", behind)
    run = await client.post(f"{base}/nightly/run", headers=operator)
    assert run.status == 202, await run.text()

    conn = await asyncpg.connect(testbed_state.database_url)
    try:
        diff = await conn.fetchval(
            "SELECT diff::text FROM audit_events WHERE source = 'rest' AND namespace = $1"
            " AND name = 'nightly' AND action LIKE 'POST %/run %' ORDER BY id DESC LIMIT 1",
            namespace,
        )
    finally:
        await conn.close()
    assert list(json.loads(diff)) == ["/metadata/annotations/dockyard.io~1run-now"]


async def test_a_drills_runs_are_listed_newest_first_with_rto_and_rpo(
    client: Client, operator: Headers, namespace: str, kubectl: Kubectl
) -> None:
    base = f"/api/v1/namespaces/{namespace}/restoredrills"
    assert (await client.post(base, json=_drill("weekly"), headers=operator)).status == 201
    history = [
        {
            "backup": f"shop-{day}",
            "startedAt": f"2025-01-0{day}T04:30:00Z",
            "finishedAt": f"2025-01-0{day}T04:31:00Z",
            "restoreSeconds": 50.0 + day,
            "backupAgeSeconds": 3600.0 * day,
            "result": "Passed" if day != 2 else "Failed",
            "failedCheckCount": 0 if day != 2 else 1,
        }
        for day in (3, 2, 1)
    ]
    _set_status(kubectl, namespace, "restoredrill", "weekly", {"history": history})

    first = await _eventually_status(
        client,
        f"{base}/weekly/runs?limit=2",
        operator,
        lambda status, body: status == 200 and body["items"],
    )
    assert first["objectives"] == {"rtoSeconds": 600, "rpoSeconds": 86400}
    assert [r["backup"] for r in first["items"]] == ["shop-3", "shop-2"]
    assert [(r["restoreSeconds"], r["backupAgeSeconds"]) for r in first["items"]] == [
        (53.0, 10800.0),
        (52.0, 7200.0),
    ]
    assert first["items"][1]["result"] == "Failed"
    rest = await (
        await client.get(
            f"{base}/weekly/runs?limit=2&cursor={first['nextCursor']}", headers=operator
        )
    ).json()
    assert [r["backup"] for r in rest["items"]] == ["shop-1"]
    assert "nextCursor" not in rest

    missing = await client.get(f"{base}/nope/runs", headers=operator)
    assert missing.status == 404


async def test_schedule_patch_is_validated_by_the_spec_model(
    client: Client, operator: Headers, namespace: str
) -> None:
    base = f"/api/v1/namespaces/{namespace}/backupschedules"
    assert (await client.post(base, json=_schedule("nightly"), headers=operator)).status == 201
    bad = await client.patch(
        f"{base}/nightly",
        data=json.dumps({"spec": {"schedule": "* * * *"}}),
        headers={**operator, "Content-Type": MERGE_PATCH},
    )
    assert bad.status == 422
    assert (await bad.json())["errors"][0]["field"] == "spec.schedule"
    good = await client.patch(
        f"{base}/nightly",
        data=json.dumps({"spec": {"suspend": True}}),
        headers={**operator, "Content-Type": MERGE_PATCH},
    )
    assert good.status == 200, await good.text()
    assert (await good.json())["spec"]["suspend"] is True


async def test_a_drills_runs_come_from_the_platform_database_when_recorded_there(
    client: Client, operator: Headers, namespace: str, testbed_state: State
) -> None:
    base = f"/api/v1/namespaces/{namespace}/restoredrills"
    created = await client.post(base, json=_drill("weekly"), headers=operator)
    assert created.status == 201
    made = datetime.fromisoformat((await created.json())["metadata"]["creationTimestamp"])

    def day(n: int) -> str:
        return (made + timedelta(days=n)).isoformat()

    conn = await asyncpg.connect(testbed_state.database_url)
    try:
        # As the operator records them: three finished runs (two started at the same
        # instant, ordered by id) and one still running, which is not listed; and a run
        # of an earlier drill of the same name, deleted before this one was made (the
        # table is keyed by name): not this drill's, so not listed either.
        await conn.executemany(
            "INSERT INTO drill_runs (namespace, drill, backup, started_at, finished_at, "
            "restore_seconds, backup_age_seconds, result, failed_checks) "
            "VALUES ($1, 'weekly', $2, $3::text::timestamptz, "
            "$3::text::timestamptz + interval '1 minute', "
            "$4, $5, $6, $7::jsonb)",
            [
                (namespace, "earlier", day(-30), 10.0, 10.0, "Passed", "[]"),
                (namespace, "shop-1", day(1), 40.0, 100.0, "Passed", "[]"),
                (namespace, "shop-2", day(2), 41.0, 200.0, "Passed", "[]"),
                (
                    namespace,
                    "shop-3",
                    day(2),
                    900.0,
                    300.0,
                    "Failed",
                    '[{"check": "rto", "reason": "restore took 900.0 s, objective 600 s"}]',
                ),
                (namespace, "shop-4", day(3), None, None, None, "[]"),
            ],
        )
        first = await (await client.get(f"{base}/weekly/runs?limit=2", headers=operator)).json()
        assert [
            (r["backup"], r["restoreSeconds"], r["backupAgeSeconds"]) for r in first["items"]
        ] == [
            ("shop-3", 900.0, 300.0),
            ("shop-2", 41.0, 200.0),
        ]
        assert (first["items"][0]["result"], first["items"][0]["failedCheckCount"]) == ("Failed", 1)
        rest = await (
            await client.get(
                f"{base}/weekly/runs?limit=2&cursor={first['nextCursor']}", headers=operator
            )
        ).json()
        assert [r["backup"] for r in rest["items"]] == ["shop-1"]
        assert "nextCursor" not in rest
        forged = await client.get(f"{base}/weekly/runs?cursor=bm9wZQ", headers=operator)
        assert forged.status == 422
        assert (await forged.json())["errors"][0]["field"] == "query.cursor"
        # Outside the cursors' alphabet: refused by the query model, as on every list.
        alien = await client.get(f"{base}/weekly/runs?cursor=a.b", headers=operator)
        assert alien.status == 422
        assert (await alien.json())["errors"][0]["field"] == "query.cursor"
    finally:
        await conn.execute("DELETE FROM drill_runs WHERE namespace = $1", namespace)
        await conn.close()
