"""Start, inspect and stop the test bed: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok with fake nodes, a stand-in kubelet for runner pods
(``runner_pods``), an OIDC issuer, PostgreSQL and Redis.

Every process binds 127.0.0.1 on a free port and runs from one temporary directory.
The state file records each pid with its kernel start time, so ``down`` (or an ``up``
cleaning after a crash) never signals a recycled pid that belongs to someone else.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from dockyard.testbed import build, oidc, versions
from dockyard.testbed.pki import CertificateAuthority, write_signing_key

ADMIN_USER = "dockyard-testbed-admin"
NODE_ANNOTATION = "kwok.x-k8s.io/node"
RUNNER_PODS = "runner-pods"


class TestbedError(RuntimeError):
    """The test bed could not be started; the message says which component and why."""


class TestbedConfig(BaseSettings):
    """Where the test bed keeps its cache and state (``DOCKYARD_TESTBED_*``)."""

    model_config = SettingsConfigDict(env_prefix="DOCKYARD_TESTBED_", extra="ignore")
    __test__ = False  # not a pytest test class, whatever its name says

    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "dockyard")
    state_file: Path | None = None
    nodes: int = Field(default=2, ge=1, le=50)
    postgres_bin: Path | None = None
    redis_server: str = "redis-server"
    start_timeout: float = Field(default=120.0, gt=0)

    def state_path(self) -> Path:
        return self.state_file or self.cache_dir / "testbed" / "state.json"


@dataclass
class ProcessRecord:
    """One process the test bed started: its pid, and its start time to recognise it."""

    name: str
    pid: int
    started: int
    log: str

    def alive(self) -> bool:
        return _start_time(self.pid) == self.started


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
        }

    def env_exports(self) -> str:
        lines = [f"export {key}={shlex.quote(value)}" for key, value in self.env().items()]
        lines.append(f'export PATH={shlex.quote(self.bin_dir)}:"$PATH"')
        return "\n".join(lines)


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses; fields resume after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_bin(config: TestbedConfig) -> Path:
    if config.postgres_bin:
        return config.postgres_bin
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise TestbedError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql; "
            "run 'make bootstrap' (apt-get install postgresql)"
        )
    return candidates[-1].parent


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
        directory = Path(tempfile.mkdtemp(prefix="dockyard-testbed-"))
        directory.chmod(0o755)  # PostgreSQL runs as its own user and must reach its files
        started = time.monotonic()
        launcher = _Launcher(self.config, binaries, directory, self.progress)
        try:
            state = launcher.start_all()
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
        _stop(state.processes, self.progress)
        shutil.rmtree(state.directory, ignore_errors=True)
        self.state_path.unlink(missing_ok=True)
        return True


def _stop(processes: list[ProcessRecord], progress: build.Progress) -> None:
    # Reverse start order, one at a time: clients go before the servers they talk to, so
    # nothing hangs in its shutdown waiting for a peer that is already gone.
    for record in reversed(processes):
        if not record.alive():
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while record.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if record.alive():
            progress(f"{record.name} (pid {record.pid}) still running after SIGTERM; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGKILL)
    for record in processes:
        # Reap the children of this very process, when it was the one that started them.
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(record.pid, os.WNOHANG)


class _Launcher:
    """Starts the components in dependency order and waits for each to be ready."""

    def __init__(
        self,
        config: TestbedConfig,
        binaries: build.Binaries,
        directory: Path,
        progress: build.Progress,
    ) -> None:
        self.config = config
        self.bin = binaries
        self.dir = directory
        self.progress = progress
        self.processes: list[ProcessRecord] = []
        self.logs = directory / "logs"
        self.logs.mkdir()
        self.pki = directory / "pki"
        self.pki.mkdir()

    # -- processes -------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str], *, user: str | None = None) -> ProcessRecord:
        log_path = self.logs / f"{name}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=user,
                group=user,
                extra_groups=[] if user else None,
                cwd=self.dir,
            )
        started = None
        for _ in range(100):
            started = _start_time(proc.pid)
            if started is not None:
                break
            time.sleep(0.01)
        if started is None:
            raise TestbedError(f"{name} exited at once:\n{self.tail(name)}")
        record = ProcessRecord(name, proc.pid, started, str(log_path))
        self.processes.append(record)
        return record

    def tail(self, name: str, lines: int = 30) -> str:
        try:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, name: str, probe: Any, what: str) -> None:
        deadline = time.monotonic() + self.config.start_timeout
        record = next(p for p in self.processes if p.name == name)
        while time.monotonic() < deadline:
            if not record.alive():
                raise TestbedError(f"{name} exited while starting:\n{self.tail(name)}")
            if probe():
                return
            time.sleep(0.2)
        raise TestbedError(
            f"{name} was not {what} after {self.config.start_timeout:.0f}s:\n{self.tail(name)}"
        )

    def stop_all(self) -> None:
        _stop(self.processes, self.progress)

    # -- the components ------------------------------------------------------------------

    def start_all(self) -> State:
        ca = CertificateAuthority(self.pki)
        ports = {name: free_port() for name in ("etcd", "etcd_peer", "apiserver", "oidc", "kwok")}
        database_url = self.start_postgres()
        redis_url = self.start_redis()
        self.start_etcd(ports["etcd"], ports["etcd_peer"])
        issuer = self.start_oidc(ca, ports["oidc"])
        apiserver_url = f"https://127.0.0.1:{ports['apiserver']}"
        kubeconfigs = self.write_kubeconfigs(ca, apiserver_url)
        self.start_apiserver(ca, ports, issuer, kubeconfigs["admin"])
        self.start_controllers(kubeconfigs, ports["kwok"])
        self.create_nodes(kubeconfigs["admin"])
        self.start_runner_pods(kubeconfigs["admin"])
        return State(
            directory=str(self.dir),
            bin_dir=str(self.bin.bin_dir),
            kubeconfig=str(kubeconfigs["admin"]),
            apiserver_url=apiserver_url,
            oidc_issuer=issuer,
            database_url=database_url,
            redis_url=redis_url,
            processes=self.processes,
        )

    def start_postgres(self) -> str:
        pg_bin = _postgres_bin(self.config)
        home = self.dir / "postgres"
        home.mkdir()
        owner = pwd.getpwnam("postgres")
        os.chown(home, owner.pw_uid, owner.pw_gid)
        password = secrets.token_urlsafe(18)
        pwfile = home / "pwfile"
        pwfile.write_text(password + "\n")
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        pwfile.chmod(0o600)
        self.progress("postgres: initdb")
        result = subprocess.run(
            [
                str(pg_bin / "initdb"),
                "-D",
                str(home / "data"),
                "-U",
                "dockyard",
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            user="postgres",
            group="postgres",
            extra_groups=[],
            capture_output=True,
            text=True,
            check=False,
            cwd=home,
        )
        pwfile.unlink()
        if result.returncode != 0:
            raise TestbedError(f"initdb failed:\n{result.stdout}{result.stderr}")
        port = free_port()
        self.spawn(
            "postgres",
            [
                str(pg_bin / "postgres"),
                "-D",
                str(home / "data"),
                "-p",
                str(port),
                "-k",
                str(home),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
            ],
            user="postgres",
        )
        self.wait_until("postgres", lambda: _accepts(port), "accepting connections")
        # The platform database; the server's superuser also manages environment databases.
        created = subprocess.run(
            [
                str(pg_bin.parent / "bin" / "psql"),
                "-h",
                str(home),
                "-p",
                str(port),
                "-U",
                "dockyard",
                "-d",
                "postgres",
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                "CREATE DATABASE dockyard",
            ],
            user="postgres",
            group="postgres",
            extra_groups=[],
            capture_output=True,
            text=True,
            check=False,
        )
        if created.returncode != 0 and "already exists" not in created.stderr:
            raise TestbedError(f"creating the platform database failed: {created.stderr}")
        return f"postgresql://dockyard:{password}@127.0.0.1:{port}/dockyard"

    def start_redis(self) -> str:
        home = self.dir / "redis"
        home.mkdir()
        server = shutil.which(self.config.redis_server)
        if server is None:
            raise TestbedError(
                "redis-server not found; run 'make bootstrap' (apt-get install redis-server)"
            )
        port = free_port()
        self.spawn(
            "redis",
            [
                server,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(home),
                "--daemonize",
                "no",
            ],
        )
        self.wait_until("redis", lambda: _accepts(port), "accepting connections")
        return f"redis://127.0.0.1:{port}/0"

    def start_etcd(self, port: int, peer: int) -> None:
        client, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
        self.spawn(
            "etcd",
            [
                str(self.bin.path("etcd")),
                "--name",
                "testbed",
                "--data-dir",
                str(self.dir / "etcd"),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer_url,
                "--initial-advertise-peer-urls",
                peer_url,
                "--initial-cluster",
                f"testbed={peer_url}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        self.wait_until("etcd", lambda: _http_ok(f"{client}/health"), "healthy")

    def start_oidc(self, ca: CertificateAuthority, port: int) -> str:
        ca.issue(self.pki, "oidc", common_name="dockyard-testbed-oidc", server=True)
        write_signing_key(self.pki, oidc.SIGNING_KEY.removesuffix(".key"))
        self.spawn(
            "oidc",
            [
                sys.executable,
                "-m",
                "dockyard.testbed.oidc",
                "--dir",
                str(self.pki),
                "--port",
                str(port),
            ],
        )
        issuer = f"https://127.0.0.1:{port}"
        context = ssl.create_default_context(cafile=str(ca.pair.cert))
        self.wait_until(
            "oidc",
            lambda: _http_ok(f"{issuer}/.well-known/openid-configuration", context),
            "serving discovery",
        )
        return issuer

    def write_kubeconfigs(self, ca: CertificateAuthority, server: str) -> dict[str, Path]:
        users = {
            "admin": (ADMIN_USER, ("system:masters",)),
            "controller-manager": ("system:kube-controller-manager", ()),
            "scheduler": ("system:kube-scheduler", ()),
            "kwok": ("dockyard-testbed-kwok", ("system:masters",)),
        }
        paths: dict[str, Path] = {}
        for stem, (user, groups) in users.items():
            pair = ca.issue(self.pki, f"client-{stem}", common_name=user, organizations=groups)
            config = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "dockyard-testbed",
                        "cluster": {
                            "server": server,
                            "certificate-authority": str(ca.pair.cert),
                        },
                    }
                ],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate": str(pair.cert),
                            "client-key": str(pair.key),
                        },
                    }
                ],
                "contexts": [
                    {
                        "name": "dockyard-testbed",
                        "context": {"cluster": "dockyard-testbed", "user": user},
                    }
                ],
                "current-context": "dockyard-testbed",
            }
            path = self.dir / f"{stem}.kubeconfig"
            path.write_text(yaml.safe_dump(config, sort_keys=False))
            path.chmod(0o600)
            paths[stem] = path
        return paths

    def start_apiserver(
        self, ca: CertificateAuthority, ports: dict[str, int], issuer: str, admin: Path
    ) -> None:
        serving = ca.issue(self.pki, "apiserver", common_name="kube-apiserver", server=True)
        sa_key, sa_pub = write_signing_key(self.pki, "service-account")
        authn = self.dir / "authentication.yaml"
        authn.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "apiserver.config.k8s.io/v1",
                    "kind": "AuthenticationConfiguration",
                    "jwt": [
                        {
                            "issuer": {
                                "url": issuer,
                                "audiences": [oidc.AUDIENCE],
                                "certificateAuthority": ca.cert_pem.decode(),
                            },
                            "claimMappings": {
                                "username": {"claim": "sub", "prefix": ""},
                                "groups": {"claim": "groups", "prefix": ""},
                            },
                        }
                    ],
                },
                sort_keys=False,
            )
        )
        audit_policy = self.dir / "audit-policy.yaml"
        audit_policy.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "audit.k8s.io/v1",
                    "kind": "Policy",
                    "omitStages": ["RequestReceived"],
                    "rules": [
                        {"level": "Metadata", "resources": [{"group": "dockyard.io"}]},
                        {"level": "None"},
                    ],
                }
            )
        )
        self.spawn(
            "kube-apiserver",
            [
                str(self.bin.path("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{ports['etcd']}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # Loopback cannot back the kubernetes Service; nothing in-cluster needs it.
                "--endpoint-reconciler-type=none",
                f"--secure-port={ports['apiserver']}",
                f"--tls-cert-file={serving.cert}",
                f"--tls-private-key-file={serving.key}",
                f"--client-ca-file={ca.pair.cert}",
                "--authorization-mode=RBAC",
                f"--authentication-config={authn}",
                "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                "--api-audiences=https://kubernetes.default.svc",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=false",
                "--profiling=false",
                f"--audit-policy-file={audit_policy}",
                f"--audit-log-path={self.logs / 'audit.log'}",
                "--audit-log-maxsize=50",
                "--event-ttl=1h",
                "--max-requests-inflight=800",
                "--max-mutating-requests-inflight=400",
            ],
        )
        context = ssl.create_default_context(cafile=str(ca.pair.cert))
        admin_pair = self.pki / "client-admin"
        context.load_cert_chain(f"{admin_pair}.crt", f"{admin_pair}.key")
        url = f"https://127.0.0.1:{ports['apiserver']}/readyz"
        self.progress("kube-apiserver: waiting for /readyz")
        self.wait_until("kube-apiserver", lambda: _http_ok(url, context), "ready")

    def start_controllers(self, kubeconfigs: dict[str, Path], kwok_port: int) -> None:
        self.spawn(
            "kube-controller-manager",
            [
                str(self.bin.path("kube-controller-manager")),
                f"--kubeconfig={kubeconfigs['controller-manager']}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
                f"--service-account-private-key-file={self.pki / 'service-account.key'}",
                f"--root-ca-file={self.pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={self.pki / 'ca.crt'}",
                f"--cluster-signing-key-file={self.pki / 'ca.key'}",
                "--use-service-account-credentials=true",
                "--kube-api-qps=200",
                "--kube-api-burst=400",
                "--concurrent-deployment-syncs=20",
                "--concurrent-replicaset-syncs=20",
                "--concurrent-job-syncs=20",
            ],
        )
        self.spawn(
            "kube-scheduler",
            [
                str(self.bin.path("kube-scheduler")),
                f"--kubeconfig={kubeconfigs['scheduler']}",
                "--bind-address=127.0.0.1",
                "--secure-port=0",
                "--leader-elect=false",
            ],
        )
        stages = resources.files("dockyard.testbed").joinpath("stages.yaml").read_text()
        stages_path = self.dir / "kwok-stages.yaml"
        stages_path.write_text(stages)
        self.spawn(
            "kwok",
            [
                str(self.bin.path("kwok")),
                f"--kubeconfig={kubeconfigs['kwok']}",
                f"--config={stages_path}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={NODE_ANNOTATION}=fake",
                "--node-lease-duration-seconds=40",
                "--cidr=10.244.0.0/16",
                "--node-ip=10.240.0.1",
                f"--server-address=127.0.0.1:{kwok_port}",
            ],
        )

    def start_runner_pods(self, admin: Path) -> None:
        """The stand-in kubelet that runs runner pods here (kwok runs no containers)."""
        self.spawn(
            RUNNER_PODS,
            [
                sys.executable,
                "-m",
                "dockyard.testbed.runner_pods",
                "--kubeconfig",
                str(admin),
                "--work-dir",
                str(self.dir),
            ],
        )

    def create_nodes(self, admin: Path) -> None:
        nodes = [
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"kwok-node-{index}",
                    "annotations": {NODE_ANNOTATION: "fake"},
                    "labels": {
                        "type": "kwok",
                        "kubernetes.io/hostname": f"kwok-node-{index}",
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "topology.kubernetes.io/zone": f"zone-{index % 3}",
                    },
                },
            }
            for index in range(self.config.nodes)
        ]
        manifest = yaml.safe_dump_all(nodes)
        kubectl = [str(self.bin.path("kubectl")), f"--kubeconfig={admin}"]
        subprocess.run(
            [*kubectl, "apply", "-f", "-"],
            input=manifest,
            text=True,
            capture_output=True,
            check=True,
        )
        self.progress(f"kwok: waiting for {len(nodes)} fake node(s) to be Ready")
        result = subprocess.run(
            [
                *kubectl,
                "wait",
                "--for=condition=Ready",
                "node",
                "--all",
                f"--timeout={int(self.config.start_timeout)}s",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise TestbedError(
                f"fake nodes never became Ready: {result.stderr}\n{self.tail('kwok')}"
            )


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        # Only the test bed's own loopback http(s) URLs reach here.
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310  # nosec B310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False
