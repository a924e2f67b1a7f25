"""Kopf's login: the credentials of the operator's own client (an inline token, a token
file, an exec plugin, a client certificate), read again at each login, and when Kopf
should log in again."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kopf
import pytest
import yaml

from dockyard.core.kubeconfig import KubeConfig
from dockyard.core.settings import Settings
from dockyard.operator.login import TOKEN_FILE_RELOGIN, _expiration, login
from dockyard.operator.services import OperatorMemo
from dockyard.testbed.pki import CertificateAuthority

V1 = "client.authentication.k8s.io/v1"

# An exec plugin: prints a token numbered by how often it ran, expiring in 2999.
PLUGIN = f"""#!{sys.executable}
import json, pathlib
here = pathlib.Path(__file__).parent
n = len(list(here.glob("run-*"))) + 1
(here / f"run-{{n}}").touch()
print(json.dumps({{"apiVersion": "{V1}", "kind": "ExecCredential",
    "status": {{"token": f"exec-token-{{n}}", "expirationTimestamp": "2999-01-01T00:00:00Z"}}}}))
"""


def _kubeconfig(tmp_path: Path, user: dict[str, Any], **cluster: Any) -> Path:
    path = tmp_path / "config"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "ns"}}],
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443/", **cluster}}],
        "users": [{"name": "u", "user": user}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _login(kubeconfig: Path) -> kopf.ConnectionInfo:
    memo = OperatorMemo(settings=Settings(kubeconfig=kubeconfig), namespaces=())
    info = login(memo=memo, logger=None)
    assert isinstance(info, kopf.ConnectionInfo)
    return info


def _plugin(tmp_path: Path, script: str) -> dict[str, Any]:
    plugin = tmp_path / "plugin"
    plugin.write_text(script)
    plugin.chmod(0o755)
    return {"exec": {"apiVersion": V1, "command": "./plugin", "interactiveMode": "Never"}}


def test_a_token_file_is_read_at_each_login_and_read_again_within_minutes(
    tmp_path: Path,
) -> None:
    (tmp_path / "token").write_text("first\n")
    kubeconfig = _kubeconfig(tmp_path, {"tokenFile": "token"}, **{"insecure-skip-tls-verify": True})

    first = _login(kubeconfig)
    (tmp_path / "token").write_text("rotated\n")  # the kubelet rotates it
    second = _login(kubeconfig)

    assert (first.token, second.token) == ("first", "rotated")
    assert second.as_http_headers() == {"Authorization": "Bearer rotated"}
    assert first.server == "https://127.0.0.1:6443"
    assert first.insecure is True
    assert first.expiration is not None
    assert timedelta(0) < first.expiration - datetime.now(UTC) <= TOKEN_FILE_RELOGIN


def test_an_exec_plugin_is_run_at_each_login_and_logged_in_again_before_its_expiry(
    tmp_path: Path,
) -> None:
    kubeconfig = _kubeconfig(
        tmp_path, _plugin(tmp_path, PLUGIN), **{"insecure-skip-tls-verify": True}
    )

    first, second = _login(kubeconfig), _login(kubeconfig)

    assert (first.token, second.token) == ("exec-token-1", "exec-token-2")
    assert first.expiration == datetime(2999, 1, 1, tzinfo=UTC) - timedelta(seconds=30)


def test_an_exec_plugin_that_gives_a_client_certificate_gives_it_to_kopf(
    tmp_path: Path,
) -> None:
    pair = CertificateAuthority(tmp_path).issue(tmp_path, "operator", common_name="operator")
    status = {"clientCertificateData": pair.cert.read_text(), "clientKeyData": pair.key.read_text()}
    document = {"apiVersion": V1, "kind": "ExecCredential", "status": status}
    script = f"#!{sys.executable}\nprint({json.dumps(json.dumps(document))})\n"
    kubeconfig = _kubeconfig(
        tmp_path, _plugin(tmp_path, script), **{"insecure-skip-tls-verify": True}
    )

    info = _login(kubeconfig)

    assert info.token is None
    assert info.certificate_data == pair.cert.read_text()
    assert info.private_key_data == pair.key.read_text()
    assert info.expiration is None
    info.as_ssl_context()  # Kopf can load them


def test_an_inline_token_and_a_ca_are_kept_and_never_expire(tmp_path: Path) -> None:
    ca = CertificateAuthority(tmp_path)
    kubeconfig = _kubeconfig(tmp_path, {"token": "inline"}, **{"certificate-authority": "ca.crt"})

    info = _login(kubeconfig)

    assert info.token == "inline"
    assert info.ca_path == str(ca.pair.cert)
    assert info.default_namespace == "ns"
    assert info.expiration is None


def test_a_client_certificate_is_given_by_its_files_next_to_the_kubeconfig(
    tmp_path: Path,
) -> None:
    pair = CertificateAuthority(tmp_path).issue(tmp_path, "operator", common_name="operator")
    user = {"client-certificate": pair.cert.name, "client-key": pair.key.name}
    kubeconfig = _kubeconfig(tmp_path, user, **{"insecure-skip-tls-verify": True})

    info = _login(kubeconfig)

    assert (info.certificate_path, info.private_key_path) == (str(pair.cert), str(pair.key))
    assert info.token is None
    assert info.expiration is None


def test_logins_within_one_period_of_a_token_file_expire_alike() -> None:
    """Kopf never uses again an info equal to one the apiserver refused: equal infos
    within a period keep a refused token from being retried in a loop."""
    config = KubeConfig("https://k", None, token="t", token_file=Path("token"))  # type: ignore[arg-type]
    base = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    times = [base + timedelta(seconds=s) for s in (0, 1, 150, 299.9)]
    assert {_expiration(config, None, now) for now in times} == {base + TOKEN_FILE_RELOGIN}


@pytest.mark.parametrize(
    ("left", "expected"),
    [(timedelta(minutes=10), timedelta(minutes=10) - timedelta(seconds=30)),
     (timedelta(seconds=10), timedelta(seconds=10)),
     (timedelta(seconds=-5), None)],
)  # fmt: skip
def test_an_expiring_credential_is_logged_in_again_shortly_before_it_expires(
    left: timedelta, expected: timedelta | None
) -> None:
    config = KubeConfig("https://k", None, token="t")  # type: ignore[arg-type]
    now = datetime(2030, 1, 1, tzinfo=UTC)
    expiration = _expiration(config, now + left, now)
    assert expiration == (None if expected is None else now + expected)
