"""Start, inspect and stop the test bed, and the state file that remembers it.

``up`` starts the components in dependency order, each from its own module:
``postgres``, ``redis``, ``seaweedfs`` (S3), the control plane (``controlplane``: etcd,
kube-apiserver, kube-controller-manager, kube-scheduler) with its ``oidc`` issuer, and
the ``nodes``
(kwok's fake nodes and the ``runner-pods`` stand-in kubelet). Every process binds
127.0.0.1 on a free port and runs from one temporary directory; the state file records
each one (see ``processes.ProcessRecord``) so ``down``, or an ``up`` cleaning after a
crash, stops exactly what was started.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import secrets
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dockyard.testbed import (
    build,
    controlplane,
    nodes,
    oidc,
    postgres,
    redis,
    seaweedfs,
    versions,
)
from dockyard.testbed.config import TestbedConfig
from dockyard.testbed.nodes import RUNNER_PODS
from dockyard.testbed.pki import CertificateAuthority
from dockyard.testbed.processes import (
    Launcher,
    ProcessRecord,
    TestbedError,
    free_port,
    stop,
)

__all__ = [
    "RUNNER_PODS",
    "ProcessRecord",
    "State",
    "Testbed",
    "TestbedConfig",
    "TestbedError",
    "free_port",
]


@dataclass
class State:
    """What ``up`` started, written to the state file and read by every other command."""

    directory: str
    bin_dir: str
    kubeconfig: str
    apiserver_url: str
    oidc_issuer: str
    database_url: str
    redis_url: str
    kubernetes_version: str = versions.KUBERNETES
    # The apiserver's audit webhook: it posts to an API on this port, with this token.
    audit_sink_port: int = 0
    audit_sink_token: str = ""
    # SeaweedFS's S3 gateway: https on loopback, one access key, our CA's bundle.
    s3_endpoint: str = ""
    s3_access_key_id: str = ""
    s3_secret_access_key: str = ""
    s3_ca_bundle: str = ""
    processes: list[ProcessRecord] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> State | None:
        try:
            raw = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        raw["processes"] = [ProcessRecord(**p) for p in raw.get("processes", [])]
        return cls(**raw)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    def healthy(self) -> bool:
        return bool(self.processes) and all(p.alive() for p in self.processes)

    @property
    def managed_postgres_url(self) -> str:
        """The same server's superuser, on its maintenance database: it hosts environments."""
        return self.database_url.rsplit("/", 1)[0] + "/postgres"

    def env(self) -> dict[str, str]:
        """The variables that point Dockyard and kubectl at this test bed."""
        return {
            "KUBECONFIG": self.kubeconfig,
            "DOCKYARD_KUBECONFIG": self.kubeconfig,
            "DOCKYARD_DATABASE_URL": self.database_url,
            "DOCKYARD_REDIS_URL": self.redis_url,
            "DOCKYARD_MANAGED_POSTGRES_URL": self.managed_postgres_url,
            # Webhook receivers of tests and `make dev` listen on this machine, over http.
            "DOCKYARD_WEBHOOK_ALLOW_HTTP": "true",
            "DOCKYARD_WEBHOOK_ALLOWED_NETWORKS": '["127.0.0.0/8", "::1/128"]',
            "DOCKYARD_AUDIT_SINK_TOKEN": self.audit_sink_token,
            # The test bed's S3 (SeaweedFS) for tests and `make dev`: where, with which
            # key, and the CA its certificate is signed by. The operator itself reads
            # none of these; a Backup names its endpoint, Secret and CA bundle.
            "DOCKYARD_TESTBED_S3_ENDPOINT": self.s3_endpoint,
            "DOCKYARD_TESTBED_S3_ACCESS_KEY_ID": self.s3_access_key_id,
            "DOCKYARD_TESTBED_S3_SECRET_ACCESS_KEY": self.s3_secret_access_key,
            "DOCKYARD_TESTBED_S3_CA_BUNDLE": self.s3_ca_bundle,
        }

    def env_exports(self) -> str:
        """Shell exports of :meth:`env`, and a PATH with kubectl and the rest of the test
        bed's binaries, then the directory of this ``dockyard`` (the venv's ``bin``, where
        the interpreter is), so that ``dockyard testbed user`` works after the ``eval``."""
        lines = [f"export {key}={shlex.quote(value)}" for key, value in self.env().items()]
        scripts = str(Path(sys.executable).absolute().parent)
        lines.append(f'export PATH={shlex.quote(self.bin_dir)}:{shlex.quote(scripts)}:"$PATH"')
        return "\n".join(lines)


class Testbed:
    """The test bed's lifecycle: ``up``, ``down``, ``status``, ``env`` and user tokens."""

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(
        self, config: TestbedConfig | None = None, progress: build.Progress | None = None
    ) -> None:
        self.config = config or TestbedConfig()
        self.progress = progress or build.default_progress
        self.state_path = self.config.state_path()

    # -- queries -------------------------------------------------------------------------

    def state(self) -> State | None:
        return State.load(self.state_path)

    def running(self) -> State | None:
        state = self.state()
        return state if state is not None and state.healthy() else None

    def require(self) -> State:
        state = self.running()
        if state is None:
            raise TestbedError("the test bed is not up; run 'dockyard testbed up'")
        return state

    def require_state(self) -> State:
        """The state file's test bed, up or with a process down (a fault test's crash)."""
        state = self.state()
        if state is None:
            raise TestbedError("the test bed is not up; run 'dockyard testbed up'")
        return state

    def replace_process(self, record: ProcessRecord) -> None:
        """Record ``record`` in place of the process of the same name (restarted)."""
        with self._locked():
            state = self.require_state()
            state.processes = [record if p.name == record.name else p for p in state.processes]
            state.save(self.state_path)

    def status(self) -> list[tuple[str, int, bool]]:
        state = self.state()
        if state is None:
            return []
        return [(p.name, p.pid, p.alive()) for p in state.processes]

    def user_token(self, name: str, groups: list[str], ttl_seconds: int = 3600) -> str:
        state = self.require()
        return oidc.mint_token(
            Path(state.directory) / "pki", state.oidc_issuer, name, groups, ttl_seconds=ttl_seconds
        )

    # -- lifecycle -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # Two commands (or two test runs) bringing the same test bed up or down at once
        # would each start a control plane and overwrite each other's state file.
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        with self.state_path.with_suffix(".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def up(self) -> tuple[State, bool]:
        """Start the test bed; returns the state and whether it was already up."""
        with self._locked():
            return self._up()

    def _up(self) -> tuple[State, bool]:
        running = self.running()
        if running is not None:
            if not any(p.name == RUNNER_PODS for p in running.processes):
                self.progress(
                    "this test bed predates its runner-pods process: runner Jobs will not run "
                    "until 'dockyard testbed down' and 'dockyard testbed up'"
                )
            return running, True
        if self.state() is not None:
            self.progress("cleaning up what an earlier, crashed test bed left behind")
            self._down()
        binaries = build.ensure_binaries(self.config.cache_dir, self.progress)
        weed = build.ensure_seaweedfs(self.config.cache_dir, self.progress)
        directory = Path(tempfile.mkdtemp(prefix="dockyard-testbed-"))
        directory.chmod(0o755)  # PostgreSQL runs as its own user and must reach its files
        started = time.monotonic()
        launcher = Launcher(self.config, binaries, directory, self.progress)
        try:
            state = _start_all(launcher, weed)
        except BaseException:
            launcher.stop_all()
            shutil.rmtree(directory, ignore_errors=True)
            raise
        state.save(self.state_path)
        self.progress(f"test bed up in {time.monotonic() - started:.1f}s")
        return state, False

    def down(self) -> bool:
        """Stop every process the test bed started and remove its directory."""
        with self._locked():
            return self._down()

    def _down(self) -> bool:
        state = self.state()
        if state is None:
            return False
        stop(state.processes, self.progress)
        shutil.rmtree(state.directory, ignore_errors=True)
        self.state_path.unlink(missing_ok=True)
        return True


def _start_all(launcher: Launcher, weed: Path) -> State:
    """Start every component, each once what it needs is ready; what ``up`` records."""
    ca = CertificateAuthority(launcher.pki)
    ports = {
        name: free_port() for name in ("etcd", "etcd_peer", "apiserver", "oidc", "kwok", "audit")
    }
    # Where the apiserver's audit webhook posts (an API started on that port receives it).
    audit_token = secrets.token_urlsafe(32)
    database_url = postgres.start(launcher)
    redis_url = redis.start(launcher)
    s3 = seaweedfs.start(launcher, ca, weed)
    controlplane.start_etcd(launcher, ports["etcd"], ports["etcd_peer"])
    issuer = oidc.start(launcher, ca, ports["oidc"])
    apiserver_url = f"https://127.0.0.1:{ports['apiserver']}"
    kubeconfigs = controlplane.write_kubeconfigs(launcher, ca, apiserver_url)
    controlplane.start_apiserver(
        launcher,
        ca,
        etcd_port=ports["etcd"],
        port=ports["apiserver"],
        issuer=issuer,
        audit_sink=(ports["audit"], audit_token),
    )
    controlplane.start_controllers(launcher, kubeconfigs)
    nodes.start_kwok(launcher, kubeconfigs["kwok"], ports["kwok"])
    nodes.create_nodes(launcher, kubeconfigs["admin"])
    nodes.start_runner_pods(launcher, kubeconfigs["admin"])
    return State(
        directory=str(launcher.dir),
        bin_dir=str(launcher.bin.bin_dir),
        kubeconfig=str(kubeconfigs["admin"]),
        apiserver_url=apiserver_url,
        oidc_issuer=issuer,
        database_url=database_url,
        redis_url=redis_url,
        processes=launcher.processes,
        audit_sink_port=ports["audit"],
        audit_sink_token=audit_token,
        s3_endpoint=s3.url,
        s3_access_key_id=s3.access_key_id,
        s3_secret_access_key=s3.secret_access_key,
        s3_ca_bundle=s3.ca_bundle,
    )
