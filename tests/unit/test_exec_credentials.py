"""Credentials from a kubeconfig's exec plugin: run as kubectl runs it (a real process),
read, and fetched again as the token nears its expiry; errors say what failed and quote
nothing the plugin printed."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard.core.exec_credentials import ExecCredential, ExecCredentialError, ExecPlugin
from dockyard.core.kubeconfig import BearerToken, KubeConfig, KubeconfigError

V1 = "client.authentication.k8s.io/v1"
CLUSTER = {
    "server": "https://127.0.0.1:6443",
    "certificate-authority-data": "Q0E=",
    "tls-server-name": "kubernetes",
    "insecure-skip-tls-verify": True,
    "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"a": 1}}],
}

# Prints a token numbered by how often it ran, and what it was asked.
COUNTING = """
import json, os, pathlib, sys
d = pathlib.Path(os.environ['EXEC_DIR'])
n = len(list(d.glob('run-*'))) + 1
(d / f'run-{n}').write_text(os.environ['KUBERNETES_EXEC_INFO'])
print(json.dumps({'apiVersion': sys.argv[1], 'kind': 'ExecCredential',
    'status': {'token': f'token-{n}', 'expirationTimestamp': sys.argv[2]}}))
"""


def _plugin(
    tmp_path: Path, script: str, *args: str, **entry: Any
) -> tuple[ExecPlugin, dict[str, Any]]:
    spec = {
        "apiVersion": V1,
        "command": sys.executable,
        "args": ["-c", script, *args],
        "env": [{"name": "EXEC_DIR", "value": str(tmp_path)}],
        "interactiveMode": "Never",
        **entry,
    }
    return ExecPlugin.of(spec, CLUSTER, tmp_path), spec


def test_a_token_is_read_with_its_expiry_and_the_request_names_the_cluster(
    tmp_path: Path,
) -> None:
    plugin, _ = _plugin(tmp_path, COUNTING, V1, "2999-01-01T00:00:00Z", provideClusterInfo=True)
    credential = plugin.run()
    assert credential.token == "token-1"
    assert credential.expires_at == datetime(2999, 1, 1, tzinfo=UTC)
    asked = json.loads((tmp_path / "run-1").read_text())
    assert asked == {
        "apiVersion": V1,
        "kind": "ExecCredential",
        "spec": {"interactive": False, "cluster": {
            "server": CLUSTER["server"], "certificate-authority-data": "Q0E=",
            "tls-server-name": "kubernetes", "insecure-skip-tls-verify": True,
            "config": {"a": 1}}},
    }  # fmt: skip


def test_a_ca_file_is_given_to_the_plugin_as_data(tmp_path: Path) -> None:
    """ExecCredential carries the CA as data only: a kubeconfig naming a file has it read."""
    (tmp_path / "ca.crt").write_bytes(b"PEM")
    spec = {"apiVersion": V1, "command": "x", "provideClusterInfo": True}
    cluster = {"server": "https://k", "certificate-authority": "ca.crt"}
    plugin = ExecPlugin.of(spec, cluster, tmp_path)
    assert plugin.cluster == {"server": "https://k", "certificate-authority-data": "UEVN"}


def test_a_token_near_its_expiry_is_fetched_again_and_not_before(tmp_path: Path) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=10)).isoformat()
    plugin, _ = _plugin(tmp_path, COUNTING, V1, soon)
    first = plugin.run()
    config = KubeConfig(
        server="https://x", ssl_context=None,  # type: ignore[arg-type]
        token=first.token, exec_plugin=plugin, token_expires_at=first.expires_at,
    )  # fmt: skip
    token = BearerToken(config, reload_seconds=60)
    # Within the refresh margin (30 s): the next request runs the plugin again.
    assert token.header() == "Bearer token-2"
    assert token.header() == "Bearer token-3"  # still expiring soon: each call asks
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    lasting, _ = _plugin(tmp_path, COUNTING, V1, later)
    config = KubeConfig(
        server="https://x", ssl_context=None,  # type: ignore[arg-type]
        token="token-0", exec_plugin=lasting,
        token_expires_at=datetime.now(UTC) + timedelta(hours=1),
    )  # fmt: skip
    steady = BearerToken(config, reload_seconds=60)
    assert steady.header() == "Bearer token-0"
    assert len(list(tmp_path.glob("run-*"))) == 3


@pytest.mark.parametrize(
    ("script", "says"),
    [
        ("import sys; print('token-SECRET'); sys.exit(3)", "failed (exit status 3"),
        ("print('token-SECRET')", "printed no JSON"),
        ('print(\'{"kind": "Other", "token": "token-SECRET"}\')', "no ExecCredential"),
        (
            "import json; print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1',"
            " 'kind': 'ExecCredential', 'status': {'token': 'token-SECRET'}}))",
            "answered in 'client.authentication.k8s.io/v1beta1'",
        ),
        (
            "import json; print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1',"
            " 'kind': 'ExecCredential', 'status': {}}))",
            "neither a token nor a client certificate",
        ),
    ],
)
def test_a_plugin_that_fails_says_so_and_quotes_nothing_it_printed(
    tmp_path: Path, script: str, says: str
) -> None:
    plugin, _ = _plugin(tmp_path, script)
    with pytest.raises(ExecCredentialError) as failed:
        plugin.run()
    assert says in str(failed.value)
    assert "SECRET" not in str(failed.value)


def test_a_plugin_not_installed_says_so_with_its_hint(tmp_path: Path) -> None:
    spec = {"apiVersion": V1, "command": "dockyard-no-such-plugin", "installHint": "brew it"}
    with pytest.raises(ExecCredentialError, match=r"not installed \(brew it\)"):
        ExecPlugin.of(spec, CLUSTER, tmp_path).run()
    with pytest.raises(ExecCredentialError, match="apiVersion"):
        ExecPlugin.of({**spec, "apiVersion": "v0"}, CLUSTER, tmp_path)


def test_a_kubeconfig_with_an_exec_user_gets_its_token_and_refuses_auth_provider(
    tmp_path: Path,
) -> None:
    plugin, spec = _plugin(tmp_path, COUNTING, V1, "2999-01-01T00:00:00Z")
    config = {
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443/"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
        "users": [{"name": "u", "user": {"exec": spec}}],
    }
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(config))
    loaded = KubeConfig.from_kubeconfig(path)
    assert loaded.token == "token-1"
    assert loaded.exec_plugin == plugin
    assert loaded.token_expires_at == datetime(2999, 1, 1, tzinfo=UTC)

    config["users"] = [{"name": "u", "user": {"auth-provider": {"name": "gcp"}}}]
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(KubeconfigError, match="auth-provider"):
        KubeConfig.from_kubeconfig(path)


def test_an_expiry_is_stale_within_the_margin_only() -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    assert not ExecCredential(token="t").stale(now)
    assert not ExecCredential(token="t", expires_at=now + timedelta(minutes=5)).stale(now)
    assert ExecCredential(token="t", expires_at=now + timedelta(seconds=20)).stale(now)
