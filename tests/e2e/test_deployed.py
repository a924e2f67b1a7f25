"""The API and the operator as a cluster runs them: the built image, in containers (host
network) against the test bed, each with the token of its own ServiceAccount from the
TokenRequest API and the RBAC of ``manifests/``, never the admin kubeconfig. The
development overlay is applied with server-side apply first.

The journeys, through REST and kubectl: an environment becomes Ready, a backup
completes, a drill passes, a production restore is planned, approved by a second
person and switched over, the namespace's event log is replayed, and unauthenticated
callers get 429.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard.testbed.cluster import State, Testbed
from dockyard.testbed.processes import free_port
from tests.conftest import ROOT, Kubectl, token_kubeconfig, wait_for
from tests.e2e.conftest import CONTAINERS, IMAGE, RUNTIME, Podman
from tests.integration.test_backup_operator import (
    PINNED,
    SEED_SQL,
    _key_secret,
    _owner_dsn,
    _run_sql,
    _storage,
)

SYSTEM = "dockyard-system"


@dataclass(frozen=True)
class Deployed:
    api: str
    namespace: str
    backup_root: Path


def _token(kubectl: Kubectl, account: str) -> str:
    return kubectl("create", "token", account, "-n", SYSTEM, "--duration=2h").stdout.strip()


def _container(
    podman: Podman, name: str, env: dict[str, str], mounts: list[Path], *args: str
) -> None:
    podman("rm", "--force", name, check=False)
    volumes = [f"--volume={p}:{p}" for p in mounts]
    environment = [f"--env={k}={v}" for k, v in env.items()]
    podman(
        "run", "--detach", "--name", name, "--network", "host", *RUNTIME, "--read-only",
        "--tmpfs", "/tmp", *volumes, *environment, IMAGE, *args,  # noqa: S108
    )  # fmt: skip


def _http(method: str, url: str, *, token: str | None = None, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None  # not listening (yet)


@pytest.fixture(scope="module")
def deployed(
    podman: Podman,
    kubectl: Kubectl,
    testbed_state: State,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Deployed:
    namespace = f"e2e-{uuid.uuid4().hex[:8]}"
    # A finalizer, not a generator's finally: it runs after a failed set-up's report, which
    # holds the containers' logs (conftest.py), so they are still there to be read.
    request.addfinalizer(lambda: _tear_down(podman, kubectl, namespace))  # noqa: PT021
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    kubectl(
        "apply", "--server-side", "--force-conflicts", "-k",
        str(ROOT / "deploy" / "overlays" / "development"),
    )  # fmt: skip
    secrets = tmp_path_factory.mktemp("serviceaccounts")
    secrets.chmod(0o755)
    api_config = token_kubeconfig(testbed_state, secrets, "api", _token(kubectl, "dockyard-api"))
    operator_config = token_kubeconfig(
        testbed_state, secrets, "operator", _token(kubectl, "dockyard-operator")
    )
    backups = tmp_path_factory.mktemp("backups")
    backups.chmod(0o777)  # the containers write as uid 10001
    ca = Path(testbed_state.directory) / "pki"
    common = {
        "DOCKYARD_DATABASE_URL": testbed_state.database_url,
        "DOCKYARD_REDIS_URL": testbed_state.redis_url,
        "DOCKYARD_NAMESPACE": SYSTEM,
        "DOCKYARD_LOG_LEVEL": "INFO",
    }
    podman(
        "run", "--rm", "--network", "host", *RUNTIME, "--read-only", "--tmpfs", "/tmp",  # noqa: S108
        *[f"--env={k}={v}" for k, v in common.items()], IMAGE, "migrate",
    )  # fmt: skip
    _container(
        podman,
        "dockyard-e2e-operator",
        {
            **common,
            "DOCKYARD_KUBECONFIG": str(operator_config),
            "DOCKYARD_MANAGED_POSTGRES_URL": testbed_state.managed_postgres_url,
            "DOCKYARD_BACKUP_ROOT": str(backups),
            "DOCKYARD_RUNNER_IMAGE": IMAGE,
            "DOCKYARD_RECONCILE_INTERVAL": "3",
            "DOCKYARD_BACKUP_RETRY_DELAY": "1",
            "DOCKYARD_BACKUP_SCHEDULE_INTERVAL": "1",
        },
        [secrets, ca, backups],
        "operator", "--namespace", "e2e-*",
    )  # fmt: skip
    port = free_port()
    _container(
        podman,
        "dockyard-e2e-api",
        {**common, "DOCKYARD_KUBECONFIG": str(api_config), "DOCKYARD_METRICS_PORT": "null"},
        [secrets, ca],
        "api", "--host", "127.0.0.1", "--port", str(port),
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}"
    wait_for(lambda: _http("GET", f"{api}/readyz")[0] == 200, timeout=60)
    kubectl("create", "namespace", namespace)
    return Deployed(api, namespace, backups)


def _tear_down(podman: Podman, kubectl: Kubectl, namespace: str) -> None:
    for name in CONTAINERS:
        podman("rm", "--force", "--time", "10", name, check=False)
    kubectl("delete", "namespace", namespace, "--wait=false", check=False)
    # What the overlay made, but the CRDs (other suites' objects live in them): its
    # limits would throttle, and its volume claim pin, later suites on this test bed.
    rendered = kubectl("kustomize", str(ROOT / "deploy" / "overlays" / "development"))
    kept = [
        o for o in yaml.safe_load_all(rendered.stdout)
        if o and o["kind"] not in ("CustomResourceDefinition", "Namespace")
    ]  # fmt: skip
    kubectl(
        "delete", "--ignore-not-found", "--wait=false", "-f", "-",
        input=yaml.safe_dump_all(kept), check=False,
    )  # fmt: skip


def test_both_run_as_their_own_serviceaccounts(podman: Podman, deployed: Deployed) -> None:
    for name, account in (("api", "dockyard-api"), ("operator", "dockyard-operator")):
        config = podman(
            "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}",
            f"dockyard-e2e-{name}",
        ).stdout  # fmt: skip
        path = next(
            line.split("=", 1)[1]
            for line in config.splitlines()
            if line.startswith("DOCKYARD_KUBECONFIG=")
        )
        user = yaml.safe_load(Path(path).read_text())["users"][0]["user"]
        assert set(user) == {"token"}  # no client certificate: not the admin
        claims = json.loads(_b64(user["token"].split(".")[1]))
        assert claims["sub"] == f"system:serviceaccount:{SYSTEM}:{account}"


def _event_types(url: str, token: str, *, until: str) -> list[str]:
    """The types of the events a stream sends, up to the first of type ``until``."""
    request = urllib.request.Request(url)  # noqa: S310
    request.add_header("Authorization", f"Bearer {token}")
    types: list[str] = []
    deadline = time.monotonic() + 60
    with urllib.request.urlopen(request, timeout=30) as stream:  # noqa: S310
        while until not in types and time.monotonic() < deadline:
            line = stream.readline().decode()
            if line.startswith("event: "):
                types.append(line.removeprefix("event: ").strip())
    return types


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def test_the_main_journeys(
    kubectl: Kubectl, testbed: Testbed, testbed_state: State, deployed: Deployed
) -> None:
    ns, api = deployed.namespace, deployed.api
    alice, bob = f"alice-{uuid.uuid4().hex[:5]}", f"bob-{uuid.uuid4().hex[:5]}"
    for user in (alice, bob):
        kubectl(
            "create", "rolebinding", user, "--clusterrole=dockyard-operator", f"--user={user}",
            "-n", ns,
        )  # fmt: skip
    as_alice, as_bob = testbed.user_token(alice, []), testbed.user_token(bob, [])

    # 1. An environment becomes Ready, created through REST.
    created = _http(
        "POST", f"{api}/api/v1/namespaces/{ns}/environments", token=as_alice,
        body={"metadata": {"name": "shop"}, "spec": {"tier": "development", "image": PINNED,
              "database": {"deletionPolicy": "Delete"}}},
    )  # fmt: skip
    assert created[0] == 201, created

    def phase(kind: str, name: str) -> str | None:
        code, body = _http("GET", f"{api}/api/v1/namespaces/{ns}/{kind}/{name}", token=as_alice)
        return ((body or {}).get("status") or {}).get("phase") if code == 200 else None

    wait_for(lambda: phase("environments", "shop") == "Ready", timeout=120)
    _run_sql(_owner_dsn(kubectl, ns, "shop"), SEED_SQL)

    # 2. A backup completes, applied with kubectl.
    _key_secret(kubectl, ns)
    backup = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": "nightly", "namespace": ns},
        "spec": {
            "environmentRef": {"name": "shop"},
            "storage": _storage(deployed.backup_root, ns),
            "encryption": {"keySecretRef": {"name": "backup-key", "key": "key"}},
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(backup))
    wait_for(lambda: phase("backups", "nightly") in ("Completed", "Failed"), timeout=120)
    assert phase("backups", "nightly") == "Completed"

    # 2b. The same in a runner Job: the test bed's stand-in kubelet runs its pod in the
    # image (podman), as the runner's own ServiceAccount.
    in_job = {**backup, "metadata": {"name": "in-job", "namespace": ns}}
    in_job["spec"] = {**backup["spec"], "runner": "Job"}
    kubectl("apply", "-f", "-", input=json.dumps(in_job))
    wait_for(lambda: phase("backups", "in-job") in ("Completed", "Failed"), timeout=180)
    assert phase("backups", "in-job") == "Completed"
    pods = json.loads(
        kubectl("get", "pods", "-n", ns, "-l", "job-name=backup-in-job-1", "-o", "json").stdout
    )
    [pod] = pods["items"]
    assert pod["metadata"]["annotations"]["testbed.dockyard.io/runtime"] == f"podman {IMAGE}"

    # 3. A drill passes.
    drill = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "RestoreDrill",
        "metadata": {"name": "weekly", "namespace": ns,
                     "annotations": {"dockyard.io/run-now": "e2e"}},
        "spec": {"environmentRef": {"name": "shop"}, "schedule": "@yearly"},
    }  # fmt: skip
    kubectl("apply", "-f", "-", input=json.dumps(drill))

    def drilled() -> str | None:
        _code, body = _http(
            "GET", f"{api}/api/v1/namespaces/{ns}/restoredrills/weekly", token=as_alice
        )
        return (((body or {}).get("status") or {}).get("lastRun") or {}).get("result")

    wait_for(drilled, timeout=180)
    assert drilled() == "Passed"

    # 4. A production restore: planned, approved by a second person, switched over.
    live = _http(
        "POST", f"{api}/api/v1/namespaces/{ns}/environments", token=as_alice,
        body={"metadata": {"name": "live"}, "spec": {"tier": "production", "image": PINNED,
              "replicas": 2, "database": {"deletionPolicy": "Delete"}}},
    )  # fmt: skip
    assert live[0] == 201, live
    wait_for(lambda: phase("environments", "live") == "Ready", timeout=120)
    restore = _http(
        "POST", f"{api}/api/v1/namespaces/{ns}/restores", token=as_alice,
        body={"metadata": {"name": "promote"}, "spec": {
            "source": {"backupRef": {"name": "nightly"}},
            "target": {"environmentRef": {"name": "live"}}}},
    )  # fmt: skip
    assert restore[0] == 201, restore
    wait_for(lambda: phase("restores", "promote") == "AwaitingApproval", timeout=120)
    own = _http("POST", f"{api}/api/v1/namespaces/{ns}/restores/promote/approve", token=as_alice)
    assert own[0] == 403, own
    approved = _http("POST", f"{api}/api/v1/namespaces/{ns}/restores/promote/approve", token=as_bob)
    assert approved[0] == 200, approved
    wait_for(lambda: phase("restores", "promote") in ("Completed", "Failed"), timeout=240)
    _, body = _http("GET", f"{api}/api/v1/namespaces/{ns}/restores/promote", token=as_alice)
    assert body["status"]["phase"] == "Completed", body["status"]
    assert body["status"]["approval"]["approvedBy"] == bob

    # 5. The namespace's event log, replayed from the start: the API reads the
    # namespace's creation time as its own account to show alice this namespace's events.
    replayed = _event_types(f"{api}/api/v1/events?namespace={ns}&lastEventId=0", as_alice,
                            until="restore.completed")  # fmt: skip
    assert {"backup.completed", "drill.passed", "restore.approved"} <= set(replayed), replayed

    # 6. Unauthenticated callers are limited per address (the overlay's default policy).
    codes = [_http("GET", f"{api}/api/v1/namespaces/{ns}/environments")[0] for _ in range(80)]
    assert 401 in codes
    assert codes[-1] == 429
