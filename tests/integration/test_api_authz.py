"""Each shipped role, through the REST API with real tokens: what it may and may not do."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator

import pytest
from aiohttp.test_utils import TestClient

from dockyard.testbed.cluster import Testbed
from tests.conftest import Kubectl, StartApi, wait_for

Bind = Callable[[str, str], None]
Client = TestClient[object, object]

# What /api/v1/me must report per role in a namespace where the role is bound.
READ = ["get", "list", "watch"]
WRITE = ["create", "patch", "delete"]
EXPECTED = {
    # A Webhook's url may carry a token: only the roles that manage webhooks read them.
    "viewer": {
        "environments": READ,
        "restores": READ,
        "ratelimitpolicies": READ,
        "webhooks": [],
    },
    "developer": {
        "environments": READ + WRITE,
        "restores": READ + WRITE,
        "ratelimitpolicies": READ,
        "webhooks": [],
    },
    "operator": {
        "environments": READ + WRITE,
        "restores": [*READ, *WRITE, "approve"],
        "ratelimitpolicies": READ + WRITE,
        "webhooks": READ + WRITE,
    },
}


@pytest.fixture
async def client(start_api: StartApi) -> Client:
    return await start_api(
        authz_cache_ttl=0,
    )


@pytest.fixture
def bind(kubectl: Kubectl, namespace: str, roles: None) -> Iterator[Bind]:
    """``bind(role, user)``: a RoleBinding to ``dockyard-<role>`` in the namespace, or for
    ``admin`` a ClusterRoleBinding, which is deleted after the test."""
    cluster_bindings: list[str] = []

    def bind(role: str, user: str) -> None:
        if role == "admin":
            cluster_bindings.append(f"{user}-admin")
            kubectl("create", "clusterrolebinding", f"{user}-admin",
                    "--clusterrole=dockyard-admin", f"--user={user}")  # fmt: skip
        else:
            kubectl("create", "rolebinding", f"{user}-{role}", f"--clusterrole=dockyard-{role}",
                    f"--user={user}", "-n", namespace)  # fmt: skip

    yield bind
    for name in cluster_bindings:
        kubectl("delete", "clusterrolebinding", name, "--wait=false", check=False)


def _verbs(body: dict[str, object], resource: str, scope: str = "permissions") -> list[str]:
    permissions = body[scope]
    assert isinstance(permissions, list)
    return next(p["verbs"] for p in permissions if p["resource"] == resource)


@pytest.mark.parametrize("role", ["viewer", "developer", "operator"])
async def test_me_reports_exactly_what_the_role_allows(
    role: str, client: Client, testbed: Testbed, bind: Bind, namespace: str
) -> None:
    user = f"{role}-{uuid.uuid4().hex[:6]}"
    bind(role, user)
    token = testbed.user_token(user, ["qa"])
    response = await client.get(
        f"/api/v1/me?namespace={namespace}", headers={"Authorization": f"Bearer {token}"}
    )
    body = await response.json()
    assert response.status == 200, body
    assert body["user"] == user
    assert "qa" in body["groups"]
    for resource, verbs in EXPECTED[role].items():
        assert _verbs(body, resource) == verbs, resource
    assert _verbs(body, "auditevents") == []
    # A RoleBinding grants nothing on a cluster-scoped kind, whatever the role.
    assert _verbs(body, "backupstores", "cluster") == []

    elsewhere = await client.get(
        "/api/v1/me?namespace=kube-system", headers={"Authorization": f"Bearer {token}"}
    )
    assert _verbs(await elsewhere.json(), "environments") == []


@pytest.mark.parametrize(
    ("role", "allowed"),
    [("viewer", False), ("developer", False), ("operator", False), ("admin", True)],
)
async def test_only_admins_may_read_the_audit_trail(
    role: str, allowed: bool, client: Client, testbed: Testbed, bind: Bind
) -> None:
    user = f"{role}-{uuid.uuid4().hex[:6]}"
    bind(role, user)
    token = testbed.user_token(user, [])
    response = await client.get(
        "/api/v1/audit-events?limit=5", headers={"Authorization": f"Bearer {token}"}
    )
    if allowed:
        assert response.status == 200, await response.text()
        assert "items" in await response.json()
    else:
        assert response.status == 403
        assert response.content_type == "application/problem+json"
        problem = await response.json()
        assert problem["type"] == "https://dockyard.io/problems/forbidden"
        assert user in problem["detail"]
        assert problem["requestId"] == response.headers["X-Request-Id"]


async def test_me_reports_the_cluster_scoped_kinds_only_for_a_cluster_wide_grant(
    client: Client, testbed: Testbed, kubectl: Kubectl, bind: Bind, namespace: str
) -> None:
    suffix = uuid.uuid4().hex[:6]
    local, platform = f"local-admin-{suffix}", f"platform-admin-{suffix}"
    kubectl("create", "rolebinding", local, "--clusterrole=dockyard-admin", f"--user={local}",
            "-n", namespace)  # fmt: skip
    bind("admin", platform)
    for user, cluster in ((local, []), (platform, READ + WRITE)):
        token = testbed.user_token(user, [])
        response = await client.get(
            f"/api/v1/me?namespace={namespace}", headers={"Authorization": f"Bearer {token}"}
        )
        body = await response.json()
        assert response.status == 200, body
        assert _verbs(body, "webhooks") == READ + WRITE, user
        assert _verbs(body, "backupstores", "cluster") == cluster, user


async def test_the_builtin_view_role_reads_environments_but_not_webhooks(
    client: Client, testbed: Testbed, kubectl: Kubectl, namespace: str, roles: None
) -> None:
    """``dockyard-viewer`` aggregates into ``view``, which whole teams hold; a Webhook's url
    may carry a token, so ``view`` reads no webhooks, with kubectl or REST."""
    user = f"view-{uuid.uuid4().hex[:6]}"
    kubectl("create", "rolebinding", user, "--clusterrole=view", f"--user={user}",
            "-n", namespace)  # fmt: skip
    token = testbed.user_token(user, [])

    def may(verb: str, resource: str) -> bool:
        args = ("auth", "can-i", verb, f"{resource}.dockyard.io", "-n", namespace)
        return kubectl(*args, token=token, check=False).returncode == 0

    # The aggregation controller folds dockyard-viewer into view shortly after it changed.
    wait_for(lambda: may("list", "environments") and not may("list", "webhooks"), timeout=30)
    headers = {"Authorization": f"Bearer {token}"}
    base = f"/api/v1/namespaces/{namespace}"

    assert (await client.get(f"{base}/environments", headers=headers)).status == 200
    denied = await client.get(f"{base}/webhooks", headers=headers)
    assert denied.status == 403
    assert (await denied.json())["type"] == "https://dockyard.io/problems/forbidden"
    assert not may("get", "webhooks")
    assert not may("watch", "webhooks")


async def test_anonymous_requests_get_401_with_a_challenge(client: Client) -> None:
    response = await client.get("/api/v1/me")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.content_type == "application/problem+json"
    assert (await response.json())["type"] == "https://dockyard.io/problems/unauthorized"


async def test_a_forged_or_expired_token_gets_401(client: Client, testbed: Testbed) -> None:
    expired = testbed.user_token("erin", [], ttl_seconds=-60)
    for token in ("forged", expired):
        response = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status == 401
        assert "invalid or has expired" in (await response.json())["detail"]


async def test_a_user_without_bindings_may_do_nothing(
    client: Client, testbed: Testbed, namespace: str
) -> None:
    token = testbed.user_token(f"nobody-{uuid.uuid4().hex[:6]}", [])
    response = await client.get(
        f"/api/v1/me?namespace={namespace}", headers={"Authorization": f"Bearer {token}"}
    )
    body = await response.json()
    assert response.status == 200
    assert all(p["verbs"] == [] for p in body["permissions"])


@pytest.mark.usefixtures("crds_installed")
async def test_no_role_writes_a_status_or_runs_as_a_backup_runner(
    testbed: Testbed, kubectl: Kubectl, bind: Bind, namespace: str
) -> None:
    """Statuses are the operator's and the runners': a Backup's ``status.verified`` decides
    what retention keeps and what ``latestVerified`` restores. No shipped role writes one,
    ``dockyard-admin`` bound in the namespace included, nor makes runner Jobs."""
    suffix = uuid.uuid4().hex[:6]
    users = {role: f"{role}-{suffix}" for role in ("viewer", "developer", "operator", "admin")}
    for role, user in users.items():
        if role == "admin":  # a namespace's admin: the role bound by a RoleBinding
            kubectl("create", "rolebinding", user, "--clusterrole=dockyard-admin",
                    f"--user={user}", "-n", namespace)  # fmt: skip
        else:
            bind(role, user)

    def may(user: str, verb: str, resource: str, subresource: str = "") -> bool:
        args = ["auth", "can-i", verb, f"{resource}.dockyard.io", "-n", namespace, f"--as={user}"]
        if subresource:
            args.append(f"--subresource={subresource}")
        return kubectl(*args, check=False).stdout.strip() == "yes"

    admin = users["admin"]
    # The admin keeps every right the role table gives it ...
    wait_for(lambda: may(admin, "approve", "restores"), timeout=30)
    for verb, resource in (("create", "webhooks"), ("delete", "restoredrills"),
                           ("destroy", "backups"), ("patch", "ratelimitpolicies")):  # fmt: skip
        assert may(admin, verb, resource), (verb, resource)
    # ... and no role writes a status or may run as a Backup's runner account.
    for user in users.values():
        for resource in ("backups", "restores", "environments", "restoredrills"):
            for verb in ("patch", "update"):
                assert not may(user, verb, resource, "status"), (user, verb, resource)
        assert not may(user, "create", "backups", "runner"), user

    # The attack itself: the namespace's admin marks an unverified Backup verified.
    backup = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": "unverified", "namespace": namespace},
        "spec": {"environmentRef": {"name": "shop"}},
    }
    kubectl("create", "-f", "-", input=json.dumps(backup))
    verified = {"drill": "nightly", "at": "2026-12-01T00:00:00Z"}
    forged = json.dumps({"status": {"phase": "Completed", "verified": verified}})
    attempt = kubectl("patch", "backup", "unverified", "-n", namespace, "--subresource=status",
                      "--type=merge", "-p", forged, token=testbed.user_token(admin, []),
                      check=False)  # fmt: skip
    assert attempt.returncode != 0
    assert "forbidden" in attempt.stderr.lower(), attempt.stderr
    stored = kubectl("get", "backup", "unverified", "-n", namespace, "-o", "json").stdout
    assert "verified" not in (json.loads(stored).get("status") or {})
