"""Webhooks on the test bed: the operator delivers the event log to a real HTTP
receiver, signed as Standard Webhooks says, through failures, its breaker, dead letters
and redelivery over REST; and a URL aimed at a private address is refused.

The receiver runs in the test (http on loopback, which ``dockyard testbed env`` allows
the operator to reach). Events are appended as the operator's emitter appends them,
so that twenty of them need not wait for twenty backups.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import uuid
from collections import Counter
from typing import Any

import asyncpg
import pytest
import yaml
from aiohttp import web
from standardwebhooks.webhooks import Webhook as Verifier
from standardwebhooks.webhooks import WebhookVerificationError

from dockyard.core import event_log, events
from dockyard.core.events import EventType, ObjectRef, RunEventData
from dockyard.operator.handlers.webhooks import SECRET_RECHECK_SECONDS
from dockyard.testbed.cluster import State, Testbed
from dockyard.testbed.processes import free_port
from tests.conftest import SESSION_ID, Kubectl, StartApi, api_settings

pytestmark = pytest.mark.usefixtures("operator_process", "platform_migrated")


class Receiver:
    """An HTTP endpoint that verifies every signature and fails when told to."""

    def __init__(self, secret: str) -> None:
        self.verifier = Verifier(secret)
        self.handled: Counter[str] = Counter()
        self.requests = 0
        self.bad_signatures = 0
        self.failing = False
        self.fail_every: tuple[int, ...] = ()
        self.flood_bytes = 0
        """Answer 200 with this many bytes of body (streamed), counting what was sent."""
        self.flooded = 0
        self.delay = 0.0
        """Seconds to think before answering."""
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def hook(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        body = await request.read()
        try:
            self.verifier.verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.bad_signatures += 1
            return web.Response(status=400)
        if self.failing or self.requests % 10 in self.fail_every:
            return web.Response(status=503)
        payload = json.loads(body)
        assert payload["id"] == request.headers["webhook-id"]
        await asyncio.sleep(self.delay)
        self.handled[payload["id"]] += 1
        if self.flood_bytes:
            return await self._flood(request)
        return web.Response(status=204)

    async def _flood(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_length = self.flood_bytes
        await response.prepare(request)
        chunk = b"\0" * (1 << 16)
        try:
            while self.flooded < self.flood_bytes:
                await response.write(chunk)
                self.flooded += len(chunk)
        except (ConnectionError, RuntimeError):
            pass  # the client hung up
        return response


def _signing_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


async def _webhook(
    kubectl: Kubectl, namespace: str, name: str, url: str, secret: str | None = None
) -> None:
    if secret is not None:
        await asyncio.to_thread(
            kubectl, "create", "secret", "generic", f"{name}-signing",
            f"--from-literal=secret={secret}", "-n", namespace,
        )  # fmt: skip
    manifest = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "url": url,
            "events": ["*"],
            "secretRef": {"name": f"{name}-signing", "key": "secret"},
        },
    }
    await asyncio.to_thread(kubectl, "apply", "-f", "-", input=yaml.safe_dump(manifest))


async def _status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    result = await asyncio.to_thread(kubectl, "get", "webhook", name, "-n", namespace, "-o", "json")
    return dict(json.loads(result.stdout).get("status") or {})


def _ready(status: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == "Ready"), {})


async def _until(check: Any, within: float = 60, what: str = "condition") -> Any:
    deadline = asyncio.get_running_loop().time() + within
    last = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} not met within {within}s; last value: {last!r}")


async def _append(state: State, namespace: str, count: int) -> list[str]:
    made = []
    for i in range(count):
        ref = ObjectRef(kind="Backup", namespace=namespace, name=f"b{i}",
                        uid=str(uuid.uuid4()), generation=1)  # fmt: skip
        made.append(events.make(EventType.BACKUP_COMPLETED, RunEventData(object=ref)))
    pool = await asyncpg.create_pool(api_settings(state).database_dsn(), min_size=1, max_size=1)
    try:
        await event_log.append_now(pool, made)
    finally:
        await pool.close()
    return [e.id for e in made]


async def _ready_status(kubectl: Kubectl, namespace: str) -> bool:
    return _ready(await _status(kubectl, namespace, "hook")).get("status") == "True"


async def test_a_receiver_failing_30_percent_gets_every_event_once_and_signed(
    kubectl: Kubectl, testbed_state: State, namespace: str
) -> None:
    secret = _signing_secret()
    receiver = Receiver(secret)
    await receiver.start()
    try:
        receiver.fail_every = (1, 4, 7)  # 3 requests in every 10 answer 503
        await _webhook(kubectl, namespace, "hook", receiver.url, secret)
        await _until(lambda: _ready_status(kubectl, namespace), what="Webhook Ready")
        sent = await _append(testbed_state, namespace, 20)

        async def all_handled() -> bool:
            return set(receiver.handled) >= set(sent)

        await _until(all_handled, within=90, what="every event handled")
        await asyncio.sleep(2)  # no late duplicate either
    finally:
        await receiver.stop()
    assert {i: receiver.handled[i] for i in sent} == dict.fromkeys(sent, 1)
    assert receiver.bad_signatures == 0
    assert receiver.requests > 20  # some were refused and delivered again
    status = await _until(
        lambda: _delivered_status(kubectl, namespace), what="status shows the deliveries"
    )
    assert status["deadLetters"] == 0
    assert status["lastDelivery"]["succeeded"] is True


async def _delivered_status(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    status = await _status(kubectl, namespace, "hook")
    return status if status.get("pending") == 0 and status.get("lastDelivery") else None


@pytest.mark.usefixtures("roles")
async def test_the_breaker_opens_on_a_dead_receiver_and_closes_when_it_is_back_and_dead_letters_can_be_redelivered(  # noqa: E501
    kubectl: Kubectl,
    testbed: Testbed,
    testbed_state: State,
    namespace: str,
    start_api: StartApi,
) -> None:
    secret = _signing_secret()
    receiver = Receiver(secret)
    await receiver.start()
    try:
        await _webhook(kubectl, namespace, "hook", receiver.url, secret)
        await _until(lambda: _ready_status(kubectl, namespace), what="Webhook Ready")
        receiver.failing = True
        [first] = await _append(testbed_state, namespace, 1)

        async def breaker(state: str) -> dict[str, Any] | None:
            status = await _status(kubectl, namespace, "hook")
            return status if status.get("breaker") == state else None

        opened = await _until(lambda: breaker("Open"), what="breaker Open")
        assert opened["consecutiveFailures"] >= 5
        assert opened["lastDelivery"]["statusCode"] == 503
        # Given up after DOCKYARD_WEBHOOK_DEAD_LETTER_AFTER (15 s here): a dead letter.
        dead = await _until(lambda: _dead(kubectl, namespace), within=60, what="a dead letter")
        assert dead["pending"] == 0
        assert first not in receiver.handled

        receiver.failing = False
        user = f"ops-{uuid.uuid4().hex[:6]}"
        await asyncio.to_thread(
            kubectl, "create", "rolebinding", user, "--clusterrole=dockyard-operator",
            f"--user={user}", "-n", namespace,
        )  # fmt: skip
        api = await start_api()
        headers = {"Authorization": f"Bearer {testbed.user_token(user, [])}"}
        path = f"/api/v1/namespaces/{namespace}/webhooks/hook"

        refusals: list[str] = []

        async def redelivered() -> dict[str, Any] | None:
            response = await api.post(f"{path}/redeliver", json={}, headers=headers)
            if response.status == 202:
                return dict(await response.json())
            # 403 until the new RoleBinding reaches the authorizer.
            refusals.append(f"{response.status} {await response.text()}")
            assert response.status == 403, refusals[-1]
            return None

        revived = await _until(redelivered, within=30, what="redelivery accepted")
        assert revived == {"eventIds": [first]}
        await _until(lambda: _handled(receiver, first), what="the dead letter delivered")
        closed = await _until(lambda: breaker("Closed"), what="breaker Closed")
        assert closed["consecutiveFailures"] == 0
        assert closed["deadLetters"] == 0
        listed = await api.get(f"/api/v1/namespaces/{namespace}/webhooks", headers=headers)
        assert [w["metadata"]["name"] for w in (await listed.json())["items"]] == ["hook"]
        uid = (await _status_object(kubectl, namespace))["metadata"]["uid"]
        # Deleted, the Webhook's deliveries go with it (none is retried for nobody).
        await asyncio.to_thread(kubectl, "delete", "webhook", "hook", "-n", namespace)
        await _until(lambda: _no_deliveries(testbed_state, uid), what="its deliveries gone")
    finally:
        await receiver.stop()
    assert receiver.handled[first] == 1


async def _status_object(kubectl: Kubectl, namespace: str) -> dict[str, Any]:
    got = await asyncio.to_thread(kubectl, "get", "webhook", "hook", "-n", namespace, "-o", "json")
    return dict(json.loads(got.stdout))


async def _no_deliveries(state: State, uid: str) -> bool:
    conn = await asyncpg.connect(api_settings(state).database_dsn())
    try:
        left = await conn.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE webhook_uid = $1", uid
        )
    finally:
        await conn.close()
    return bool(left == 0)


async def _dead(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    status = await _status(kubectl, namespace, "hook")
    return status if status.get("deadLetters") == 1 else None


async def _handled(receiver: Receiver, event_id: str) -> bool:
    return receiver.handled[event_id] >= 1


async def test_a_receiver_answering_with_an_endless_body_is_not_read_to_its_end(
    kubectl: Kubectl, testbed_state: State, namespace: str
) -> None:
    """The attack: a receiver answers every delivery with hundreds of megabytes (or a
    gzip bomb), so that the operator, reading it whole, runs out of memory."""
    secret = _signing_secret()
    receiver = Receiver(secret)
    receiver.flood_bytes = 512 << 20
    await receiver.start()
    try:
        await _webhook(kubectl, namespace, "hook", receiver.url, secret)
        await _until(lambda: _ready_status(kubectl, namespace), what="Webhook Ready")
        [sent] = await _append(testbed_state, namespace, 1)
        status = await _until(
            lambda: _delivered_status(kubectl, namespace), what="the delivery recorded"
        )
    finally:
        await receiver.stop()
    assert receiver.handled[sent] == 1
    assert status["lastDelivery"]["succeeded"] is True
    assert status["lastDelivery"]["statusCode"] == 200
    # The operator read a bounded part and hung up; the rest was never sent.
    assert receiver.flooded < 64 << 20


async def test_a_suspended_webhooks_backlog_is_parked_and_woken_on_resume(
    kubectl: Kubectl, testbed_state: State, namespace: str
) -> None:
    """The attack: suspend Webhooks with deliveries pending, so that their backlog is
    claimed again every few seconds and fills the batches every namespace shares."""
    secret = _signing_secret()
    receiver = Receiver(secret)
    receiver.failing = True
    await receiver.start()
    pool = await asyncpg.create_pool(
        api_settings(testbed_state).database_dsn(), min_size=1, max_size=1
    )
    try:
        await _webhook(kubectl, namespace, "hook", receiver.url, secret)
        await _until(lambda: _ready_status(kubectl, namespace), what="Webhook Ready")
        [sent] = await _append(testbed_state, namespace, 1)

        async def refused_once() -> bool:
            return receiver.requests >= 1

        await _until(refused_once, what="a refused attempt")
        await asyncio.to_thread(
            kubectl, "patch", "webhook", "hook", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"suspend": True}}),
        )  # fmt: skip

        async def parked() -> Any:
            return await pool.fetchrow(
                "SELECT next_at - now() AS wait FROM webhook_deliveries "
                "WHERE event_id = $1 AND last_error = 'webhook suspended'",
                sent,
            )

        row = await _until(parked, within=60, what="the delivery parked")
        assert row["wait"].total_seconds() > 200  # not claimed again every few seconds
        assert receiver.handled[sent] == 0

        receiver.failing = False
        await asyncio.to_thread(
            kubectl, "patch", "webhook", "hook", "-n", namespace, "--type=merge",
            "-p", json.dumps({"spec": {"suspend": False}}),
        )  # fmt: skip

        async def delivered() -> bool:
            return receiver.handled[sent] == 1

        await _until(delivered, within=30, what="delivered once resumed")
    finally:
        await pool.close()
        await receiver.stop()


async def test_one_namespaces_backlog_of_slow_deliveries_does_not_hold_up_another(
    kubectl: Kubectl, testbed_state: State, namespace: str
) -> None:
    """The attack: a tenant's Webhook answers every delivery just inside the timeout and
    has a backlog of hundreds, older than anyone else's deliveries. Claimed oldest
    first, it would fill every batch, and another namespace's delivery would wait until
    the whole backlog had been sent."""
    other = f"t-fair-{SESSION_ID}-{uuid.uuid4().hex[:8]}"
    await asyncio.to_thread(kubectl, "create", "namespace", other)
    slow_secret, fast_secret = _signing_secret(), _signing_secret()
    slow, fast = Receiver(slow_secret), Receiver(fast_secret)
    slow.delay = 1.0  # the operator's timeout here is 5 s
    await slow.start()
    await fast.start()
    try:
        await _webhook(kubectl, namespace, "hook", slow.url, slow_secret)
        await _webhook(kubectl, other, "hook", fast.url, fast_secret)
        await _until(lambda: _ready_status(kubectl, namespace), what="the slow Webhook Ready")
        await _until(lambda: _ready_status(kubectl, other), what="the fast Webhook Ready")
        backlog = await _append(testbed_state, namespace, 200)

        async def slow_started() -> bool:
            return slow.requests >= 1

        await _until(slow_started, what="the backlog's first delivery")
        [sent] = await _append(testbed_state, other, 1)

        async def delivered() -> bool:
            return fast.handled[sent] == 1

        await _until(delivered, within=120, what="the other namespace's delivery")
        sent_of_backlog = sum(slow.handled[i] for i in backlog)
    finally:
        await slow.stop()
        await fast.stop()
        await asyncio.to_thread(kubectl, "delete", "namespace", other, "--wait=false", check=False)
    # Oldest first, the whole backlog (200) would have gone before it; now the backlog
    # holds at most 6 of the dispatcher's 8 slots, and the other namespace's delivery
    # takes a free one in the first pass after it is due.
    assert sent_of_backlog < 100, sent_of_backlog


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("http://169.254.169.254/latest/meta-data", "169.254.169.254, a link-local address"),
        ("https://10.1.2.3/hook", "10.1.2.3, a private address"),
        # Full-width digits and ideographic dots, which aiohttp's URL parser folds into
        # the address 169.254.169.254 and then connects to without asking the resolver.
        ("https://\uff11\uff16\uff19.254.169.254/latest", "not plain ASCII"),
        ("https://169\u3002254\u3002169\u3002254/latest", "not plain ASCII"),
    ],
)
async def test_a_url_aimed_at_a_private_address_is_refused(
    kubectl: Kubectl, namespace: str, url: str, refused: str
) -> None:
    await _webhook(kubectl, namespace, "hook", url, _signing_secret())

    async def refusal() -> dict[str, Any] | None:
        ready = _ready(await _status(kubectl, namespace, "hook"))
        return ready if ready.get("status") == "False" else None

    ready = await _until(refusal, what="Ready=False")
    assert ready["reason"] == "URLRefused"
    assert refused in ready["message"]
    if "ASCII" not in refused:
        assert "DOCKYARD_WEBHOOK_ALLOWED_NETWORKS" in ready["message"]


async def test_a_webhook_applied_before_its_secret_becomes_ready_once_the_secret_is_made(
    kubectl: Kubectl, namespace: str
) -> None:
    """GitOps tools apply in any order, and the docs show the Webhook first: making the
    Secret the refusal names is enough, with no change to the Webhook."""
    await _webhook(kubectl, namespace, "hook", "http://127.0.0.1:9/in")

    async def refused() -> dict[str, Any] | None:
        ready = _ready(await _status(kubectl, namespace, "hook"))
        return ready if ready.get("reason") == "SecretNotFound" else None

    await _until(refused, what="Ready=False, SecretNotFound")
    await asyncio.to_thread(
        kubectl, "create", "secret", "generic", "hook-signing",
        f"--from-literal=secret={_signing_secret()}", "-n", namespace,
    )  # fmt: skip

    async def accepted() -> bool:
        return await _ready_status(kubectl, namespace)

    await _until(accepted, within=SECRET_RECHECK_SECONDS + 15, what="Ready=True")


@pytest.mark.usefixtures("roles")
async def test_webhooks_have_the_rest_contract_of_every_kind(
    kubectl: Kubectl, testbed: Testbed, namespace: str, start_api: StartApi
) -> None:
    user = f"ops-{uuid.uuid4().hex[:6]}"
    await asyncio.to_thread(
        kubectl, "create", "rolebinding", user, "--clusterrole=dockyard-operator",
        f"--user={user}", "-n", namespace,
    )  # fmt: skip
    api = await start_api()
    headers = {"Authorization": f"Bearer {testbed.user_token(user, [])}"}
    base = f"/api/v1/namespaces/{namespace}/webhooks"
    body = {
        "metadata": {"name": "chat"},
        "spec": {
            "url": "https://hooks.example.com/x",
            "events": ["backup.failed"],
            "secretRef": {"name": "chat-signing", "key": "secret"},
        },
    }

    async def created() -> Any:
        response = await api.post(base, json=body, headers=headers)
        if response.status == 403:
            return None  # until the RoleBinding reaches the authorizer
        return response

    response = await _until(created, within=30, what="created")
    assert response.status == 201, await response.text()

    async def checked() -> Any:
        # The operator checks it at once (Ready=False: its Secret does not exist).
        got = await api.get(f"{base}/chat", headers=headers)
        conditions = ((await got.json()).get("status") or {}).get("conditions") or []
        return got if any(c["reason"] == "SecretNotFound" for c in conditions) else None

    await _until(checked, within=30, what="checked")
    refused = await api.post(
        base, json={**body, "metadata": {"name": "bad"}, "spec": {**body["spec"], "events": []}},
        headers=headers,
    )  # fmt: skip
    assert refused.status == 422
    assert (await refused.json())["errors"][0]["field"].startswith("spec.events")
    # The operator's bookkeeping follows its check: a 412 is right while it writes.
    for _ in range(10):
        etag = (await api.get(f"{base}/chat", headers=headers)).headers["ETag"]
        patched = await api.patch(
            f"{base}/chat",
            json={"spec": {"events": ["backup.failed", "drill.failed"]}},
            headers={**headers, "Content-Type": "application/merge-patch+json", "If-Match": etag},
        )
        if patched.status != 412:
            break
        await asyncio.sleep(0.5)
    assert patched.status == 200, await patched.text()
    assert (await patched.json())["spec"]["events"] == ["backup.failed", "drill.failed"]
    deleted = await api.delete(f"{base}/chat", headers=headers)
    assert deleted.status == 204
