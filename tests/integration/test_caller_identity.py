"""Calls made for a caller carry the caller's own token: no impersonation anywhere.

The API runs here as a ServiceAccount bound to the shipped ``dockyard:api-server``
ClusterRole (``manifests/api-rbac.yaml``), which holds no ``impersonate``. The
apiserver's own audit log must then name the caller, not the API, as the writer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml
from pytest_aiohttp import AiohttpClient

from dockyard.api.app import create_app
from dockyard.core import migrations
from dockyard.core.kube import CallerToken, KubeClient, KubeConfig, KubeError
from dockyard.core.settings import Settings
from dockyard.testbed.cluster import State, Testbed
from tests.conftest import ROOT, TESTBED_KUBE_DEADLINES, ApiClient, Kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

MakeClient = Callable[..., Any]


def _shipped_api_role() -> str:
    documents = yaml.safe_load_all((ROOT / "manifests" / "api-rbac.yaml").read_text())
    [role] = [d for d in documents if d["kind"] == "ClusterRole"]
    return yaml.safe_dump(role)


@pytest.fixture
def api_kubeconfig(
    kubectl: Kubectl, namespace: str, testbed_state: State, tmp_path: Path, roles: None
) -> Iterator[Path]:
    """A kubeconfig of a ServiceAccount holding exactly the shipped API role."""
    kubectl("apply", "-f", "-", input=_shipped_api_role())
    kubectl("create", "serviceaccount", "dockyard-api", "-n", namespace)
    kubectl(
        "create",
        "clusterrolebinding",
        f"api-{namespace}"[:63],
        "--clusterrole=dockyard:api-server",
        f"--serviceaccount={namespace}:dockyard-api",
    )
    token = kubectl("create", "token", "dockyard-api", "-n", namespace).stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "testbed",
                "cluster": {
                    "server": testbed_state.apiserver_url,
                    "certificate-authority": str(Path(testbed_state.directory) / "pki/ca.crt"),
                },
            }
        ],
        "users": [{"name": "api", "user": {"token": token}}],
        "contexts": [{"name": "api", "context": {"cluster": "testbed", "user": "api"}}],
        "current-context": "api",
    }
    path = tmp_path / "api.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    yield path
    kubectl("delete", "clusterrolebinding", f"api-{namespace}"[:63], check=False)


@pytest.fixture
async def make_client(aiohttp_client: AiohttpClient, testbed_state: State) -> MakeClient:
    async def make(kubeconfig: Path, **overrides: Any) -> ApiClient:
        settings = Settings(
            database_url=testbed_state.database_url,
            kubeconfig=kubeconfig,
            authz_cache_ttl=0,
            metrics_port=None,
            **{**TESTBED_KUBE_DEADLINES, **overrides},
        )
        conn = await asyncpg.connect(settings.database_dsn())
        try:
            await migrations.migrate(conn)
        finally:
            await conn.close()
        return await aiohttp_client(create_app(settings))

    return make


def _bind(kubectl: Kubectl, role: str, user: str, namespace: str) -> None:
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
                "auth", "can-i", "get", "environments.dockyard.io", "-n", namespace,
                f"--as={user}", check=False,
            ).stdout.strip()
            == "yes"
        ),
        timeout=15,
    )  # fmt: skip


def _audited(testbed_state: State, namespace: str, verb: str) -> list[dict[str, Any]]:
    audit = Path(testbed_state.directory) / "logs" / "audit.log"
    entries = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
    return [
        e
        for e in entries
        if e.get("objectRef", {}).get("namespace") == namespace
        and e.get("objectRef", {}).get("resource") == "environments"
        and e["verb"] == verb
        and e.get("stage") == "ResponseComplete"
    ]


ENVIRONMENT = {"metadata": {"name": "shop"}, "spec": {"tier": "development", "image": "shop:1.0"}}


async def test_writes_through_the_api_reach_the_apiserver_as_the_caller_himself(
    make_client: MakeClient,
    api_kubeconfig: Path,
    testbed: Testbed,
    testbed_state: State,
    kubectl: Kubectl,
    namespace: str,
) -> None:
    user = f"dev-{uuid.uuid4().hex[:6]}"
    _bind(kubectl, "developer", user, namespace)
    client = await make_client(api_kubeconfig)
    auth = {"Authorization": f"Bearer {testbed.user_token(user, ['qa'])}"}
    base = f"/api/v1/namespaces/{namespace}/environments"

    created = await client.post(base, json=ENVIRONMENT, headers=auth)
    assert created.status == 201, await created.text()
    patched = await client.patch(
        f"{base}/shop",
        json={"spec": {"image": "shop:1.1"}},
        headers={**auth, "Content-Type": "application/merge-patch+json"},
    )
    assert patched.status == 200, await patched.text()

    for verb in ("create", "patch"):
        # The API's calls: the caller's own, or (before) the API impersonating someone.
        # The session's operator patches the environment too, as itself. A patch may be
        # two calls: one pinned to the cached version, refused (409) when the operator
        # wrote since, then one sent again after a fresh read.
        entries = [
            e
            for e in _audited(testbed_state, namespace, verb)
            if e["user"]["username"] == user or "impersonatedUser" in e
        ]
        assert 1 <= len(entries) <= (1 if verb == "create" else 2), entries
        for entry in entries:
            # The apiserver authenticated the caller's own token: no impersonation, and
            # the identity is the caller's exactly (its groups as the apiserver computed).
            assert "impersonatedUser" not in entry, entry
            assert entry["user"]["username"] == user
            assert set(entry["user"]["groups"]) == {"qa", "system:authenticated"}


async def test_a_caller_without_the_right_is_refused_by_the_apiserver_itself(
    testbed: Testbed, testbed_state: State, kubectl: Kubectl, namespace: str
) -> None:
    user = f"viewer-{uuid.uuid4().hex[:6]}"
    _bind(kubectl, "viewer", user, namespace)
    kube = KubeClient.connect(KubeConfig.from_kubeconfig(Path(testbed_state.kubeconfig)))
    try:
        path = f"/apis/dockyard.io/v1alpha1/namespaces/{namespace}/environments"
        body = {"apiVersion": "dockyard.io/v1alpha1", "kind": "Environment", **ENVIRONMENT}
        caller = CallerToken(testbed.user_token(user, []))
        with pytest.raises(KubeError) as refused:
            # The client's own credentials are the test bed's admin: they must not be sent.
            await kube.create(path, body, as_caller=caller)
        assert refused.value.status == 403
        assert user in refused.value.message
        listed = await kube.get(path, as_caller=caller)  # reads are made as the caller too
        assert listed["items"] == []
    finally:
        await kube.close()


@pytest.mark.usefixtures("api_kubeconfig")
async def test_the_shipped_api_role_holds_no_impersonate(kubectl: Kubectl, namespace: str) -> None:
    account = f"system:serviceaccount:{namespace}:dockyard-api"
    assert kubectl("auth", "can-i", "get", "environments.dockyard.io", f"--as={account}",
                   check=False).stdout.strip() == "yes"  # fmt: skip
    for resource in ("users", "groups", "serviceaccounts", "userextras.authentication.k8s.io",
                     "uids.authentication.k8s.io"):  # fmt: skip
        answer = kubectl(
            "auth", "can-i", "impersonate", resource, f"--as={account}", check=False
        ).stdout.strip()
        assert answer == "no", resource


async def test_tokens_are_reviewed_for_the_configured_audience(
    make_client: MakeClient,
    api_kubeconfig: Path,
    testbed: Testbed,
    kubectl: Kubectl,
    namespace: str,
) -> None:
    user = f"dev-{uuid.uuid4().hex[:6]}"
    _bind(kubectl, "viewer", user, namespace)
    auth = {"Authorization": f"Bearer {testbed.user_token(user, [])}"}
    path = f"/api/v1/namespaces/{namespace}/environments"

    # The test bed's apiserver accepts its user tokens for its own API audience.
    right = await make_client(api_kubeconfig, token_audiences=["https://kubernetes.default.svc"])
    assert (await right.get(path, headers=auth)).status == 200
    wrong = await make_client(api_kubeconfig, token_audiences=["https://elsewhere.example"])
    refused = await wrong.get(path, headers=auth)
    assert refused.status == 401, await refused.text()
