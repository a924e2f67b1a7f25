"""Every door is audited: a kubectl approval reaches the audit trail through the
kube-apiserver's audit webhook (source ``kubectl``), a REST write is not recorded
twice, and the endpoint refuses a batch without the apiserver's token.

The test bed's apiserver posts its audit events to an API on ``audit_sink_port``; this
test starts one there.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from aiohttp import ClientSession, TCPConnector, web

from dockyard.api.app import create_app
from dockyard.core import audit_ids
from dockyard.core.kube import CallerToken, KubeClient, KubeError, load_config
from dockyard.core.resources import RESTORES
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import Kubectl, api_settings

pytestmark = pytest.mark.usefixtures("crds_installed", "platform_migrated")


@pytest.fixture
async def sink(testbed_state: State) -> Any:
    """The API, serving HTTPS on the port the apiserver's audit webhook posts to, with
    the certificate the test bed issued for it."""
    settings = api_settings(testbed_state, audit_sink_token=testbed_state.audit_sink_token)
    pki = Path(testbed_state.directory) / "pki"
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(pki / "audit-sink.crt", pki / "audit-sink.key")
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    port = testbed_state.audit_sink_port
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=serving).start()
    yield f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=pki / "ca.crt")
    await runner.cleanup()


def _user(kubectl: Kubectl, testbed: Testbed, namespace: str, role: str) -> tuple[str, str]:
    user = f"{role.split('-')[-1]}-{uuid.uuid4().hex[:6]}"
    kubectl("create", "rolebinding", user, f"--clusterrole={role}", f"--user={user}",
            "-n", namespace)  # fmt: skip
    return user, testbed.user_token(user, [])


@pytest.fixture
def as_admin(kubectl: Kubectl, testbed: Testbed, roles: None) -> Iterator[dict[str, str]]:
    """The headers of a new user bound to dockyard-admin (who may read the trail)."""
    admin = f"admin-{uuid.uuid4().hex[:6]}"
    kubectl("create", "clusterrolebinding", admin, "--clusterrole=dockyard-admin",
            f"--user={admin}")  # fmt: skip
    yield {"Authorization": f"Bearer {testbed.user_token(admin, [])}"}
    kubectl("delete", "clusterrolebinding", admin, "--wait=false", check=False)


def _dry_run_restore(kubectl: Kubectl, namespace: str, name: str) -> None:
    restore = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Restore",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"source": {"backupRef": {"name": "nightly"}}, "dryRun": True},
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(restore))
    # Planned and waiting, as the operator would leave it: only such a restore may be
    # approved once the approval policy (manifests/restore-approval-policy.yaml) is in.
    waiting = json.dumps({"status": {"phase": "AwaitingApproval"}})
    kubectl("patch", "restore", name, "-n", namespace, "--subresource=status", "--type=merge",
            "-p", waiting)  # fmt: skip


@pytest.fixture
def namespace(unwatched_namespace: str) -> str:
    """No operator watches it: its restores stay as the test writes them."""
    return unwatched_namespace


async def test_a_kubectl_approval_is_in_the_audit_trail_with_source_kubectl(
    sink: tuple[str, ssl.SSLContext],
    kubectl: Kubectl,
    testbed: Testbed,
    namespace: str,
    as_admin: dict[str, str],
) -> None:
    url, trust = sink
    bob, bob_token = _user(kubectl, testbed, namespace, "dockyard-operator")
    _dry_run_restore(kubectl, namespace, "promote")
    await asyncio.sleep(1)  # the RoleBinding reaches the authorizer
    kubectl("annotate", "restore", "promote", "-n", namespace,
            f"dockyard.io/approved-by={bob}", token=bob_token)  # fmt: skip
    async with ClientSession(connector=TCPConnector(ssl=trust)) as http:
        # Through REST: recorded by the API itself (source rest), not again as kubectl.
        created = await http.post(
            f"{url}/api/v1/namespaces/{namespace}/environments",
            json={"metadata": {"name": "web"}, "spec": {"tier": "development", "image": "a:1"}},
            headers=as_admin,
        )
        assert created.status == 201, await created.text()
        # Made after the REST create: once its row is in, the create's event has been seen
        # (the apiserver sends its events in order).
        kubectl("label", "restore", "promote", "-n", namespace, "sentinel=yes", token=bob_token)

        async def kubectl_rows() -> list[dict[str, Any]]:
            listed = await http.get(
                f"{url}/api/v1/audit-events",
                params={"source": "kubectl", "namespace": namespace},
                headers=as_admin,
            )
            assert listed.status == 200, await listed.text()
            return list((await listed.json())["items"])

        rows: list[dict[str, Any]] = []
        for _ in range(60):
            rows = await kubectl_rows()
            if sum(r["actor"] == bob for r in rows) >= 2:
                break
            await asyncio.sleep(0.5)
        rest = await http.get(
            f"{url}/api/v1/audit-events",
            params={"source": "rest", "namespace": namespace},
            headers=as_admin,
        )
        rest_rows = (await rest.json())["items"]
    approval = next(r for r in reversed(rows) if r["actor"] == bob)  # newest first
    assert approval["source"] == "kubectl"
    assert approval["action"].startswith("PATCH restores")
    assert (approval["resource"], approval["name"]) == ("restores", "promote")
    assert approval["statusCode"] == 200
    assert approval["outcome"] == "succeeded"
    assert any(r["action"].startswith("CREATE restores") for r in rows)  # kubectl apply
    assert not any(r["resource"] == "environments" for r in rows)  # REST's own write
    assert any(r["resource"] == "environments" for r in rest_rows)


async def test_a_batch_without_the_apiservers_token_is_refused(
    sink: tuple[str, ssl.SSLContext], namespace: str
) -> None:
    url, trust = sink
    batch = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": []}
    async with ClientSession(connector=TCPConnector(ssl=trust)) as http:
        refused = await http.post(
            f"{url}/api/v1/audit/kubernetes",
            data=json.dumps(batch),
            headers={"Authorization": "Bearer forged", "Content-Type": "application/json"},
        )
        problem = await refused.json()
    assert refused.status == 401
    assert problem["type"].endswith("/unauthorized")


async def _rows_of(
    http: ClientSession,
    url: str,
    headers: dict[str, str],
    namespace: str,
    actor: str,
    at_least: int = 1,
) -> list[dict[str, Any]]:
    """The kubectl rows of ``actor`` in ``namespace``, waited for until there are
    ``at_least`` (the apiserver batches), newest first."""
    rows: list[dict[str, Any]] = []
    for _ in range(60):
        listed = await http.get(
            f"{url}/api/v1/audit-events",
            params={"source": "kubectl", "namespace": namespace},
            headers=headers,
        )
        assert listed.status == 200, await listed.text()
        rows = [r for r in (await listed.json())["items"] if r["actor"] == actor]
        if len(rows) >= at_least:
            return rows
        await asyncio.sleep(0.5)
    return rows


async def test_a_write_with_dockyards_user_agent_is_still_audited_as_its_user(
    sink: tuple[str, ssl.SSLContext],
    kubectl: Kubectl,
    testbed: Testbed,
    testbed_state: State,
    namespace: str,
    as_admin: dict[str, str],
) -> None:
    """The attack: a tenant's operator edits an approval and claims to be the Dockyard
    API by its User-Agent, hoping the sink leaves the write out of the trail."""
    url, trust = sink
    mallory, mallory_token = _user(kubectl, testbed, namespace, "dockyard-operator")
    _dry_run_restore(kubectl, namespace, "sneaky")
    await asyncio.sleep(1)  # the RoleBinding reaches the authorizer
    disguised = KubeClient.connect(
        load_config(Path(testbed_state.kubeconfig), {}), user_agent="dockyard-api/1.0"
    )
    try:
        await disguised.merge_patch(
            RESTORES.path(namespace, "sneaky"),
            {"metadata": {"annotations": {"dockyard.io/approved-by": mallory}}},
            as_caller=CallerToken(mallory_token),
        )
    finally:
        await disguised.close()
    async with ClientSession(connector=TCPConnector(ssl=trust)) as http:
        rows = await _rows_of(http, url, as_admin, namespace, mallory)
    assert [(r["action"].split(" agent=")[0], r["name"]) for r in rows] == [
        ("PATCH restores", "sneaky")
    ]
    assert rows[0]["action"].endswith("agent=dockyard-api/1.0")


async def test_a_write_padded_with_a_long_query_string_is_still_in_the_trail(
    sink: tuple[str, ssl.SSLContext],
    kubectl: Kubectl,
    testbed: Testbed,
    testbed_state: State,
    namespace: str,
    as_admin: dict[str, str],
) -> None:
    """The attack: a tenant's operator approves with a query string of a million ``&``,
    which the apiserver ignores but writes into the event's request URI, where JSON
    makes each one six bytes (``\\u0026``). A Metadata event has no bodies to strip, so
    an apiserver truncating events at the usual 100 KiB drops it, and the approval
    would leave no trail. The test bed's apiserver truncates as the shipped manifest
    says."""
    url, trust = sink
    mallory, mallory_token = _user(kubectl, testbed, namespace, "dockyard-operator")
    _dry_run_restore(kubectl, namespace, "padded")
    await asyncio.sleep(1)  # the RoleBinding reaches the authorizer
    client = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
    try:
        await client.request(
            "PATCH",
            # As long as the apiserver takes a request line (its headers are 1 MiB).
            RESTORES.path(namespace, "padded") + "?" + "&" * 1_000_000,
            body={"metadata": {"annotations": {"dockyard.io/approved-by": mallory}}},
            as_caller=CallerToken(mallory_token),
            content_type="application/merge-patch+json",
        )
    finally:
        await client.close()
    approved = kubectl("get", "restore", "padded", "-n", namespace, "-o",
                       "jsonpath={.metadata.annotations.dockyard\\.io/approved-by}")  # fmt: skip
    assert approved.stdout.strip() == mallory
    async with ClientSession(connector=TCPConnector(ssl=trust)) as http:
        rows = await _rows_of(http, url, as_admin, namespace, mallory)
    assert [(r["action"].split(" agent=")[0], r["name"]) for r in rows] == [
        ("PATCH restores", "padded")
    ]


@dataclass(frozen=True)
class ChosenAuditId(CallerToken):
    """A caller's token, sent with an ``Audit-ID`` header of the caller's choosing."""

    chosen: str = ""

    def audit_id(self, method: str, path: str) -> str | None:
        return self.chosen


async def test_a_mark_read_from_an_audit_log_covers_no_other_write(
    sink: tuple[str, ssl.SSLContext],
    kubectl: Kubectl,
    testbed: Testbed,
    testbed_state: State,
    namespace: str,
    as_admin: dict[str, str],
) -> None:
    """The attack: a tenant's operator who may read the apiserver's audit log takes the
    mark the API put on one of their REST writes, and sends it with writes of their own
    (an approval of another Restore, a delete of the one it marked), hoping the sink
    takes them for the API's and leaves them out of the trail; or with the very call it
    was made for, made again."""
    url, trust = sink
    mallory, mallory_token = _user(kubectl, testbed, namespace, "dockyard-operator")
    for name in ("harmless", "promote"):
        _dry_run_restore(kubectl, namespace, name)
    await asyncio.sleep(1)  # the RoleBinding reaches the authorizer
    marked = RESTORES.path(namespace, "harmless")
    leaked = ChosenAuditId(
        mallory_token,
        chosen=audit_ids.mint(testbed_state.audit_sink_token, mallory, "PATCH", marked),
    )
    approve = {"metadata": {"annotations": {"dockyard.io/approved-by": mallory}}}
    kube = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
    try:
        # The write the mark was made for is the API's: left to the REST trail. The same
        # call made again with it is not.
        await kube.merge_patch(marked, {"metadata": {"labels": {"a": "b"}}}, as_caller=leaked)
        await kube.merge_patch(marked, {"metadata": {"labels": {"a": "c"}}}, as_caller=leaked)
        await kube.merge_patch(RESTORES.path(namespace, "promote"), approve, as_caller=leaked)
        await kube.request("DELETE", marked, as_caller=leaked)
    finally:
        await kube.close()
    async with ClientSession(connector=TCPConnector(ssl=trust)) as http:
        rows = await _rows_of(http, url, as_admin, namespace, mallory, at_least=3)
    assert sorted((r["action"].split(" agent=")[0], r["name"]) for r in rows) == [
        ("DELETE restores", "harmless"),
        ("PATCH restores", "harmless"),
        ("PATCH restores", "promote"),
    ]


async def test_an_audit_id_that_is_not_ascii_costs_no_write_its_trail(
    sink: tuple[str, ssl.SSLContext],
    kubectl: Kubectl,
    testbed: Testbed,
    testbed_state: State,
    namespace: str,
    as_admin: dict[str, str],
) -> None:
    """The attack: anyone with a token sends a write (refused, yet audited) whose
    ``Audit-ID`` has a character that is not ASCII, which the apiserver keeps as the
    event's ``auditID``. Had checking it raised, the sink would refuse the whole batch,
    every time the apiserver sent it, and everyone's writes of that window would leave no
    trail; a writer could also hide their own write that way."""
    url, trust = sink
    alice, alice_token = _user(kubectl, testbed, namespace, "dockyard-operator")
    mallory, mallory_token = _user(kubectl, testbed, namespace, "dockyard-operator")
    stranger = f"stranger-{uuid.uuid4().hex[:6]}"
    _dry_run_restore(kubectl, namespace, "promote")
    await asyncio.sleep(1)  # the RoleBindings reach the authorizer
    bad = "dy2-0-\u00e9"
    approve = {"metadata": {"annotations": {"dockyard.io/approved-by": mallory}}}
    client = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
    try:
        with pytest.raises(KubeError) as refused:
            await client.merge_patch(
                RESTORES.path(namespace, "promote"),
                {"metadata": {"labels": {"seen": "yes"}}},
                as_caller=ChosenAuditId(testbed.user_token(stranger, []), chosen=bad),
            )
        assert refused.value.status == 403
        await client.merge_patch(
            RESTORES.path(namespace, "promote"),
            approve,
            as_caller=ChosenAuditId(mallory_token, chosen=bad),
        )
    finally:
        await client.close()
    kubectl("label", "restore", "promote", "-n", namespace, "reviewed=yes", token=alice_token)
    async with ClientSession(connector=TCPConnector(ssl=trust)) as http:
        written = {
            actor: [(r["action"].split(" agent=")[0], r["outcome"]) for r in rows]
            for actor in (stranger, mallory, alice)
            if (rows := await _rows_of(http, url, as_admin, namespace, actor))
        }
    assert written == {
        stranger: [("PATCH restores", "denied")],
        mallory: [("PATCH restores", "succeeded")],
        alice: [("PATCH restores", "succeeded")],
    }


async def test_a_bad_event_costs_only_itself_and_overlong_fields_are_cut(
    sink: tuple[str, ssl.SSLContext], testbed_state: State, namespace: str
) -> None:
    url, trust = sink

    def event(audit_id: str | None, username: str, groups: list[str]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "stage": "ResponseComplete",
            "verb": "patch",
            "user": {"username": username, "groups": groups},
            "userAgent": "kubectl/v1.37.1",
            "objectRef": {
                "apiGroup": "dockyard.io",
                "resource": "restores",
                "namespace": namespace,
                "name": "promote",
            },
            "responseStatus": {"code": 200},
        }
        if audit_id is not None:
            body["auditID"] = audit_id
        return body

    crowd = [f"group-{i}" for i in range(200)]
    batch = {
        "kind": "EventList",
        "apiVersion": "audit.k8s.io/v1",
        "items": [
            event(str(uuid.uuid4()), "x" * 1000, crowd),  # too much: cut to fit
            event(None, "nobody", []),  # not an audit event at all: skipped
            event(str(uuid.uuid4()), "carol", ["ops"]),  # fine
        ],
    }
    sink_auth = {"Authorization": f"Bearer {testbed_state.audit_sink_token}"}
    async with ClientSession(connector=TCPConnector(ssl=trust)) as http:
        answer = await http.post(f"{url}/api/v1/audit/kubernetes", json=batch, headers=sink_auth)
        assert answer.status == 200, await answer.text()
        assert await answer.json() == {"recorded": 2, "skipped": 1}
    conn = await asyncpg.connect(api_settings(testbed_state).database_url.get_secret_value())
    try:
        rows = await conn.fetch(
            "SELECT actor, groups FROM audit_events WHERE source = 'kubectl' "
            "AND namespace = $1 ORDER BY actor",
            namespace,
        )
    finally:
        await conn.close()
    assert [(r["actor"], len(r["groups"])) for r in rows] == [("carol", 1), ("x" * 256, 64)]


async def test_a_batch_swollen_by_long_request_uris_is_taken_whole(
    sink: tuple[str, ssl.SSLContext], testbed_state: State, namespace: str
) -> None:
    """The attack: any authenticated user makes a few audited writes with half a megabyte
    of query string each, so that the apiserver's batch outgrows the API's 1 MiB body
    limit; refused (and not sent again), it takes everyone's writes of that window out
    of the trail."""
    url, trust = sink

    def event(username: str, uri: str) -> dict[str, Any]:
        return {
            "auditID": str(uuid.uuid4()),
            "stage": "ResponseComplete",
            "verb": "patch",
            "requestURI": uri,
            "user": {"username": username, "groups": []},
            "userAgent": "kubectl/v1.37.1",
            "objectRef": {
                "apiGroup": "dockyard.io",
                "resource": "restores",
                "namespace": namespace,
                "name": "promote",
            },
            "responseStatus": {"code": 403},
        }

    pad = f"/apis/dockyard.io/v1alpha1/namespaces/{namespace}/restores/x?pad=" + "a" * 500_000
    batch = {
        "kind": "EventList",
        "apiVersion": "audit.k8s.io/v1",
        "items": [event("mallory", pad) for _ in range(3)] + [event("bob", "/apis/x")],
    }
    assert len(json.dumps(batch)) > 1024 * 1024
    sink_auth = {"Authorization": f"Bearer {testbed_state.audit_sink_token}"}
    async with ClientSession(connector=TCPConnector(ssl=trust)) as http:
        answer = await http.post(f"{url}/api/v1/audit/kubernetes", json=batch, headers=sink_auth)
        assert answer.status == 200, await answer.text()
        assert await answer.json() == {"recorded": 4, "skipped": 0}
        # Without the token, the API's own limit holds before anything is read.
        anyone = await http.post(f"{url}/api/v1/audit/kubernetes", json=batch)
        assert anyone.status in (401, 413)
    conn = await asyncpg.connect(api_settings(testbed_state).database_url.get_secret_value())
    try:
        actors = await conn.fetch(
            "SELECT actor FROM audit_events WHERE source = 'kubectl' AND namespace = $1",
            namespace,
        )
    finally:
        await conn.close()
    assert sorted(r["actor"] for r in actors) == ["bob", "mallory", "mallory", "mallory"]


async def test_writes_sharing_a_chosen_audit_id_are_each_in_the_trail(
    sink: tuple[str, ssl.SSLContext],
    kubectl: Kubectl,
    testbed: Testbed,
    testbed_state: State,
    namespace: str,
    as_admin: dict[str, str],
) -> None:
    """The attack: the apiserver takes a request's ``Audit-ID`` header as the event's
    auditID. A tenant's operator makes a harmless write, then the approval with the same
    ID, hoping the sink takes the approval for the first event sent again; and one more
    write with an ID too long for the trail, hoping the sink skips it."""
    url, trust = sink
    mallory, mallory_token = _user(kubectl, testbed, namespace, "dockyard-operator")
    _dry_run_restore(kubectl, namespace, "twin")
    await asyncio.sleep(1)  # the RoleBinding reaches the authorizer
    chosen = f"chosen-{uuid.uuid4().hex[:8]}"
    writes = [
        (chosen, {"metadata": {"labels": {"harmless": "yes"}}}),
        (chosen, {"metadata": {"annotations": {"dockyard.io/approved-by": mallory}}}),
        ("z" * 100, {"metadata": {"labels": {"harmless": "still"}}}),
    ]
    kube = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
    try:
        for audit_id, patch in writes:
            caller = ChosenAuditId(mallory_token, chosen=audit_id)
            await kube.merge_patch(RESTORES.path(namespace, "twin"), patch, as_caller=caller)
    finally:
        await kube.close()
    async with ClientSession(connector=TCPConnector(ssl=trust)) as http:
        rows = await _rows_of(http, url, as_admin, namespace, mallory, at_least=3)
    assert [(r["action"].split(" agent=")[0], r["name"]) for r in rows] == [
        ("PATCH restores", "twin")
    ] * 3
    assert sorted(r["requestId"] for r in rows) == sorted([chosen, chosen, "z" * 64])


async def test_a_batch_sent_again_is_recorded_once(
    sink: tuple[str, ssl.SSLContext], testbed_state: State, namespace: str
) -> None:
    """The apiserver sends a batch again when its post timed out: no row twice."""
    items = [
        {
            "auditID": str(uuid.uuid4()),
            "stage": "ResponseComplete",
            "verb": "delete",
            "requestReceivedTimestamp": f"2026-12-05T12:00:0{i}.000001Z",
            "stageTimestamp": f"2026-12-05T12:00:0{i}.000002Z",
            "user": {"username": "erin", "groups": []},
            "userAgent": "kubectl/v1.37.1",
            "objectRef": {
                "apiGroup": "dockyard.io",
                "resource": "backups",
                "namespace": namespace,
                "name": f"old-{i}",
            },
            "responseStatus": {"code": 200},
        }
        for i in range(2)
    ]
    answers = await _post_twice(sink, testbed_state, items)
    assert answers == [{"recorded": 2, "skipped": 0}, {"recorded": 0, "skipped": 0}]


async def _post_twice(
    sink: tuple[str, ssl.SSLContext], testbed_state: State, items: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Post one batch of ``items`` to the sink twice, as the apiserver does after a
    timeout; its two answers."""
    url, trust = sink
    batch = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}
    sink_auth = {"Authorization": f"Bearer {testbed_state.audit_sink_token}"}
    answers = []
    async with ClientSession(connector=TCPConnector(ssl=trust)) as http:
        for _ in range(2):
            answer = await http.post(
                f"{url}/api/v1/audit/kubernetes", json=batch, headers=sink_auth
            )
            assert answer.status == 200, await answer.text()
            answers.append(await answer.json())
    return answers


async def test_a_batch_sent_again_leaves_the_apis_marked_write_out_both_times(
    sink: tuple[str, ssl.SSLContext], testbed_state: State, namespace: str
) -> None:
    """A mark is spent by the first event that carries it; the same event sent again (the
    same digest) is still that event, not a replay."""
    path = f"/apis/dockyard.io/v1alpha1/namespaces/{namespace}/backups/old"
    now = datetime.now(UTC)
    mark = audit_ids.mint(testbed_state.audit_sink_token, "erin", "DELETE", path)
    item = {
        "auditID": mark,
        "stage": "ResponseComplete",
        "verb": "delete",
        "requestURI": path,
        "requestReceivedTimestamp": now.isoformat().replace("+00:00", "Z"),
        "stageTimestamp": now.isoformat().replace("+00:00", "Z"),
        "user": {"username": "erin", "groups": []},
        "userAgent": "dockyard-api/1.0",
        "objectRef": {"apiGroup": "dockyard.io", "resource": "backups", "name": "old"},
        "responseStatus": {"code": 200},
    }
    item["objectRef"]["namespace"] = namespace  # type: ignore[index]
    assert await _post_twice(sink, testbed_state, [item]) == [{"recorded": 0, "skipped": 0}] * 2
