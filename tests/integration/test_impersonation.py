"""Writes made as the caller: the apiserver's own RBAC and audit log see the real user."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dockyard.core.kube import Impersonation, KubeClient, KubeConfig, KubeError
from dockyard.testbed.cluster import State
from tests.conftest import ROOT, Kubectl, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")


@pytest.fixture
async def kube(testbed_state: State) -> AsyncIterator[KubeClient]:
    client = KubeClient.connect(KubeConfig.from_kubeconfig(Path(testbed_state.kubeconfig)))
    yield client
    await client.close()


def _environment(name: str) -> dict[str, object]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": name},
        "spec": {"tier": "development", "image": "shop:1.0"},
    }


async def test_a_write_as_a_developer_is_allowed_and_audited_under_their_name(
    kube: KubeClient, kubectl: Kubectl, namespace: str, testbed_state: State
) -> None:
    kubectl("apply", "-f", str(ROOT / "manifests" / "rbac-roles.yaml"))
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
    path = f"/apis/dockyard.io/v1alpha1/namespaces/{namespace}/environments"
    # A new RoleBinding reaches the authorizer's cache within moments; wait for it.
    wait_for(
        lambda: (
            kubectl(
                "auth",
                "can-i",
                "create",
                "environments.dockyard.io",
                "-n",
                namespace,
                f"--as={user}",
                check=False,
            ).stdout.strip()
            == "yes"
        ),
        timeout=15,
    )
    created = await kube.create(path, _environment("shop"), as_user=Impersonation(user, ["qa"]))
    assert created["metadata"]["name"] == "shop"

    audit = Path(testbed_state.directory) / "logs" / "audit.log"
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    mine = [
        e
        for e in entries
        if e.get("objectRef", {}).get("namespace") == namespace and e["verb"] == "create"
    ]
    assert mine, "the apiserver audited no create in the namespace"
    assert mine[-1]["impersonatedUser"]["username"] == user
    assert "qa" in mine[-1]["impersonatedUser"]["groups"]


async def test_a_write_as_a_viewer_is_refused_by_the_apiserver(
    kube: KubeClient, kubectl: Kubectl, namespace: str
) -> None:
    kubectl("apply", "-f", str(ROOT / "manifests" / "rbac-roles.yaml"))
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
    path = f"/apis/dockyard.io/v1alpha1/namespaces/{namespace}/environments"
    with pytest.raises(KubeError) as refused:
        await kube.create(path, _environment("shop"), as_user=Impersonation(user))
    assert refused.value.status == 403
    assert user in refused.value.message
