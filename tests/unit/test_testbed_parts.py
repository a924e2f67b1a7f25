"""Pure parts of the test bed: process identity, shell exports, certificates, tokens."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import jwt
from cryptography import x509

from dockyard.testbed import oidc, processes, versions
from dockyard.testbed.cluster import ProcessRecord, State
from dockyard.testbed.pki import CertificateAuthority, write_signing_key
from dockyard.testbed.processes import start_time


def test_a_process_is_recognised_by_pid_andstart_time() -> None:
    started = start_time(os.getpid())
    assert started is not None
    assert ProcessRecord("me", os.getpid(), started, "-").alive()
    assert not ProcessRecord("impostor", os.getpid(), started + 1, "-").alive()


def test_a_reaped_process_is_not_alive() -> None:
    proc = subprocess.Popen(["true"])
    started = start_time(proc.pid)
    proc.wait()
    assert not ProcessRecord("gone", proc.pid, started or 0, "-").alive()


def test_the_state_file_format_round_trips(tmp_path: Path) -> None:
    # A running test bed's state file is read by every later command: its keys stay put.
    written = {
        "directory": "/var/testbed",
        "bin_dir": "/cache/bin",
        "kubeconfig": "/var/testbed/admin.kubeconfig",
        "apiserver_url": "https://127.0.0.1:6443",
        "oidc_issuer": "https://127.0.0.1:8443",
        "database_url": "postgresql://dockyard:pw@127.0.0.1:5432/dockyard",
        "redis_url": "redis://127.0.0.1:6379/0",
        "kubernetes_version": "v1.0.0",
        "audit_sink_port": 41234,
        "audit_sink_token": "t0ken",
        "s3_endpoint": "https://127.0.0.1:8333",
        "s3_access_key_id": "DOCKYARDTESTBED0A1B2C3D",
        "s3_secret_access_key": "s3cret",
        "s3_ca_bundle": "/var/testbed/pki/ca.crt",
        "processes": [
            {
                "name": "etcd",
                "pid": 42,
                "started": 7,
                "log": "/l/etcd.log",
                "argv": ["/cache/bin/etcd", "--data-dir=/var/testbed/etcd"],
                "user": None,
            }
        ],
    }
    (tmp_path / "old.json").write_text(json.dumps(written))
    state = State.load(tmp_path / "old.json")
    assert state is not None
    assert state.processes == [
        ProcessRecord(
            "etcd", 42, 7, "/l/etcd.log", ["/cache/bin/etcd", "--data-dir=/var/testbed/etcd"]
        )
    ]
    state.save(tmp_path / "new.json")
    assert json.loads((tmp_path / "new.json").read_text()) == written


def test_a_state_file_from_before_processes_recorded_their_command_still_loads(
    tmp_path: Path,
) -> None:
    record = {"name": "etcd", "pid": 42, "started": 7, "log": "/l/etcd.log"}
    written = {
        "directory": "/var/testbed",
        "bin_dir": "/cache/bin",
        "kubeconfig": "/var/testbed/admin.kubeconfig",
        "apiserver_url": "https://127.0.0.1:6443",
        "oidc_issuer": "https://127.0.0.1:8443",
        "database_url": "postgresql://dockyard:pw@127.0.0.1:5432/dockyard",
        "redis_url": "redis://127.0.0.1:6379/0",
        "processes": [record],
    }
    (tmp_path / "old.json").write_text(json.dumps(written))
    state = State.load(tmp_path / "old.json")
    assert state is not None
    assert state.processes == [ProcessRecord("etcd", 42, 7, "/l/etcd.log")]
    assert state.processes[0].argv == []  # faults.crashed refuses to restart it


def _bed_state(directory: Path, *, bin_dir: str, database_url: str) -> State:
    """A test bed's state with ``bin_dir`` and ``database_url``, the rest made up."""
    return State(
        directory=str(directory),
        bin_dir=bin_dir,
        kubeconfig="/k/config",
        apiserver_url="https://127.0.0.1:1",
        oidc_issuer="https://127.0.0.1:2",
        database_url=database_url,
        redis_url="redis://127.0.0.1:4/0",
    )


def test_env_exports_are_shell_safe(tmp_path: Path) -> None:
    state = _bed_state(
        tmp_path, bin_dir="/opt/bin dir", database_url="postgresql://u:p'w@127.0.0.1:3/d"
    )
    script = state.env_exports() + '\nprintf "%s\\n" "$DOCKYARD_DATABASE_URL" "$KUBECONFIG" "$PATH"'
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    lines = out.stdout.splitlines()
    assert lines[0] == "postgresql://u:p'w@127.0.0.1:3/d"
    assert lines[1] == "/k/config"
    assert lines[2].startswith("/opt/bin dir:")
    assert shlex.quote("/opt/bin dir") in state.env_exports()


def test_env_exports_put_this_dockyard_on_path_after_the_test_beds_binaries(
    tmp_path: Path,
) -> None:
    """After `eval "$(.venv/bin/dockyard testbed env)"` the README runs plain `dockyard`:
    before, only kubectl and the control plane were on PATH."""
    state = _bed_state(
        tmp_path, bin_dir="/cache/bin", database_url="postgresql://u:p@127.0.0.1:3/d"
    )
    script = state.env_exports() + '\nprintf "%s\\n" "$PATH"'
    out = subprocess.run(
        ["bash", "-c", script],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    scripts = str(Path(sys.executable).absolute().parent)  # where the venv's dockyard is
    assert out.stdout.strip().split(":") == ["/cache/bin", scripts, "/usr/bin", "/bin"]


def test_serving_certificates_cover_loopback(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    pair = ca.issue(tmp_path, "srv", common_name="srv", server=True)
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert oct(pair.key.stat().st_mode & 0o777) == "0o600"


def test_minted_tokens_verify_against_the_published_jwks(tmp_path: Path) -> None:
    write_signing_key(tmp_path, "oidc-signing")
    token = oidc.mint_token(tmp_path, "https://127.0.0.1:9", "erin", ["ops"], ttl_seconds=60)
    keys = oidc.jwks((tmp_path / oidc.SIGNING_PUB).read_bytes())
    key = jwt.PyJWK(keys["keys"][0])
    claims = jwt.decode(
        token, key, algorithms=["ES256"], audience=oidc.AUDIENCE, issuer="https://127.0.0.1:9"
    )
    assert claims["sub"] == "erin"
    assert claims["groups"] == ["ops"]
    assert claims["exp"] - claims["iat"] == 60
    assert jwt.get_unverified_header(token)["kid"] == keys["keys"][0]["kid"]


def test_the_cache_key_changes_with_every_pinned_version() -> None:
    print_ = versions.fingerprint()
    for value in (versions.KUBERNETES, versions.ETCD, versions.KWOK, versions.KUBECTL_WHEEL):
        assert value in print_


def test_a_spawned_process_that_exits_is_reaped_not_left_a_zombie(tmp_path: Path) -> None:
    """A killed test bed process stays a zombie until its parent reaps it, and PostgreSQL
    takes a zombie in its lock file for a live postmaster (test workers call reap from a
    thread)."""
    # It lives long enough for spawn to see it start (spawn refuses one that exited at once).
    argv = ["sleep", "0.3"]
    record = processes.spawn("brief", argv, user=None, cwd=tmp_path, log=tmp_path / "log")
    deadline = time.monotonic() + 10
    while _state(record.pid) is not None and time.monotonic() < deadline:
        processes.reap()
        time.sleep(0.02)

    assert _state(record.pid) is None  # gone, not a zombie ("Z")


def _state(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]
