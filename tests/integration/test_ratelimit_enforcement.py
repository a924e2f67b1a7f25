"""Rate limits enforced by the real API, from policies applied with kubectl, with counters
in the test bed's Redis and callers authenticated by the real apiserver."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import asyncpg
import pytest
import yaml
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from dockyard.api import keys
from dockyard.api.app import create_app
from dockyard.core import migrations
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import ROOT, Kubectl, get_json
from tests.integration.ratelimits import (
    RULES_PATH,
    apply,
    eventually,
    in_force,
    manifest,
    metric,
    rule,
    settings,
)

Client = TestClient[Any, Any]
ClientFactory = Callable[..., AbstractAsyncContextManager[Client]]
pytestmark = pytest.mark.usefixtures("crds_installed")


@pytest.fixture(scope="module")
async def migrated(testbed_state: State) -> None:
    conn = await asyncpg.connect(testbed_state.database_url)
    try:
        await migrations.migrate(conn)
    finally:
        await conn.close()


@pytest.fixture
def api(
    aiohttp_client: AiohttpClient, testbed_state: State, namespace: str, migrated: None
) -> ClientFactory:
    """Start the API with ``namespace`` as its platform namespace."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Client]:
        client = await aiohttp_client(create_app(settings(testbed_state, namespace, **overrides)))
        try:
            yield client
        finally:
            await client.close()  # here, not at the test's end: a test may start another

    return start


def bearer(testbed: Testbed, user: str, groups: list[str] | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {testbed.user_token(user, groups or [])}"}


async def test_a_client_over_its_limit_gets_429_with_headers_while_another_is_unaffected(
    api: ClientFactory, kubectl: Kubectl, namespace: str, testbed: Testbed
) -> None:
    apply(
        kubectl, manifest(namespace, "limits", rule("per-user", 3, match={"paths": [RULES_PATH]}))
    )
    alice, bob = bearer(testbed, f"alice-{uuid.uuid4().hex[:6]}"), bearer(testbed, "bob")
    name = f'"{namespace}/limits/per-user"'
    async with api() as client:
        await in_force(client.app, namespace, "limits")
        answers = [await client.get(RULES_PATH, headers=alice) for _ in range(3)]
        assert [r.status for r in answers] == [200, 200, 200]
        assert {r.headers["RateLimit-Policy"] for r in answers} == {f"{name};q=3;w=60"}
        assert [r.headers["RateLimit"] for r in answers] == [
            f"{name};r=2;t=20",
            f"{name};r=1;t=40",
            f"{name};r=0;t=60",
        ]

        over = await client.get(RULES_PATH, headers=alice)
        problem = await over.json()
        assert over.status == 429
        assert over.content_type == "application/problem+json"
        assert problem["type"] == "https://dockyard.io/problems/too-many-requests"
        assert "per-user" in problem["detail"]
        assert 1 <= int(over.headers["Retry-After"]) <= 20
        assert over.headers["RateLimit"] == f"{name};r=0;t=60"
        assert over.headers["RateLimit-Policy"] == f"{name};q=3;w=60"

        other = await client.get(RULES_PATH, headers=bob)
        assert other.status == 200
        assert other.headers["RateLimit"] == f"{name};r=2;t=20"
        # Routes the rule does not match carry no limit.
        assert "RateLimit" not in (await client.get("/api/v1/openapi.json")).headers

        labels = {"policy": f"{namespace}/limits", "rule": "per-user"}
        assert metric(client.app, "dockyard_api_ratelimit_decisions_total",
                      {**labels, "decision": "throttled"}) == 1  # fmt: skip
        assert metric(client.app, "dockyard_api_ratelimit_decisions_total",
                      {**labels, "decision": "allowed"}) == 4  # fmt: skip


async def test_the_apiservers_audit_batches_are_never_refused_for_their_rate(
    api: ClientFactory, kubectl: Kubectl, namespace: str
) -> None:
    """The apiserver drops a batch it is refused, so a flood of audited writes must not
    push its batches into the budget of callers without credentials (its token is no
    Kubernetes token)."""
    apply(kubectl, manifest(namespace, "anonymous", rule("per-ip", 5, key="ClientIP")))
    token = "sink-" + uuid.uuid4().hex
    empty = {"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": []}
    async with api(audit_sink_token=token) as client:
        await in_force(client.app, namespace, "anonymous")
        sink = "/api/v1/audit/kubernetes"
        answers = [
            await client.post(sink, json=empty, headers={"Authorization": f"Bearer {token}"})
            for _ in range(12)
        ]
        assert [a.status for a in answers] == [200] * 12
        # Anyone else posting there is limited like every caller without credentials.
        wrong = [
            await client.post(sink, json=empty, headers={"Authorization": "Bearer guess"})
            for _ in range(6)
        ]
        assert [a.status for a in wrong] == [401] * 5 + [429]


async def test_the_shipped_defaults_limit_callers_without_credentials_per_address(
    api: ClientFactory, kubectl: Kubectl, namespace: str, testbed: Testbed
) -> None:
    defaults = list(
        yaml.safe_load_all((ROOT / "manifests" / "ratelimit-defaults.yaml").read_text())
    )
    for policy in defaults:
        policy["metadata"]["namespace"] = namespace
    apply(kubectl, *defaults)
    async with api() as client:
        for policy in defaults:
            await in_force(client.app, namespace, policy["metadata"]["name"])
        carol = bearer(testbed, "carol")
        assert (await client.get(RULES_PATH, headers=carol)).status == 200
        # Counted before authentication: no token, and made-up tokens, share the budget
        # of 60 (plus the one a second that refills while the loop runs).
        started = time.monotonic()
        statuses = [(await client.get(RULES_PATH)).status for _ in range(40)]
        statuses += [
            (await client.get(RULES_PATH, headers={"Authorization": f"Bearer bogus-{i}"})).status
            for i in range(40)
        ]
        allowed = statuses.index(429)
        assert set(statuses[:allowed]) == {401}
        assert 60 <= allowed <= 60 + int(time.monotonic() - started) + 1
        refused = await client.get(RULES_PATH)
        assert refused.status == 429
        assert refused.headers["RateLimit-Policy"] == (
            f'"{namespace}/per-ip-unauthenticated/per-ip";q=60;w=60'
        )
        # A new made-up token is reviewed (the per-address review cap is separate), then
        # counted as a caller without credentials: that budget is spent.
        bogus = await client.get(RULES_PATH, headers={"Authorization": "Bearer bogus-late"})
        assert bogus.status == 429
        # Authenticated callers have their own budget; probes are never limited.
        me = await client.get(RULES_PATH, headers=carol)
        assert me.status == 200
        assert me.headers["RateLimit-Policy"] == f'"{namespace}/per-subject/per-subject";q=600;w=60'
        assert (await client.get("/healthz")).status == 200
        assert "RateLimit" not in (await client.get("/healthz")).headers


async def test_shadow_mode_counts_and_never_rejects(
    api: ClientFactory, kubectl: Kubectl, namespace: str, testbed: Testbed
) -> None:
    apply(kubectl, manifest(namespace, "trial", rule("tight", 2), mode="Shadow"))
    alice = bearer(testbed, "alice")
    async with api() as client:
        await in_force(client.app, namespace, "trial")
        answers = [await client.get(RULES_PATH, headers=alice) for _ in range(6)]
        assert [r.status for r in answers] == [200] * 6
        assert all("RateLimit" not in r.headers for r in answers)
        labels = {"policy": f"{namespace}/trial", "rule": "tight"}
        assert metric(client.app, "dockyard_api_ratelimit_decisions_total",
                      {**labels, "decision": "shadow"}) == 4  # fmt: skip


async def test_a_policy_edit_takes_effect_without_a_restart(
    api: ClientFactory, kubectl: Kubectl, namespace: str, testbed: Testbed
) -> None:
    apply(kubectl, manifest(namespace, "limits", rule("per-user", 100)))
    alice = bearer(testbed, "alice")
    async with api() as client:
        await in_force(client.app, namespace, "limits")
        first = await client.get(RULES_PATH, headers=alice)
        assert first.headers["RateLimit-Policy"].endswith(";q=100;w=60")

        apply(kubectl, manifest(namespace, "limits", rule("per-user", 2, "hour")))

        async def policy_header() -> str:
            response = await client.get(RULES_PATH, headers=alice)
            return response.headers.get("RateLimit-Policy", "")

        for _ in range(100):
            if (header := await policy_header()).endswith(";q=2;w=3600"):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the edit never took effect; last header {header!r}")
        statuses = [(await client.get(RULES_PATH, headers=alice)).status for _ in range(3)]
        assert 429 in statuses
        labels = {"policy": f"{namespace}/limits", "rule": "per-user", "decision": "throttled"}
        series = "dockyard_api_ratelimit_decisions_total"
        registry = client.app[keys.METRICS].registry
        assert registry.get_sample_value(series, labels) is not None

        kubectl("delete", "rlp", "limits", "-n", namespace)
        for _ in range(100):
            response = await client.get(RULES_PATH, headers=alice)
            if response.status == 200 and "RateLimit" not in response.headers:
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the deleted policy is still enforced")
        # Its rule's series go with it: tenants' policies come and go.
        assert registry.get_sample_value(series, labels) is None


async def test_overlapping_policies_must_all_pass_and_tenants_only_limit_their_namespace(
    api: ClientFactory, kubectl: Kubectl, namespace: str, testbed: Testbed, roles: None
) -> None:
    tenant, other = f"{namespace}-a", f"{namespace}-b"
    user = f"dana-{uuid.uuid4().hex[:6]}"
    for ns in (tenant, other):
        kubectl("create", "namespace", ns)
        kubectl("create", "rolebinding", "view", "--clusterrole=dockyard-viewer",
                f"--user={user}", "-n", ns)  # fmt: skip
    try:
        apply(
            kubectl,
            manifest(namespace, "platform", rule("wide", 5)),
            manifest(tenant, "tenant", rule("narrow", 2, match={"methods": ["GET"]})),
        )
        headers = bearer(testbed, user)
        async with api() as client:
            await in_force(client.app, namespace, "platform")
            await in_force(client.app, tenant, "tenant")
            about_tenant = f"/api/v1/namespaces/{tenant}/environments"
            about_other = f"/api/v1/namespaces/{other}/environments"

            first = await client.get(about_tenant, headers=headers)
            assert first.status == 200
            # Both rules count the request; the more restrictive is reported first.
            assert first.headers["RateLimit"] == (
                f'"{tenant}/tenant/narrow";r=1;t=30, "{namespace}/platform/wide";r=4;t=12'
            )
            # The attack: learn a namespace's policies without a token, or without rights
            # there. Such callers are told how much, not what (and have buckets of their own).
            stranger = bearer(testbed, f"eve-{uuid.uuid4().hex[:6]}")
            for answer in [
                await client.get(about_tenant),
                await client.get(about_tenant, headers=stranger),
            ]:
                assert answer.status in (401, 403)
                assert answer.headers["RateLimit-Policy"] == (
                    f'"{tenant}/limit-1";q=2;w=60, "{namespace}/platform/wide";q=5;w=60'
                )
                assert "narrow" not in answer.headers["RateLimit"]
            assert (await client.get(about_tenant, headers=headers)).status == 200
            refused = await client.get(about_tenant, headers=headers)
            assert refused.status == 429
            # Written before authentication: the alias, and where the name is.
            detail = (await refused.json())["detail"]
            assert f"limit {tenant}/limit-1 " in detail
            assert f"kubectl get ratelimitpolicies -n {tenant}" in detail
            assert "narrow" not in detail
            assert f'"{tenant}/limit-1";r=0' in refused.headers["RateLimit"]

            # The tenant's policy does not reach requests about another namespace, and the
            # refused request took nothing from the platform rule: 3 of its 5 remain.
            answers = [await client.get(about_other, headers=headers) for _ in range(4)]
            assert [r.status for r in answers] == [200, 200, 200, 429]
            assert answers[0].headers["RateLimit"] == f'"{namespace}/platform/wide";r=2;t=36'
    finally:
        for ns in (tenant, other):
            kubectl("delete", "namespace", ns, "--wait=false", check=False)


async def test_status_shows_accepted_and_the_throttles_of_every_replica(
    api: ClientFactory, kubectl: Kubectl, namespace: str, testbed: Testbed
) -> None:
    apply(
        kubectl,
        manifest(
            namespace,
            "limits",
            rule("per-user", 1),
            rule("never", 5, match={"paths": ["/api/v1/namespaces/{namespace}/environments"]}),
        ),
        manifest(namespace, "typo", rule("r", 5, match={"paths": ["/api/v1/environment"]})),
    )
    alice = bearer(testbed, "alice")
    async with api() as one, api() as two:
        for client in (one, two):
            await in_force(client.app, namespace, "limits")
        assert (await one.get(RULES_PATH, headers=alice)).status == 200
        assert (await one.get(RULES_PATH, headers=alice)).status == 429
        assert (await two.get(RULES_PATH, headers=alice)).status == 429

        def throttled() -> dict[str, Any] | None:
            status = get_json(kubectl, "rlp", "limits", "-n", namespace).get("status") or {}
            assert isinstance(status, dict)
            counts = {t["rule"]: t["count"] for t in status.get("throttled", [])}
            return status if counts.get("per-user") == 2 else None

        status = await eventually(throttled)
        (accepted,) = status["conditions"]
        assert (accepted["type"], accepted["status"], accepted["reason"]) == (
            "Accepted", "True", "RulesInForce",
        )  # fmt: skip
        assert status["rules"] == 2
        assert status["observedGeneration"] == 1
        assert status["throttled"][0]["lastThrottleTime"]

        def typo() -> list[dict[str, Any]] | None:
            status = get_json(kubectl, "rlp", "typo", "-n", namespace).get("status") or {}
            assert isinstance(status, dict)
            return status.get("conditions")

        (condition,) = await eventually(typo)
        assert condition["status"] == "False"
        assert "is not a route of the API" in condition["message"]
        table = kubectl("get", "rlp", "-n", namespace).stdout.split("\n")
        assert table[0].split() == ["NAME", "MODE", "RULES", "ACCEPTED", "AGE"]
        assert table[1].split()[:4] == ["limits", "Enforce", "2", "True"]
