"""The operator reconciles Environments on the real control plane and PostgreSQL: children,
database, status, drift repair, suspend, ttl, and the Retain and Delete deletion policies
(Snapshot: test_environment_final_snapshot)."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from dockyard.testbed.cluster import State
from tests.conftest import SESSION_ID, Kubectl, start_operator, stop_operator, wait_for

pytestmark = pytest.mark.usefixtures("operator_process")

PINNED = "registry.example.com/shop/api:1.4.2"
CHILD_KINDS = "serviceaccount,service,deployment,networkpolicy,poddisruptionbudget,ingress,secret"
NO_DATABASE = {"enabled": False}


def _manifest(name: str, **spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": name},
            "spec": {"tier": "development", "image": PINNED, **spec},
        }
    )


def _apply(kubectl: Kubectl, namespace: str, name: str, **spec: Any) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=_manifest(name, **spec))


def _get(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    return dict(json.loads(result.stdout))


def _require(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any]:
    found = _get(kubectl, namespace, kind, name)
    assert found is not None, f"{kind} {name} does not exist"
    return found


def _status(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    env = _get(kubectl, namespace, "environment", name)
    return dict((env or {}).get("status") or {})


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", ()) if c["type"] == kind), {})


def _wait_phase(
    kubectl: Kubectl, namespace: str, name: str, phase: str, timeout: float = 90
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        status = _status(kubectl, namespace, name)
        return status if status.get("phase") == phase else None

    found = wait_for(reached, timeout=timeout)
    assert isinstance(found, dict)
    return found


def _wait_gone(kubectl: Kubectl, namespace: str, kind: str, name: str, timeout: float = 60) -> None:
    wait_for(lambda: _get(kubectl, namespace, kind, name) is None, timeout=timeout)


def _event_messages(kubectl: Kubectl, namespace: str, reason: str) -> list[str]:
    events = json.loads(
        kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"reason={reason}", "-o", "json"
        ).stdout
    )
    return [str(event.get("message", "")) for event in events["items"]]


def _wait_event(kubectl: Kubectl, namespace: str, reason: str, text: str) -> None:
    """Wait for an Event with ``reason`` whose message contains ``text`` (Kopf posts them
    in the background, so they may trail the change they report)."""
    wait_for(
        lambda: any(text in m for m in _event_messages(kubectl, namespace, reason)), timeout=30
    )


def _fetch(dsn: str, query: str, *args: object) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(dsn)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def _database_exists(state: State, name: str) -> bool:
    rows = _fetch(state.managed_postgres_url, "SELECT 1 FROM pg_database WHERE datname = $1", name)
    return bool(rows)


def _role_exists(state: State, name: str) -> bool:
    rows = _fetch(state.managed_postgres_url, "SELECT 1 FROM pg_roles WHERE rolname = $1", name)
    return bool(rows)


def _drop(state: State, name: str) -> None:
    """Remove a database and role a test left behind on purpose (deletionPolicy Retain)."""

    async def run() -> None:
        conn = await asyncpg.connect(state.managed_postgres_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'DROP ROLE IF EXISTS "{name}"')
        finally:
            await conn.close()

    asyncio.run(run())


def _ready_database_name(kubectl: Kubectl, namespace: str, name: str) -> str:
    status = _wait_phase(kubectl, namespace, name, "Ready")
    assert status["database"]["ready"] is True
    return str(status["database"]["name"])


# -- becoming ready ----------------------------------------------------------------------


def test_an_environment_becomes_ready_with_its_deployment_available(
    kubectl: Kubectl, namespace: str
) -> None:
    _apply(kubectl, namespace, "shop", tier="staging", database={"deletionPolicy": "Delete"})

    status = _wait_phase(kubectl, namespace, "shop", "Ready")

    deployment = _get(kubectl, namespace, "deployment", "shop")
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 2  # the staging default
    available = _condition(deployment["status"], "Available")
    assert available["status"] == "True"
    assert status["replicas"] == {"desired": 2, "ready": 2, "available": 2}
    assert status["url"] == f"http://shop.{namespace}.svc:8080"
    assert status["database"]["secretName"] == "shop-database"
    assert status["observedGeneration"] == 1
    for kind in ("Ready", "DatabaseReady", "WorkloadAvailable"):
        assert _condition(status, kind)["status"] == "True", kind
    header, row = kubectl("get", "env", "shop", "-n", namespace).stdout.splitlines()
    assert header.split() == ["NAME", "TIER", "PHASE", "READY", "REPLICAS", "URL", "AGE"]
    assert row.split()[:6] == ["shop", "staging", "Ready", "True", "2", status["url"]]


def test_every_child_is_labelled_and_owned_by_its_environment(
    kubectl: Kubectl, namespace: str
) -> None:
    _apply(
        kubectl,
        namespace,
        "shop",
        tier="production",
        ingress={"host": f"shop.{namespace}.example.com"},
        database={"deletionPolicy": "Delete"},
    )
    _wait_phase(kubectl, namespace, "shop", "Ready")
    env = _get(kubectl, namespace, "environment", "shop")
    assert env is not None

    children = json.loads(
        kubectl(
            "get",
            CHILD_KINDS,
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/instance=shop",
            "-o",
            "json",
        ).stdout
    )["items"]

    assert sorted(child["kind"] for child in children) == [
        "Deployment",
        "Ingress",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "ServiceAccount",
    ]
    for child in children:
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "dockyard", child["kind"]
        assert labels["app.kubernetes.io/part-of"] == "dockyard", child["kind"]
        assert labels["app.kubernetes.io/name"] == "shop", child["kind"]
        assert labels["dockyard.io/tier"] == "production", child["kind"]
        [owner] = child["metadata"]["ownerReferences"]
        assert owner["uid"] == env["metadata"]["uid"], child["kind"]
        assert (owner["kind"], owner["controller"], owner["blockOwnerDeletion"]) == (
            "Environment",
            True,
            True,
        )


def test_the_secret_holds_credentials_that_reach_the_environments_database(
    kubectl: Kubectl, namespace: str
) -> None:
    _apply(kubectl, namespace, "shop", database={"deletionPolicy": "Delete"})
    database = _ready_database_name(kubectl, namespace, "shop")

    secret = _get(kubectl, namespace, "secret", "shop-database")
    assert secret is not None
    data = {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}
    assert set(data) == {"host", "port", "database", "username", "password", "uri"}

    rows = _fetch(data["uri"], "SELECT current_database() AS db, current_user AS role")
    assert (rows[0]["db"], rows[0]["role"]) == (database, data["username"])
    deployment = _require(kubectl, namespace, "deployment", "shop")
    container_env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert container_env[0] == {
        "name": "DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "shop-database", "key": "uri"}},
    }


def test_disabling_the_database_locks_its_role_out_and_keeps_its_data(
    kubectl: Kubectl, namespace: str, testbed_state: State
) -> None:
    """The Secret goes, and the password it held works nowhere any more; enabling the
    database again gives a new password to the same data."""
    _apply(kubectl, namespace, "shop", database={"deletionPolicy": "Delete"})
    database = _ready_database_name(kubectl, namespace, "shop")
    secret = _require(kubectl, namespace, "secret", "shop-database")
    uri = base64.b64decode(secret["data"]["uri"]).decode()
    _fetch(uri, "CREATE TABLE kept (id int)")

    _apply(kubectl, namespace, "shop", database={"enabled": False, "deletionPolicy": "Delete"})
    _wait_gone(kubectl, namespace, "secret", "shop-database")
    wait_for(lambda: "database" not in _status(kubectl, namespace, "shop"))

    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        _fetch(uri, "SELECT 1")
    assert _database_exists(testbed_state, database)

    _apply(kubectl, namespace, "shop", database={"deletionPolicy": "Delete"})
    wait_for(lambda: (_status(kubectl, namespace, "shop").get("database") or {}).get("ready"))
    assert _ready_database_name(kubectl, namespace, "shop") == database
    secret = _require(kubectl, namespace, "secret", "shop-database")
    again = base64.b64decode(secret["data"]["uri"]).decode()
    assert again != uri
    assert _fetch(again, "SELECT to_regclass('kept') IS NOT NULL AS kept")[0]["kept"]


@pytest.mark.parametrize(("policy", "kept"), [("Delete", False), ("Snapshot", True)])
def test_a_disabled_database_goes_as_its_deletion_policy_says(
    kubectl: Kubectl, namespace: str, testbed_state: State, policy: str, kept: bool
) -> None:
    """A disabled database keeps its data; deleting its environment let the finalizer go
    at once, leaving the data behind unannounced whatever the policy. Delete drops it;
    Snapshot cannot take one with the role locked out, so it keeps it and says so."""
    _apply(kubectl, namespace, "shop", database={"deletionPolicy": policy})
    database = _ready_database_name(kubectl, namespace, "shop")
    _apply(kubectl, namespace, "shop", database={"enabled": False, "deletionPolicy": policy})
    wait_for(lambda: "database" not in _status(kubectl, namespace, "shop"))
    try:
        kubectl("delete", "environment", "shop", "-n", namespace, "--timeout=90s")

        assert _database_exists(testbed_state, database) is kept
        assert _role_exists(testbed_state, database) is kept
        if kept:
            _wait_event(kubectl, namespace, "DatabaseRetained", "no final snapshot can be taken")
        else:
            _wait_event(kubectl, namespace, "DatabaseDropped", f"{database} dropped")
    finally:
        _drop(testbed_state, database)


# -- drift -------------------------------------------------------------------------------


def test_a_deleted_service_is_restored(kubectl: Kubectl, namespace: str) -> None:
    _apply(kubectl, namespace, "shop", database=NO_DATABASE)
    _wait_phase(kubectl, namespace, "shop", "Ready")
    original = _get(kubectl, namespace, "service", "shop")
    assert original is not None

    kubectl("delete", "service", "shop", "-n", namespace)

    def recreated() -> dict[str, Any] | None:
        service = _get(kubectl, namespace, "service", "shop")
        fresh = service and service["metadata"]["uid"] != original["metadata"]["uid"]
        return service if fresh else None

    service = wait_for(recreated, timeout=30)
    assert isinstance(service, dict)
    assert service["spec"]["ports"][0]["port"] == 8080
    _wait_event(kubectl, namespace, "DriftRepaired", "Service shop recreated")


def test_a_hand_edited_deployment_is_reverted(kubectl: Kubectl, namespace: str) -> None:
    _apply(kubectl, namespace, "shop", database=NO_DATABASE)
    _wait_phase(kubectl, namespace, "shop", "Ready")

    kubectl("scale", "deployment", "shop", "-n", namespace, "--replicas=4")
    kubectl("set", "image", "deployment/shop", "-n", namespace, "app=evil/miner:latest")

    def reverted() -> bool:
        deployment = _get(kubectl, namespace, "deployment", "shop") or {}
        spec = deployment.get("spec", {})
        image = spec.get("template", {}).get("spec", {}).get("containers", [{}])[0].get("image")
        return spec.get("replicas") == 1 and image == PINNED

    wait_for(reverted, timeout=30)
    _wait_event(kubectl, namespace, "DriftRepaired", "Deployment shop reverted")
    _wait_phase(kubectl, namespace, "shop", "Ready")


# -- spec changes ------------------------------------------------------------------------


def test_suspend_scales_to_zero_and_resume_scales_back(kubectl: Kubectl, namespace: str) -> None:
    _apply(kubectl, namespace, "shop", replicas=2, database=NO_DATABASE)
    _wait_phase(kubectl, namespace, "shop", "Ready")

    kubectl(
        "patch", "env", "shop", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":true}}'
    )

    status = _wait_phase(kubectl, namespace, "shop", "Suspended")
    assert _require(kubectl, namespace, "deployment", "shop")["spec"]["replicas"] == 0
    assert status["replicas"]["desired"] == 0
    assert _condition(status, "Ready")["reason"] == "Suspended"

    kubectl(
        "patch", "env", "shop", "-n", namespace, "--type=merge", "-p", '{"spec":{"suspend":false}}'
    )

    status = _wait_phase(kubectl, namespace, "shop", "Ready")
    assert status["replicas"] == {"desired": 2, "ready": 2, "available": 2}


def test_only_production_gets_a_disruption_budget(kubectl: Kubectl, namespace: str) -> None:
    _apply(kubectl, namespace, "prod", tier="production", database=NO_DATABASE)
    _apply(kubectl, namespace, "stage", tier="staging", database=NO_DATABASE)
    _wait_phase(kubectl, namespace, "prod", "Ready")
    _wait_phase(kubectl, namespace, "stage", "Ready")

    names = kubectl("get", "pdb", "-n", namespace, "-o", "name").stdout.split()

    assert names == ["poddisruptionbudget.policy/prod"]
    pdb = _get(kubectl, namespace, "pdb", "prod")
    assert pdb is not None
    assert pdb["spec"]["maxUnavailable"] == 1


def test_an_ingress_exists_only_while_a_host_is_set(kubectl: Kubectl, namespace: str) -> None:
    _apply(kubectl, namespace, "shop", database=NO_DATABASE)
    status = _wait_phase(kubectl, namespace, "shop", "Ready")
    assert _get(kubectl, namespace, "ingress", "shop") is None
    assert status["url"] == f"http://shop.{namespace}.svc:8080"

    # A host of the test's own: a host is one environment's in the whole cluster.
    host = f"shop.{namespace}.example.com"
    _apply(
        kubectl,
        namespace,
        "shop",
        database=NO_DATABASE,
        ingress={"host": host, "tlsSecretName": "shop-tls"},
    )
    ingress = wait_for(lambda: _get(kubectl, namespace, "ingress", "shop"), timeout=30)
    assert isinstance(ingress, dict)
    assert ingress["spec"]["rules"][0]["host"] == host
    assert ingress["spec"]["tls"] == [{"hosts": [host], "secretName": "shop-tls"}]
    wait_for(lambda: _status(kubectl, namespace, "shop").get("url") == f"https://{host}")
    assert _condition(_status(kubectl, namespace, "shop"), "HostAdmitted")["reason"] == "Admitted"

    _apply(kubectl, namespace, "shop", database=NO_DATABASE)

    _wait_gone(kubectl, namespace, "ingress", "shop", timeout=30)
    wait_for(
        lambda: (
            _status(kubectl, namespace, "shop").get("url") == f"http://shop.{namespace}.svc:8080"
        )
    )


def test_an_expired_ttl_deletes_the_environment(kubectl: Kubectl, namespace: str) -> None:
    _apply(kubectl, namespace, "preview", ttl="5s", database=NO_DATABASE)
    env = _get(kubectl, namespace, "environment", "preview")
    assert env is not None

    # 5 s of ttl, a 3 s timer and the finalizer: well within 30 s.
    _wait_gone(kubectl, namespace, "environment", "preview", timeout=30)

    _wait_event(kubectl, namespace, "Expired", "ttl 5s passed")


def test_a_ttl_deletion_is_in_the_audit_trail_with_the_database_deletion_policy(
    kubectl: Kubectl, namespace: str, testbed_state: State
) -> None:
    _apply(kubectl, namespace, "preview", ttl="5s", database={"deletionPolicy": "Delete"})

    _wait_gone(kubectl, namespace, "environment", "preview", timeout=60)

    # The operator's decision, with its reason: the ttl, and what became of the data.
    [audited] = _fetch(
        testbed_state.database_url,
        "SELECT actor, action, diff::text FROM audit_events WHERE source = 'operator'"
        " AND namespace = $1 AND name = $2",
        namespace,
        "preview",
    )
    assert audited["action"] == "DELETE environments (ttl)"
    assert audited["actor"]  # the operator's identity, from its SelfSubjectReview
    diff = json.loads(audited["diff"])
    assert (diff["ttl"], diff["deletionPolicy"]) == ("5s", "Delete")
    assert "ttl 5s passed" in diff["reason"]
    assert "deletionPolicy is Delete" in diff["reason"]


def test_expires_at_is_the_creation_time_plus_the_ttl(kubectl: Kubectl, namespace: str) -> None:
    _apply(kubectl, namespace, "preview", ttl="72h", database=NO_DATABASE)

    status = wait_for(lambda: _status(kubectl, namespace, "preview").get("expiresAt"))
    created = _require(kubectl, namespace, "environment", "preview")["metadata"][
        "creationTimestamp"
    ]

    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    assert parse(str(status)) == parse(created) + timedelta(hours=72)


# -- deletion policies -------------------------------------------------------------------


def test_retain_keeps_the_database(kubectl: Kubectl, namespace: str, testbed_state: State) -> None:
    _apply(kubectl, namespace, "shop", database={"deletionPolicy": "Retain"})
    database = _ready_database_name(kubectl, namespace, "shop")
    try:
        kubectl("delete", "env", "shop", "-n", namespace, "--wait=false")
        _wait_gone(kubectl, namespace, "environment", "shop")

        assert _database_exists(testbed_state, database)
        assert _role_exists(testbed_state, database)
        _wait_event(kubectl, namespace, "DatabaseRetained", database)
    finally:
        _drop(testbed_state, database)


def test_delete_drops_the_database_and_its_role(
    kubectl: Kubectl, namespace: str, testbed_state: State
) -> None:
    _apply(kubectl, namespace, "shop", database={"deletionPolicy": "Delete"})
    database = _ready_database_name(kubectl, namespace, "shop")
    assert _database_exists(testbed_state, database)

    kubectl("delete", "env", "shop", "-n", namespace, "--wait=false")
    _wait_gone(kubectl, namespace, "environment", "shop")

    assert not _database_exists(testbed_state, database)
    assert not _role_exists(testbed_state, database)
    _wait_event(kubectl, namespace, "DatabaseDropped", database)


def test_a_namespace_made_again_under_its_name_is_not_given_the_retained_database(
    kubectl: Kubectl, testbed_state: State
) -> None:
    """The attack: a team's environment keeps its database (Retain, the default) when its
    namespace is deleted; the name goes to another team, whose Environment of the same
    name would be handed the data, or could drop it with deletionPolicy Delete."""
    reused = f"t-reused-{SESSION_ID}-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", reused)
    database = ""
    try:
        _apply(kubectl, reused, "shop", database={"deletionPolicy": "Retain"})
        database = _ready_database_name(kubectl, reused, "shop")
        kubectl("delete", "env", "shop", "-n", reused, "--timeout=60s")
        kubectl("delete", "namespace", reused, "--timeout=120s")
        kubectl("create", "namespace", reused)

        _apply(kubectl, reused, "shop", database={"deletionPolicy": "Delete"})

        def refused() -> dict[str, Any] | None:
            status = _get(kubectl, reused, "environment", "shop") or {}
            condition = _condition(status.get("status") or {}, "DatabaseReady")
            return condition if condition.get("reason") == "DatabaseTaken" else None

        condition = wait_for(refused, timeout=60)
        assert isinstance(condition, dict)
        assert condition["status"] == "False"
        assert "earlier namespace" in condition["message"]
        assert _get(kubectl, reused, "secret", "shop-database") is None
        kubectl("delete", "env", "shop", "-n", reused, "--wait=false")
        _wait_gone(kubectl, reused, "environment", "shop")
        _wait_event(kubectl, reused, "DatabaseRetained", "earlier namespace")
        assert _database_exists(testbed_state, database)
        assert _role_exists(testbed_state, database)
    finally:
        kubectl("delete", "environments", "--all", "-n", reused, "--timeout=60s", check=False)
        kubectl("delete", "namespace", reused, "--wait=false", check=False)
        if database:
            _drop(testbed_state, database)


# -- an unreachable database server ------------------------------------------------------


@pytest.fixture
def unreachable_operator(
    kubectl: Kubectl, unwatched_namespace: str, testbed_env: dict[str, str], tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """An operator whose managed PostgreSQL server is a closed port, watching one namespace."""
    env = {
        **testbed_env,
        "DOCKYARD_MANAGED_POSTGRES_URL": "postgresql://postgres@127.0.0.1:1/postgres",
        "DOCKYARD_RECONCILE_INTERVAL": "3",
    }
    proc = start_operator(unwatched_namespace, env, tmp_path / "operator.log")
    yield proc
    # Its environments go while it runs, or their finalizer would hold the namespace.
    kubectl(
        "delete", "environments", "--all", "-n", unwatched_namespace, "--timeout=60s", check=False
    )
    stop_operator(proc)


def test_an_unreachable_database_server_is_reported_and_the_operator_keeps_running(
    kubectl: Kubectl, unwatched_namespace: str, unreachable_operator: subprocess.Popen[bytes]
) -> None:
    _apply(kubectl, unwatched_namespace, "shop")

    def unreachable() -> dict[str, Any] | None:
        status = _status(kubectl, unwatched_namespace, "shop")
        return status if _condition(status, "DatabaseReady").get("status") == "False" else None

    status = wait_for(unreachable, timeout=60)
    assert isinstance(status, dict)
    database = _condition(status, "DatabaseReady")
    assert database["reason"] == "ServerUnreachable"
    assert "127.0.0.1:1" in database["message"]
    assert status["phase"] == "Pending"
    assert _condition(status, "Ready")["reason"] == "DatabaseNotReady"
    # The workload is deployed regardless; it waits for its Secret.
    assert _get(kubectl, unwatched_namespace, "deployment", "shop") is not None

    time.sleep(6)  # a few retries later
    assert unreachable_operator.poll() is None
    assert _condition(_status(kubectl, unwatched_namespace, "shop"), "DatabaseReady")["reason"] == (
        "ServerUnreachable"
    )

    # deletionPolicy Retain (the default) lets the environment go while the server is away.
    kubectl("delete", "env", "shop", "-n", unwatched_namespace, "--timeout=60s")


# -- Secrets an environment may read ------------------------------------------------------


def test_an_environment_cannot_read_another_environments_database_secret(
    kubectl: Kubectl, namespace: str
) -> None:
    """The attack: a developer, who may not read Secrets, writes a development
    environment whose variable takes production's database password, to read it from
    the pod the operator makes."""
    _apply(kubectl, namespace, "prod", database={"deletionPolicy": "Delete"})
    _ready_database_name(kubectl, namespace, "prod")
    kubectl("create", "secret", "generic", "api-token", "-n", namespace,
            "--from-literal=token=t0ken")  # fmt: skip
    own = {"secretKeyRef": {"name": "spy-database", "key": "password"}}
    tenants = {"secretKeyRef": {"name": "api-token", "key": "token"}}
    stolen = {"secretKeyRef": {"name": "prod-database", "key": "password"}}
    env = [
        {"name": "OWN", "valueFrom": own},
        {"name": "TOKEN", "valueFrom": tenants},
        {"name": "STOLEN", "valueFrom": stolen},
    ]
    _apply(kubectl, namespace, "spy", database={"deletionPolicy": "Delete"}, env=env)

    status = _wait_phase(kubectl, namespace, "spy", "Failed")

    ready = _condition(status, "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert ready["message"].startswith(
        "spec.env[2].valueFrom.secretKeyRef.name: Secret prod-database"
    )
    assert _get(kubectl, namespace, "deployment", "spy") is None

    # Without the stolen variable, its own database Secret and the tenant's are fine.
    _apply(kubectl, namespace, "spy", database={"deletionPolicy": "Delete"}, env=env[:2])
    _wait_phase(kubectl, namespace, "spy", "Ready")
    names = [
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in _require(kubectl, namespace, "deployment", "spy")["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
        if "valueFrom" in e
    ]
    assert "prod-database" not in names
    assert {"spy-database", "api-token"} <= set(names)


def _ci_token(kubectl: Kubectl, namespace: str) -> None:
    """The ServiceAccount ``ci`` of ``namespace`` and its token Secret ``ci-token``."""
    kubectl("create", "serviceaccount", "ci", "-n", namespace)
    token_secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {
            "name": "ci-token",
            "namespace": namespace,
            "annotations": {"kubernetes.io/service-account.name": "ci"},
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(token_secret))


def test_an_environment_cannot_take_a_service_account_token(
    kubectl: Kubectl, namespace: str
) -> None:
    """The attack: a developer names a ServiceAccount token Secret of their namespace (a
    CI account's, which may do more than they may) in a variable, to act as that account
    from the pod the operator makes."""
    _ci_token(kubectl, namespace)
    env = [{"name": "CI", "valueFrom": {"secretKeyRef": {"name": "ci-token", "key": "token"}}}]
    _apply(kubectl, namespace, "borrower", database=NO_DATABASE, env=env)

    status = _wait_phase(kubectl, namespace, "borrower", "Failed")

    ready = _condition(status, "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert ready["message"].startswith(
        "spec.env[0].valueFrom.secretKeyRef.name: Secret ci-token is a ServiceAccount token"
    )
    assert _get(kubectl, namespace, "deployment", "borrower") is None


def test_a_secret_that_becomes_a_service_account_token_takes_the_pods_with_it(
    kubectl: Kubectl, namespace: str
) -> None:
    """The same attack, later: name a Secret that does not exist yet (allowed: the pod
    waits for it), and have it made a ServiceAccount token afterwards (an administrator's
    CI convention, say). The Deployment made while it was absent must not start a pod
    that reads it."""
    env = [{"name": "CI", "valueFrom": {"secretKeyRef": {"name": "ci-token", "key": "token"}}}]
    _apply(kubectl, namespace, "patient", database=NO_DATABASE, env=env)
    wait_for(lambda: _get(kubectl, namespace, "deployment", "patient"), timeout=60)

    _ci_token(kubectl, namespace)

    wait_for(lambda: _get(kubectl, namespace, "deployment", "patient") is None, timeout=60)
    ready = _condition(_wait_phase(kubectl, namespace, "patient", "Failed"), "Ready")
    assert ready["reason"] == "InvalidSpec"
    assert "Secret ci-token is a ServiceAccount token" in ready["message"]
    assert "its Deployment is deleted until then" in ready["message"]


def test_an_environment_cannot_name_a_database_secret_before_dockyard_makes_it(
    kubectl: Kubectl, namespace: str
) -> None:
    """The same attack, earlier: name ``later-database`` before the environment ``later``
    exists, so that the pod reads it once Dockyard makes it. A missing Secret of any other
    name is left to Kubernetes (the pod waits for it)."""
    waits = {"secretKeyRef": {"name": "not-yet-made", "key": "token"}}
    early = {"secretKeyRef": {"name": "later-database", "key": "password"}}
    env = [{"name": "WAITS", "valueFrom": waits}, {"name": "EARLY", "valueFrom": early}]
    _apply(kubectl, namespace, "early", database=NO_DATABASE, env=env)

    status = _wait_phase(kubectl, namespace, "early", "Failed")

    message = _condition(status, "Ready")["message"]
    assert message.startswith("spec.env[1].valueFrom.secretKeyRef.name: Secret later-database")
    assert "does not exist" in message
    assert _get(kubectl, namespace, "deployment", "early") is None

    _apply(kubectl, namespace, "early", database=NO_DATABASE, env=env[:1])
    deployment = wait_for(lambda: _get(kubectl, namespace, "deployment", "early"), timeout=60)
    assert isinstance(deployment, dict)
