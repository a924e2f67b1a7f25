"""Session fixtures: the real test bed (control plane, PostgreSQL, Redis), started once.

Integration tests ask for ``testbed``; the first one to do so starts it (building the
control plane on a cold machine) and the run stops it at the end, once every
pytest-xdist worker is done, unless it was already up before the run (``make dev``
beside the tests) or DOCKYARD_TESTBED_KEEP=1. The workers take turns on it: see
``pytest_runtest_protocol`` and the ``alone`` marker.

API tests start the app with ``start_api`` (settings from ``api_settings``), served by
pytest-aiohttp's ``aiohttp_client``, which closes it after the test.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from dockyard.api.app import create_app
from dockyard.core import migrations
from dockyard.core.settings import Settings
from dockyard.testbed import processes
from dockyard.testbed.cluster import State, Testbed
from dockyard.testbed.processes import free_port

ROOT = Path(__file__).resolve().parent.parent

Kubectl = Callable[..., subprocess.CompletedProcess[str]]
ApiClient = TestClient[web.Request, web.Application]

# Several sessions may share one test bed; each names its namespaces with its own id and
# its operator watches only those, so no session reconciles another's objects.
SESSION_ID = uuid.uuid4().hex[:6]
SESSION_NAMESPACES = f"t-*-{SESSION_ID}-*"
PLATFORM_NAMESPACE = "dockyard-system"
OPERATOR_ACCOUNT = "dockyard-operator"

# What the workers of one run share: the turnstile's lock files, and whether the run
# started the test bed (then the controller stops it at the end, after every worker).
RUN_DIRECTORY = "DOCKYARD_TEST_RUN"
STARTED_MARK = "testbed-started"


# The session operator's log, shown beside any failure of a test that used it: what the
# operator did (or did not do) is what such a failure is about.
OPERATOR_LOGS: list[Path] = []
OPERATOR_LOG_TAIL = 60


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.failed and "operator_process" in getattr(item, "fixturenames", ()):
        for log in OPERATOR_LOGS:
            if log.exists():
                lines = log.read_text(errors="replace").splitlines()[-OPERATOR_LOG_TAIL:]
                report.sections.append(("operator log (tail)", "\n".join(lines)))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts:
            item.add_marker(pytest.mark.integration)
        elif "e2e" in parts:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def testbed() -> Testbed:
    bed = Testbed()
    _, already = bed.up()  # under the test bed's own lock: one worker starts it
    if not already:
        (_run_directory() / STARTED_MARK).touch()
    return bed


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "alone: needs the test bed to itself (it stops a shared process, or its timing is "
        "the point); no other test runs meanwhile",
    )
    # A test bed process a test restarted is this process's child; when a test of the
    # other worker kills it, only this process can reap it, even while it waits its turn.
    threading.Thread(target=_reaper, name="testbed-reaper", daemon=True).start()
    if not hasattr(config, "workerinput"):  # the controller (or a run without workers)
        # Shared with the workers, which inherit the environment when they start.
        os.environ.setdefault(RUN_DIRECTORY, tempfile.mkdtemp(prefix="dockyard-tests-"))


@pytest.hookimpl(wrapper=True, trylast=True)
def pytest_runtestloop(session: pytest.Session) -> Iterator[object]:
    """Stop the test bed once every worker is done, when this run started it.

    Inside pytest-cov's own wrapper of the loop (``trylast``): the test bed's processes
    that run this checkout's code (the OIDC issuer, the runner pods) write their
    coverage data as they stop, and pytest-cov combines it right after this returns.
    Stopped later, in ``pytest_sessionfinish``, their data was left behind in stray
    ``.coverage.*`` files."""
    try:
        return (yield)
    finally:
        if not hasattr(session.config, "workerinput") and RUN_DIRECTORY in os.environ:
            run = _run_directory()
            if (run / STARTED_MARK).exists() and os.environ.get("DOCKYARD_TESTBED_KEEP") != "1":
                Testbed().down()
            shutil.rmtree(run, ignore_errors=True)


def _reaper() -> None:
    while True:
        processes.reap()
        time.sleep(0.1)


def _run_directory() -> Path:
    return Path(os.environ[RUN_DIRECTORY])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Integration tests share the test bed, two at a time under pytest-xdist (``make
    test`` runs two workers). One marked ``alone`` waits until the other worker's test is
    done and keeps the next one from starting: a turnstile, whose gate stops newcomers
    while the room empties. The turn spans setup and teardown too, so no fixture (the
    test bed's own start among them) meets a PostgreSQL another test has stopped."""
    if item.get_closest_marker("integration") is None:  # pytest_collection_modifyitems
        yield
        return
    run = _run_directory()
    with (run / "gate.lock").open("a") as gate, (run / "room.lock").open("a") as room:
        fcntl.flock(gate, fcntl.LOCK_EX)
        if item.get_closest_marker("alone") is None:
            fcntl.flock(gate, fcntl.LOCK_UN)
            fcntl.flock(room, fcntl.LOCK_SH)
        else:
            fcntl.flock(room, fcntl.LOCK_EX)
        yield  # the locks go with the files


@pytest.fixture(scope="session")
def testbed_state(testbed: Testbed) -> State:
    return testbed.require()


@pytest.fixture(scope="session")
def platform_dsn(testbed_state: State) -> str:
    return testbed_state.database_url


@pytest.fixture(scope="session")
def testbed_env(testbed_state: State) -> dict[str, str]:
    """The process environment that ``eval "$(dockyard testbed env)"`` would give."""
    env = dict(os.environ)
    env.update(testbed_state.env())
    env["PATH"] = f"{testbed_state.bin_dir}:{env.get('PATH', '')}"
    return env


@pytest.fixture(scope="session")
def kubectl(testbed_state: State, testbed_env: dict[str, str]) -> Kubectl:
    """Run the cached kubectl as the test bed's admin (or with ``token=`` as someone else)."""
    binary = str(Path(testbed_state.bin_dir) / "kubectl")

    def run(
        *args: str, input: str | None = None, token: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [binary, f"--kubeconfig={testbed_state.kubeconfig}"]
        if token is not None:
            # Same cluster and CA, but authenticated by the bearer token alone.
            argv = [
                binary,
                f"--server={testbed_state.apiserver_url}",
                f"--certificate-authority={Path(testbed_state.directory) / 'pki' / 'ca.crt'}",
                f"--token={token}",
            ]
        result = subprocess.run(
            [*argv, *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            env={k: v for k, v in testbed_env.items() if k != "KUBECONFIG"},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    return run


@pytest.fixture(scope="session")
def roles(kubectl: Kubectl) -> None:
    """Dockyard's shipped ClusterRoles (``manifests/rbac-roles.yaml``), for tests that bind
    users to them. Applied server-side: the test workers may apply them at the same
    moment, and a client-side apply's create loses that race with AlreadyExists."""
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(ROOT / "manifests" / "rbac-roles.yaml"),
    )


@pytest.fixture(scope="session")
def approval_policy(kubectl: Kubectl, roles: None) -> None:
    """The restore approval ValidatingAdmissionPolicy and its binding
    (``manifests/restore-approval-policy.yaml``), applied server-side like ``roles``."""
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(ROOT / "manifests" / "restore-approval-policy.yaml"),
    )


@pytest.fixture(scope="session")
def production_guard(kubectl: Kubectl, roles: None) -> None:
    """The policy that takes the destroy verb to destroy production data
    (``manifests/production-guard-policy.yaml``), applied server-side like ``roles``."""
    kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        str(ROOT / "manifests" / "production-guard-policy.yaml"),
    )


@pytest.fixture(scope="session")
def runner_report_policy(kubectl: Kubectl, crds_installed: None) -> None:
    """The policy that limits a Backup runner's status report to its artifact
    (``manifests/backup-runner-report-policy.yaml``), and the one that keeps the runner's
    account to its Job (``backup-runner-account-policy.yaml``): the session's operator
    runs under them, as a deployed one does."""
    for policy in ("backup-runner-report-policy.yaml", "backup-runner-account-policy.yaml"):
        kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "manifests" / policy)
        )


@pytest.fixture(scope="session")
def crds_installed(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl(
        "wait",
        "--for=condition=Established",
        "crd",
        "-l",
        "app.kubernetes.io/part-of=dockyard",
        "--timeout=60s",
    )


@pytest.fixture(scope="session")
def backup_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The operator's DOCKYARD_BACKUP_ROOT: filesystem backup storage must lie under it."""
    return tmp_path_factory.mktemp("backups")


def backup_settings(root: Path) -> dict[str, str]:
    """Operator settings that make backup retries and schedule passes test-sized."""
    return {
        "DOCKYARD_BACKUP_ROOT": str(root),
        "DOCKYARD_BACKUP_RETRY_DELAY": "1",
        "DOCKYARD_BACKUP_SCHEDULE_INTERVAL": "1",
    }


@pytest.fixture(scope="session")
def operator_metrics_port() -> int:
    """Where the session's operator serves ``/metrics`` (on 127.0.0.1)."""
    return free_port()


def token_kubeconfig(state: State, directory: Path, name: str, token: str) -> Path:
    """A kubeconfig holding only ``token``: what a pod's mounted ServiceAccount gives."""
    ca = Path(state.directory) / "pki" / "ca.crt"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "bed",
                "cluster": {"server": state.apiserver_url, "certificate-authority": str(ca)},
            }
        ],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": "bed", "user": name}}],
        "current-context": name,
    }
    path = directory / f"{name}.kubeconfig"
    path.write_text(json.dumps(config))  # JSON is YAML
    path.chmod(0o644)
    return path


@pytest.fixture(scope="session")
def operator_account(
    kubectl: Kubectl, testbed_state: State, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The session's operator logs in as the shipped operator account, as a deployed one
    does: its ClusterRole (``manifests/operator-rbac.yaml``) and the policies that bound
    what it writes (``operator-bounds-policy.yaml``) are applied, so that every test also
    proves that those rights suffice and those bounds let Dockyard's own objects by.
    The variables that point the operator at a kubeconfig holding only its token."""
    for manifest in ("namespace.yaml", "operator-rbac.yaml", "operator-bounds-policy.yaml"):
        kubectl(
            "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "manifests" / manifest)
        )
    token = kubectl(
        "create", "token", OPERATOR_ACCOUNT, "-n", PLATFORM_NAMESPACE, "--duration=12h"
    ).stdout.strip()
    directory = tmp_path_factory.mktemp("operator-account")
    path = str(token_kubeconfig(testbed_state, directory, OPERATOR_ACCOUNT, token))
    return {"KUBECONFIG": path, "DOCKYARD_KUBECONFIG": path}


@pytest.fixture(scope="session")
def operator_process(
    operator_metrics_port: int,
    crds_installed: None,
    runner_report_policy: None,
    operator_account: dict[str, str],
    testbed_env: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
    backup_root: Path,
) -> Iterator[subprocess.Popen[bytes]]:
    """``dockyard operator`` running against the test bed (this session's namespaces)."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    OPERATOR_LOGS.append(log)
    # Drift repair every 3 s instead of 30, and scaling passes every 2 s instead of 10
    # (schedule windows), so tests see them happen; webhook timings likewise.
    env = {
        **testbed_env,
        **operator_account,
        "DOCKYARD_RECONCILE_INTERVAL": "3",
        "DOCKYARD_SCALING_INTERVAL": "2",
        # Webhook retries, breakers and dead letters within a test's patience.
        "DOCKYARD_WEBHOOK_BACKOFF_BASE": "0.5",
        "DOCKYARD_WEBHOOK_BACKOFF_MAX": "2",
        "DOCKYARD_WEBHOOK_BREAKER_OPEN_SECONDS": "3",
        "DOCKYARD_WEBHOOK_DEAD_LETTER_AFTER": "15",
        "DOCKYARD_OPERATOR_METRICS_PORT": str(operator_metrics_port),
        **backup_settings(backup_root),
    }
    proc = start_operator(SESSION_NAMESPACES, env, log)
    time.sleep(0.5)
    if proc.poll() is not None:
        raise AssertionError(f"operator exited at once:\n{log.read_text()}")
    yield proc
    stop_operator(proc)


def start_operator(
    namespaces: str, env: Mapping[str, str], log: Path, *, append: bool = False
) -> subprocess.Popen[bytes]:
    """``dockyard operator --namespace <namespaces>`` (a name or a glob) with ``env``,
    its output in ``log`` (appended to with ``append``, for a restarted one)."""
    # One replica per test: no Lease to stand by for (test_operator_failover.py runs two).
    # No default BackupStore made behind a test's back (test_backup_stores.py asks for it).
    env = {
        "DOCKYARD_OPERATOR_LEADER_ELECTION": "false",
        "DOCKYARD_DEFAULT_BACKUP_STORE": "false",
        # Nor a finalizer on every cluster-wide store by each of the suite's many operators
        # (test_backup_stores.py turns it on where it tests it).
        "DOCKYARD_BACKUP_STORE_GUARD": "false",
        **env,
    }
    with log.open("ab" if append else "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dockyard.cli", "operator", "--namespace", namespaces],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def stop_operator(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as Kubernetes would send; SIGKILL if it does not stop within 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def release_and_stop(
    kubectl: Kubectl, namespace: str, kinds: str, proc: subprocess.Popen[bytes]
) -> None:
    """Delete every object of ``kinds`` in ``namespace`` while the operator ``proc``
    still runs to release their finalizers, then stop it."""
    kubectl("delete", kinds, "--all", "-n", namespace, "--timeout=60s", check=False)
    stop_operator(proc)


@pytest.fixture
def unwatched_namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace no operator of the session watches (not ``t-*-<session>-*``):
    what a test writes there is only stored, its status left as the test writes it."""
    name = f"unwatched-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{slug}-{SESSION_ID}-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", name)
    yield name
    # Environments first, while the operator still runs, so that their finalizer sees
    # them go: Kopf stops watching a namespace (pattern) as soon as it terminates.
    kubectl("delete", "environments", "--all", "-n", name, "--timeout=60s", check=False)
    kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_for(predicate: Callable[[], object], timeout: float = 60, interval: float = 0.5) -> object:
    """Poll until ``predicate`` returns something truthy; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")


def get_json(kubectl: Kubectl, *args: str) -> dict[str, object]:
    return dict(json.loads(kubectl("get", *args, "-o", "json").stdout))


def remove_backup_store(kubectl: Kubectl, name: str) -> None:
    """Delete the BackupStore ``name`` now. An operator that guards stores (the e2e
    suite's, ``make dev``'s, a test of the guard) may have put its finalizer on it; it is
    removed, as an administrator abandoning what Backups still name it would, so that a
    test's cleanup never waits for an operator that may be gone."""
    kubectl("delete", "backupstore", name, "--ignore-not-found", "--wait=false")
    unguarded = json.dumps({"metadata": {"finalizers": None}})
    kubectl("patch", "backupstore", name, "--type=merge", "-p", unguarded, check=False)
    kubectl("wait", "--for=delete", f"backupstore/{name}", "--timeout=30s", check=False)


# -- the API --------------------------------------------------------------------------------


# The apiserver deadlines of the API under test. The test bed shares two cores between
# the apiserver, etcd, PostgreSQL, the operators and two test workers, and a test's
# synchronous fixtures (kubectl) hold its event loop meanwhile, so a fresh TLS
# connection or a review there can take longer than production's 1-2 s: CI saw the odd
# 503 "no answer in time" on a healthy apiserver. A test of the deadlines themselves
# passes ``PRODUCTION_KUBE_DEADLINES``.
TESTBED_KUBE_DEADLINES: dict[str, float] = {
    "kube_connect_timeout": 5.0,
    "kube_review_timeout": 5.0,
    "kube_request_timeout": 10.0,
}
PRODUCTION_KUBE_DEADLINES: dict[str, Any] = {
    name: Settings.model_fields[name].default for name in TESTBED_KUBE_DEADLINES
}


def api_settings(state: State, **overrides: Any) -> Settings:
    """The API's settings against the test bed: its database and apiserver, no metrics
    port, and the test bed's apiserver deadlines (``TESTBED_KUBE_DEADLINES``)."""
    values: dict[str, Any] = {
        "database_url": state.database_url,
        "kubeconfig": Path(state.kubeconfig),
        "metrics_port": None,
        **TESTBED_KUBE_DEADLINES,
    }
    return Settings(**{**values, **overrides})


@pytest.fixture(scope="session")
async def platform_migrated(testbed_state: State) -> None:
    """The platform database at the latest migration (idempotent, as ``dockyard migrate``),
    with the shortest retention floors the suites purge at (30 days of audit events, 7
    of events): ``make dev`` or the e2e suite's migrate may have set the defaults."""
    conn = await asyncpg.connect(api_settings(testbed_state).database_dsn())
    try:
        await migrations.migrate(conn)
        await migrations.set_retention_floors(conn, audit_days=30, event_days=7)
    finally:
        await conn.close()


class StartApi(Protocol):
    async def __call__(self, **settings: Any) -> ApiClient: ...


@pytest.fixture
def start_api(
    aiohttp_client: AiohttpClient, testbed_state: State, platform_migrated: None
) -> StartApi:
    """``await start_api(**settings)``: a client of the API app built with ``api_settings``
    (``settings`` override them), on a migrated platform database."""

    async def start(**settings: Any) -> ApiClient:
        return await aiohttp_client(create_app(api_settings(testbed_state, **settings)))

    return start


@pytest.fixture
async def client(start_api: StartApi) -> ApiClient:
    """A client of the API with the test bed's settings; a module that needs others
    overrides this fixture with its own ``start_api(...)``."""
    return await start_api()
