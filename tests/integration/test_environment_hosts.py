"""A host is one environment's, and within the domains its namespace may publish.

The attacks: a developer, who may write Environments in their own namespace, names as
its ingress host one that another team already publishes, or one outside what their
namespace was given (the platform's own). The operator would make the Ingress, and the
ingress controller would send that host's traffic to the developer's pods.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from dockyard.testbed.cluster import Testbed
from tests.conftest import SESSION_ID, Kubectl, wait_for

pytestmark = pytest.mark.usefixtures("operator_process")

IMAGE = "registry.example.com/shop/api:1.4.2"
DOMAINS = "dockyard.io/ingress-domains"


def _apply(kubectl: Kubectl, namespace: str, name: str, host: str) -> None:
    manifest = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Environment",
        "metadata": {"name": name},
        "spec": {
            "tier": "development",
            "image": IMAGE,
            "database": {"enabled": False},
            "ingress": {"host": host},
        },
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def _get(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    return dict(json.loads(result.stdout))


def _host_condition(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    status = (_get(kubectl, namespace, "environment", name) or {}).get("status") or {}
    conditions = status.get("conditions") or ()
    return next((c for c in conditions if c["type"] == "HostAdmitted"), {})


def _wait_host(kubectl: Kubectl, namespace: str, name: str, reason: str) -> dict[str, Any]:
    def decided() -> dict[str, Any] | None:
        condition = _host_condition(kubectl, namespace, name)
        return condition if condition.get("reason") == reason else None

    found = wait_for(decided, timeout=60)
    assert isinstance(found, dict)
    return found


def _url(kubectl: Kubectl, namespace: str, name: str) -> str:
    env = _get(kubectl, namespace, "environment", name) or {}
    return str((env.get("status") or {}).get("url"))


def _warnings(kubectl: Kubectl, namespace: str, reason: str) -> list[str]:
    events = json.loads(
        kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"reason={reason}", "-o", "json"
        ).stdout
    )
    return [e["message"] for e in events["items"] if e.get("type") == "Warning"]


@pytest.fixture
def rival(kubectl: Kubectl) -> Iterator[str]:
    """A second namespace the session's operator watches: another team's."""
    name = f"t-rival-{SESSION_ID}-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "environments", "--all", "-n", name, "--timeout=60s", check=False)
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_a_host_another_environment_publishes_cannot_be_taken(
    kubectl: Kubectl, namespace: str, rival: str
) -> None:
    host = f"shop-{uuid.uuid4().hex[:8]}.example.com"  # its own: hosts are cluster-wide
    _apply(kubectl, namespace, "shop", host)
    _wait_host(kubectl, namespace, "shop", "Admitted")
    assert _get(kubectl, namespace, "ingress", "shop") is not None

    _apply(kubectl, rival, "thief", host)

    taken = _wait_host(kubectl, rival, "thief", "HostTaken")
    assert taken["status"] == "False"
    assert "published by an environment in another namespace" in taken["message"]
    assert namespace not in taken["message"]  # another tenant's names stay theirs
    assert _get(kubectl, rival, "ingress", "thief") is None
    assert _url(kubectl, rival, "thief") == f"http://thief.{rival}.svc:8080"
    wait_for(lambda: any(host in m for m in _warnings(kubectl, rival, "HostTaken")), timeout=30)
    # The first claim stands.
    assert _host_condition(kubectl, namespace, "shop")["reason"] == "Admitted"
    ingress = _get(kubectl, namespace, "ingress", "shop")
    assert ingress is not None
    assert ingress["spec"]["rules"][0]["host"] == host

    # In the same namespace, the holder is named.
    _apply(kubectl, namespace, "twin", host)
    assert (
        "published by environment shop,"
        in _wait_host(kubectl, namespace, "twin", "HostTaken")["message"]
    )
    kubectl("delete", "environment", "twin", "-n", namespace, "--timeout=60s")

    # Once the first environment lets the host go, the next one that asked has it.
    kubectl("delete", "environment", "shop", "-n", namespace, "--timeout=60s")
    _wait_host(kubectl, rival, "thief", "Admitted")
    ingress = wait_for(lambda: _get(kubectl, rival, "ingress", "thief"), timeout=30)
    assert isinstance(ingress, dict)
    assert ingress["spec"]["rules"][0]["host"] == host
    assert _url(kubectl, rival, "thief") == f"http://{host}"


def test_a_namespace_publishes_only_hosts_within_its_domains(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl("annotate", "namespace", namespace, f"{DOMAINS}=*.team-a.example.com, a.example.org")
    _apply(kubectl, namespace, "spy", "api.platform.example.com")

    refused = _wait_host(kubectl, namespace, "spy", "HostNotAllowed")
    assert refused["status"] == "False"
    assert "*.team-a.example.com, a.example.org" in refused["message"]
    assert DOMAINS in refused["message"]
    assert _get(kubectl, namespace, "ingress", "spy") is None
    assert _url(kubectl, namespace, "spy") == f"http://spy.{namespace}.svc:8080"
    wait_for(lambda: _warnings(kubectl, namespace, "HostNotAllowed"), timeout=30)

    allowed = f"{namespace}.team-a.example.com"
    _apply(kubectl, namespace, "spy", allowed)
    _wait_host(kubectl, namespace, "spy", "Admitted")
    ingress = wait_for(lambda: _get(kubectl, namespace, "ingress", "spy"), timeout=30)
    assert isinstance(ingress, dict)
    assert ingress["spec"]["rules"][0]["host"] == allowed


@pytest.mark.usefixtures("roles")
def test_a_developer_cannot_grant_their_namespace_domains(
    kubectl: Kubectl, namespace: str, testbed: Testbed
) -> None:
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
    token = testbed.user_token(user, [])
    assert kubectl("auth", "can-i", "create", "environments.dockyard.io", "-n", namespace,
                   token=token, check=False).returncode == 0  # fmt: skip
    granted = kubectl("annotate", "namespace", namespace, f"{DOMAINS}=*", token=token, check=False)
    assert granted.returncode != 0
    assert "forbidden" in granted.stderr.lower()
