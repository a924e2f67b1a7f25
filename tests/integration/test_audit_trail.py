"""The audit trail against the test bed: real tokens, real RBAC, rows in the real Postgres.

Each test uses actors (and request ids) of its own, so the tests read only their rows
from the shared platform database.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from dockyard.api import errors, keys
from dockyard.api.app import create_app
from dockyard.api.audit.diff import spec_diff
from dockyard.api.audit.events import Outcome
from dockyard.api.audit.repository import RETENTION_LOCK_KEY, AuditLog
from dockyard.api.audit.retention import run_retention
from dockyard.api.auth import Permission
from dockyard.api.openapi import Operation
from dockyard.core import audit_rows, db, migrations
from dockyard.core.settings import Settings
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import TESTBED_KUBE_DEADLINES, Kubectl, wait_for

pytestmark = pytest.mark.integration

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]

ADMIN_ROLE = "dockyard-test-audit-admin"
LIST_ACTION = "GET /api/v1/audit-events op=listAuditEvents verb=list"
WIDGET_PATH = "/api/v1/namespaces/{namespace}/widgets/{name}"


def _settings(state: State, **overrides: Any) -> Settings:
    return Settings(
        database_url=overrides.pop("database_url", state.database_url),
        kubeconfig=Path(state.kubeconfig),
        **{**TESTBED_KUBE_DEADLINES, **overrides},
    )


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
async def pool(testbed_state: State) -> AsyncIterator[asyncpg.Pool]:
    """The platform database, migrated (idempotent), as the API's pool would see it."""
    async with db.pool_context(_settings(testbed_state)) as pool:
        await migrations.migrate(pool)
        yield pool


@pytest.fixture
def audit_log(pool: asyncpg.Pool) -> AuditLog:
    return AuditLog(pool)


async def _patch_widget(request: web.Request) -> web.Response:
    """An update handler as the resource routes write them: diff the spec, then answer."""
    before = {"replicas": 2, "image": "shop:1.0", "database": {"password": "old"}}
    changes = await request.json()
    if changes.get("conflict"):
        raise errors.conflict("The widget was changed; re-read and retry.")
    if changes.get("cancel"):
        # As at shutdown: the request's task is cancelled while the handler works.
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(10)
    after = {**before, **changes}
    request[keys.AUDIT] = spec_diff(before, after)
    return web.json_response(after)


WIDGET_OPERATION = Operation(
    "PATCH",
    WIDGET_PATH,
    "patchWidget",
    "Patch a widget (test only)",
    "test",
    _patch_widget,
    permission=Permission(verb="patch", resource="widgets"),
)


@pytest.fixture
def make_client(
    testbed_state: State, pool: asyncpg.Pool, aiohttp_client: AiohttpClient
) -> MakeClient:
    """A real app (and its test server) on the test bed, plus a test-only update route."""

    async def make(**overrides: Any) -> Client:
        app = create_app(_settings(testbed_state, **overrides))
        app.router.add_route("PATCH", WIDGET_PATH, _patch_widget, name="patchWidget")
        app[keys.OPERATIONS]["patchWidget"] = WIDGET_OPERATION
        return await aiohttp_client(app)

    return make


@pytest.fixture(scope="module")
def admin_role(kubectl: Kubectl) -> str:
    """A ClusterRole as admins hold it: list auditevents (and patch the test widgets)."""
    kubectl(
        "apply",
        "-f",
        "-",
        input=f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: {ADMIN_ROLE}
rules:
  - apiGroups: ["dockyard.io"]
    resources: ["auditevents"]
    verbs: ["list"]
  - apiGroups: ["dockyard.io"]
    resources: ["widgets"]
    verbs: ["patch"]
  - apiGroups: ["dockyard.io"]
    resources: ["backups", "restores", "environments"]
    verbs: ["get", "list"]
""",
    )
    return ADMIN_ROLE


@pytest.fixture
def admin(testbed: Testbed, kubectl: Kubectl, admin_role: str) -> Iterator[tuple[str, str]]:
    """A user bound to the admin role: (name, bearer token)."""
    user = _unique("audit-admin")
    kubectl("create", "clusterrolebinding", user, f"--clusterrole={admin_role}", f"--user={user}")
    # kubectl auth can-i resolves resources by discovery, and auditevents is no served
    # kind (only an RBAC rule), so ask the way the API does: a SubjectAccessReview.
    review = json.dumps(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user,
                "resourceAttributes": {
                    "group": "dockyard.io",
                    "resource": "auditevents",
                    "verb": "list",
                },
            },
        }
    )
    wait_for(
        lambda: (
            kubectl("create", "-f", "-", "-o", "jsonpath={.status.allowed}", input=review).stdout
            == "true"
        ),
        timeout=15,
    )
    yield user, testbed.user_token(user, ["dockyard:admins"])
    kubectl("delete", "clusterrolebinding", user, "--wait=false", check=False)


def _bearer(token: str, request_id: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if request_id:
        headers["X-Request-Id"] = request_id
    return headers


async def _row(pool: asyncpg.Pool, request_id: str) -> asyncpg.Record:
    rows = await pool.fetch("SELECT * FROM audit_events WHERE request_id = $1", request_id)
    assert len(rows) == 1, rows
    return rows[0]


async def _record_events(
    audit_log: AuditLog, actor: str, count: int, *, start: datetime, **fields: Any
) -> list[int]:
    """``count`` events by ``actor``, two per instant so pages must break ties by id."""
    ids = []
    for i in range(count):
        ids.append(
            await audit_log.record(
                actor=actor,
                action="PATCH /api/v1/namespaces/{namespace}/environments/{name}",
                resource=fields.get("resource", "environments"),
                namespace=fields.get("namespace", "shop"),
                name=fields.get("name", f"env-{i}"),
                outcome=Outcome.SUCCEEDED,
                status_code=200,
                occurred_at=start + timedelta(seconds=i // 2),
            )
        )
    return ids


# -- denied requests -------------------------------------------------------------------------


async def test_a_user_without_the_admin_role_gets_403_problem_json(
    make_client: MakeClient, testbed: Testbed
) -> None:
    token = testbed.user_token(_unique("nobody"), [])
    client = await make_client()
    response = await client.get("/api/v1/audit-events", headers=_bearer(token))
    body = await response.json(content_type=None)
    assert response.status == 403
    assert response.content_type == "application/problem+json"
    assert body["type"] == "https://dockyard.io/problems/forbidden"
    assert "auditevents" in body["detail"]


async def test_a_denied_request_appends_a_denied_row_with_actor_and_request_id(
    make_client: MakeClient, testbed: Testbed, pool: asyncpg.Pool
) -> None:
    user, request_id = _unique("nobody"), _unique("req")
    token = testbed.user_token(user, ["qa"])
    client = await make_client()
    headers = {**_bearer(token, request_id), "X-Forwarded-For": "203.0.113.9"}
    response = await client.get("/api/v1/audit-events", headers=headers)
    assert response.status == 403
    row = await _row(pool, request_id)
    assert row["actor"] == user
    assert set(row["groups"]) == {"qa", "system:authenticated"}
    assert row["outcome"] == "denied"
    assert row["status_code"] == 403
    assert row["action"] == LIST_ACTION
    assert row["resource"] == "auditevents"
    # The peer is not a trusted proxy, so the header it sent is not believed.
    assert str(row["source_ip"]) == "127.0.0.1"


async def test_a_request_without_a_token_appends_a_row_for_system_anonymous(
    make_client: MakeClient, pool: asyncpg.Pool
) -> None:
    request_id = _unique("req")
    client = await make_client()
    response = await client.get("/api/v1/audit-events", headers={"X-Request-Id": request_id})
    assert response.status == 401
    row = await _row(pool, request_id)
    assert (row["actor"], row["outcome"], row["status_code"]) == ("system:anonymous", "denied", 401)
    assert list(row["groups"]) == []
    assert row["action"] == LIST_ACTION


async def test_an_allowed_read_is_recorded_as_the_audit_reads_setting_says(
    make_client: MakeClient, admin: tuple[str, str], pool: asyncpg.Pool, crds_installed: None
) -> None:
    user, token = admin

    async def read(client: Client, path: str) -> list[asyncpg.Record]:
        request_id = _unique("req")
        response = await client.get(path, headers=_bearer(token, request_id))
        assert response.status == 200
        return await pool.fetch(
            "SELECT actor, action, outcome, resource, diff FROM audit_events WHERE request_id = $1",
            request_id,
        )

    # By default (sensitive): reading the trail is itself recorded, an ordinary read not.
    # Three apps at once: none of them serves /metrics (one port).
    client = await make_client(metrics_port=None)
    [row] = await read(client, "/api/v1/audit-events?limit=1")
    assert (row["actor"], row["outcome"], row["resource"]) == (user, "succeeded", "auditevents")
    assert row["action"] == "GET /api/v1/audit-events op=listAuditEvents verb=list"
    assert row["diff"] is None
    assert await read(client, "/api/v1/me") == []
    # A Backup's manifest and a Restore's plan: the tables of a tenant's database and their
    # sizes, recorded as getRestorePlan is, by whichever read serves them.
    for plural in ("backups", "restores"):
        [row] = await read(client, f"/api/v1/namespaces/shop/{plural}")
        assert (row["actor"], row["resource"]) == (user, plural)
    assert await read(client, "/api/v1/namespaces/shop/environments") == []

    everything = await make_client(audit_reads="all", metrics_port=None)
    [row] = await read(everything, "/api/v1/me")
    assert row["action"].startswith("GET /api/v1/me op=getMe")
    assert await read(everything, "/healthz") == []

    nothing = await make_client(audit_reads="none", metrics_port=None)
    assert await read(nothing, "/api/v1/audit-events?limit=1") == []


# -- mutating requests -----------------------------------------------------------------------


async def test_an_update_appends_a_succeeded_row_with_its_object_and_diff(
    make_client: MakeClient, admin: tuple[str, str], pool: asyncpg.Pool
) -> None:
    user, token = admin
    request_id = _unique("req")
    client = await make_client()
    response = await client.patch(
        "/api/v1/namespaces/shop/widgets/cart",
        json={"replicas": 3, "database": {"password": "new"}},
        headers=_bearer(token, request_id),
    )
    assert response.status == 200
    row = await _row(pool, request_id)
    assert row["actor"] == user
    assert row["outcome"] == "succeeded"
    assert row["status_code"] == 200
    assert row["action"] == f"PATCH {WIDGET_PATH} op=patchWidget verb=patch"
    assert (row["resource"], row["namespace"], row["name"]) == ("widgets", "shop", "cart")
    assert row["diff"] == {
        "/replicas": {"from": 2, "to": 3},
        "/database/password": {"from": "[redacted]", "to": "[redacted]"},
    }


async def test_an_update_that_fails_appends_a_failed_row_and_keeps_its_problem(
    make_client: MakeClient, admin: tuple[str, str], pool: asyncpg.Pool
) -> None:
    _, token = admin
    request_id = _unique("req")
    client = await make_client()
    response = await client.patch(
        "/api/v1/namespaces/shop/widgets/cart",
        json={"conflict": True},
        headers=_bearer(token, request_id),
    )
    body = await response.json(content_type=None)
    assert response.status == 409
    assert body["type"] == "https://dockyard.io/problems/conflict"
    row = await _row(pool, request_id)
    assert (row["outcome"], row["status_code"], row["diff"]) == ("failed", 409, None)


async def test_an_update_denied_by_rbac_names_the_object_it_was_denied(
    make_client: MakeClient, testbed: Testbed, pool: asyncpg.Pool
) -> None:
    user, request_id = _unique("nobody"), _unique("req")
    client = await make_client()
    response = await client.patch(
        "/api/v1/namespaces/bank/widgets/vault",
        json={"replicas": 9},
        headers=_bearer(testbed.user_token(user, []), request_id),
    )
    assert response.status == 403
    row = await _row(pool, request_id)
    assert (row["actor"], row["outcome"]) == (user, "denied")
    assert (row["resource"], row["namespace"], row["name"]) == ("widgets", "bank", "vault")


async def test_an_update_cancelled_mid_way_is_recorded_as_allowed_without_a_status(
    make_client: MakeClient, admin: tuple[str, str], pool: asyncpg.Pool
) -> None:
    user, token = admin
    request_id = _unique("req")
    client = await make_client()
    with pytest.raises(aiohttp.ClientError):
        await client.patch(
            "/api/v1/namespaces/shop/widgets/cart",
            json={"cancel": True},
            headers=_bearer(token, request_id),
        )
    await client.close()  # as at shutdown: the server waits for the handler's last write
    row = await _row(pool, request_id)
    assert (row["actor"], row["outcome"], row["status_code"]) == (user, "allowed", None)


async def test_a_write_to_no_route_is_recorded_as_failed(
    make_client: MakeClient, pool: asyncpg.Pool
) -> None:
    request_id = _unique("req")
    client = await make_client()
    response = await client.post("/api/v1/nowhere", json={}, headers={"X-Request-Id": request_id})
    assert response.status == 404
    row = await _row(pool, request_id)
    assert (row["action"], row["outcome"], row["status_code"]) == (
        "POST /api/v1/nowhere",
        "failed",
        404,
    )


async def test_the_client_address_comes_from_forwarded_for_behind_a_trusted_proxy(
    make_client: MakeClient, pool: asyncpg.Pool
) -> None:
    request_id = _unique("req")
    client = await make_client(trusted_proxies=["127.0.0.1/32"])
    await client.get(
        "/api/v1/audit-events",
        headers={"X-Request-Id": request_id, "X-Forwarded-For": "203.0.113.9"},
    )
    assert str((await _row(pool, request_id))["source_ip"]) == "203.0.113.9"


# -- listing ---------------------------------------------------------------------------------


async def test_an_admin_pages_through_one_actors_events_with_the_cursor(
    make_client: MakeClient, admin: tuple[str, str], audit_log: AuditLog
) -> None:
    _, token = admin
    actor = _unique("alice")
    start = datetime.now(UTC) - timedelta(minutes=5)
    ids = await _record_events(audit_log, actor, 7, start=start)
    pages: list[list[dict[str, Any]]] = []
    client = await make_client()
    url = f"/api/v1/audit-events?actor={actor}&limit=3"
    while True:
        response = await client.get(url, headers=_bearer(token))
        body = await response.json()
        assert response.status == 200, body
        pages.append(body["items"])
        if body["nextCursor"] is None:
            break
        url = f"/api/v1/audit-events?actor={actor}&limit=3&cursor={body['nextCursor']}"
    assert [len(page) for page in pages] == [3, 3, 1]
    listed = [item["id"] for page in pages for item in page]
    # Newest first; of two events at the same instant, the later id first.
    assert listed == sorted(ids, reverse=True)
    first = pages[0][0]
    assert first["actor"] == actor
    assert first["outcome"] == "succeeded"
    assert datetime.fromisoformat(first["occurredAt"]) == start + timedelta(seconds=3)
    assert set(first) == {
        "id",
        "occurredAt",
        "actor",
        "groups",
        "action",
        "resource",
        "namespace",
        "name",
        "outcome",
        "statusCode",
        "requestId",
        "traceId",
        "sourceIp",
        "diff",
        "source",
    }
    assert first["source"] == "rest"


async def test_an_admin_filters_by_object_and_inclusive_time_range(
    make_client: MakeClient, admin: tuple[str, str], audit_log: AuditLog
) -> None:
    _, token = admin
    actor = _unique("bob")
    start = datetime(2031, 5, 1, 12, 0, tzinfo=UTC)
    await _record_events(audit_log, actor, 6, start=start, name="cart")
    await _record_events(audit_log, actor, 2, start=start, name="till")
    await _record_events(audit_log, actor, 2, start=start, resource="backups", name="cart")
    since, until = start + timedelta(seconds=1), start + timedelta(seconds=2)
    client = await make_client()
    response = await client.get(
        "/api/v1/audit-events",
        params={
            "actor": actor,
            "resource": "environments",
            "namespace": "shop",
            "name": "cart",
            "since": since.isoformat(),
            "until": until.isoformat(),
        },
        headers=_bearer(token),
    )
    body = await response.json()
    assert response.status == 200, body
    instants = [datetime.fromisoformat(item["occurredAt"]) for item in body["items"]]
    assert instants == [until, until, since, since]
    assert {(i["resource"], i["name"]) for i in body["items"]} == {("environments", "cart")}
    assert body["nextCursor"] is None


async def test_since_after_until_is_refused_with_the_field_path(
    make_client: MakeClient, admin: tuple[str, str]
) -> None:
    _, token = admin
    client = await make_client()
    response = await client.get(
        "/api/v1/audit-events",
        params={"since": "2025-02-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
        headers=_bearer(token),
    )
    body = await response.json(content_type=None)
    assert response.status == 422
    assert body["type"] == "https://dockyard.io/problems/validation-failed"
    assert [e["field"] for e in body["errors"]] == ["until"]


async def test_an_unknown_query_parameter_is_refused_with_its_name(
    make_client: MakeClient, admin: tuple[str, str]
) -> None:
    _, token = admin
    client = await make_client()
    response = await client.get("/api/v1/audit-events?colour=red", headers=_bearer(token))
    body = await response.json(content_type=None)
    assert response.status == 422
    assert [e["field"] for e in body["errors"]] == ["colour"]


# -- retention -------------------------------------------------------------------------------


async def test_retention_deletes_old_events_and_keeps_new_ones(
    audit_log: AuditLog, pool: asyncpg.Pool
) -> None:
    actor = _unique("carol")
    now = datetime.now(UTC)
    old = await _record_events(audit_log, actor, 3, start=now - timedelta(days=40))
    new = await _record_events(audit_log, actor, 2, start=now - timedelta(days=20))
    deleted = await audit_log.purge_older_than(days=30, batch_size=2)
    assert deleted is not None
    assert deleted >= 3
    left = await pool.fetch("SELECT id FROM audit_events WHERE actor = $1", actor)
    assert sorted(r["id"] for r in left) == sorted(new)
    assert not set(old) & {r["id"] for r in left}


async def test_a_purge_steps_aside_while_another_replica_holds_the_lock(
    audit_log: AuditLog, pool: asyncpg.Pool
) -> None:
    actor = _unique("dan")
    await _record_events(audit_log, actor, 1, start=datetime.now(UTC) - timedelta(days=400))
    async with pool.acquire() as other_replica:
        await other_replica.execute("SELECT pg_advisory_lock($1)", RETENTION_LOCK_KEY)
        try:
            assert await audit_log.purge_older_than(days=365) is None
        finally:
            await other_replica.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK_KEY)
    assert await pool.fetchval("SELECT count(*) FROM audit_events WHERE actor = $1", actor) == 1
    assert await audit_log.purge_older_than(days=365) is not None
    assert await pool.fetchval("SELECT count(*) FROM audit_events WHERE actor = $1", actor) == 0


async def test_the_retention_task_purges_periodically_until_cancelled(
    audit_log: AuditLog, pool: asyncpg.Pool
) -> None:
    actor = _unique("erin")

    async def count() -> int:
        value: int = await pool.fetchval(
            "SELECT count(*) FROM audit_events WHERE actor = $1", actor
        )
        return value

    task = asyncio.create_task(run_retention(audit_log, days=30, first_delay=0, interval=0.05))
    try:
        for _ in range(2):  # purged on one run, then again on a later one
            await _record_events(audit_log, actor, 1, start=datetime.now(UTC) - timedelta(days=31))
            for _ in range(500):  # the task runs every 50 ms: poll for its effect
                if await count() == 0:
                    break
                await asyncio.sleep(0.02)
            assert await count() == 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_app_runs_the_retention_task_while_it_serves(make_client: MakeClient) -> None:
    def running() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "dockyard-audit-retention"]

    before = len(running())
    client = await make_client()
    assert (await client.get("/healthz")).status == 200
    assert len(running()) == before + 1
    await client.close()  # the app stops with its server
    await asyncio.sleep(0)
    assert len(running()) == before


# -- failures of the trail itself ------------------------------------------------------------


def _with_database(dsn: str, database: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{database}"))


@pytest.fixture
async def unmigrated_dsn(platform_dsn: str) -> AsyncIterator[str]:
    """A database without the platform schema, so every audit INSERT fails."""
    name = f"dockyard_audit_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(platform_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield _with_database(platform_dsn, name)
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


async def test_a_failed_audit_write_is_logged_and_the_answer_is_kept(
    make_client: MakeClient, unmigrated_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    request_id = _unique("req")
    with caplog.at_level(logging.ERROR, logger="dockyard.api.audit"):
        client = await make_client(database_url=unmigrated_dsn)
        response = await client.get("/api/v1/audit-events", headers={"X-Request-Id": request_id})
        # Closed before its database is dropped (unmigrated_dsn's teardown).
        await client.close()
    assert response.status == 401
    failures = [r for r in caplog.records if r.getMessage() == "audit.write_failed"]
    assert len(failures) == 1
    assert failures[0].levelno == logging.ERROR
    assert failures[0].__dict__["request_id"] == request_id
    assert failures[0].__dict__["error"] == "UndefinedTableError"


async def test_a_row_whose_strings_hold_a_nul_is_stored_with_a_stand_in(pool: asyncpg.Pool) -> None:
    """PostgreSQL stores no NUL in text or jsonb: a row holding one (an actor's name or a
    diff from the apiserver's report of a write) raised, and the change went unrecorded.
    The real server, through the pool's own codec."""
    actor = _unique("nul")
    row = audit_rows.AuditRow(
        actor=f"{actor}\x00",
        action="PATCH restores",
        resource="restores",
        outcome="succeeded",
        name="quiet",
        diff={"/metadata/annotations/note": {"to": "a\x00b"}, "k\x00": None},
    )
    with pytest.raises(asyncpg.UntranslatableCharacterError):
        await pool.execute("""SELECT '{"to": "a\\u0000b"}'::jsonb""")  # as json.dumps wrote it

    await audit_rows.insert(pool, row)

    query = "SELECT diff FROM audit_events WHERE actor = $1"
    [stored] = await pool.fetch(query, f"{actor}\ufffd")
    assert stored["diff"] == {"/metadata/annotations/note": {"to": "a\ufffdb"}, "k\ufffd": None}
