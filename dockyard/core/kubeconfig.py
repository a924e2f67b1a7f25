"""Where the apiserver is and how to authenticate to it: a kubeconfig file (a token, a
token file, a client certificate or an exec plugin), or the in-cluster ServiceAccount.
``dockyard.core.kube.KubeClient`` connects with what this module reads, and sends the
token ``BearerToken`` keeps fresh.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from dockyard.core.exec_credentials import ExecCredential, ExecCredentialError, ExecPlugin

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
IN_CLUSTER_CA = Path("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")


class KubeconfigError(ValueError):
    """No usable way to the apiserver: the message says what to set or fix."""


@dataclass(frozen=True)
class KubeConfig:
    """Where the apiserver is and how to authenticate to it.

    With ``token_file`` the token is read from that file and read again every
    ``TOKEN_RELOAD_SECONDS``, as the kubelet rotates it; ``token`` is then the first read.
    ``caller_ssl_context`` verifies the server without presenting our client certificate,
    for calls made with a caller's token (the apiserver would authenticate the certificate
    first); None when ``ssl_context`` holds no certificate. With ``exec_plugin`` the token
    came from that program, and is fetched again as ``token_expires_at`` nears.
    """

    server: str
    ssl_context: ssl.SSLContext
    token: str | None = None
    token_file: Path | None = None
    caller_ssl_context: ssl.SSLContext | None = None
    exec_plugin: ExecPlugin | None = None
    token_expires_at: datetime | None = None

    @classmethod
    def from_kubeconfig(cls, path: Path, context: str | None = None) -> KubeConfig:
        raw: Any = yaml.safe_load(path.read_text())
        if not isinstance(raw, dict):
            raise KubeconfigError("not a kubeconfig (no clusters, contexts and users in it)")
        ctx_name = str(context or raw.get("current-context") or "")
        ctx = _named(raw.get("contexts", []), ctx_name, "context")["context"]
        cluster = _named(raw.get("clusters", []), ctx["cluster"], "cluster")["cluster"]
        user = _named(raw.get("users", []), ctx["user"], "user")["user"]
        base = path.parent
        ssl_context = _server_context(cluster, base)
        caller_ssl_context = None
        if "client-certificate" in user:
            caller_ssl_context = _server_context(cluster, base)
            ssl_context.load_cert_chain(
                str(base / user["client-certificate"]), str(base / user["client-key"])
            )
        elif "client-certificate-data" in user:
            caller_ssl_context = _server_context(cluster, base)
            _load_cert_data(ssl_context, user["client-certificate-data"], user["client-key-data"])
        token = user.get("token")
        token_file = None
        if token is None and "tokenFile" in user:
            token_file = Path(base / user["tokenFile"])
            token = token_file.read_text().strip()
        if "auth-provider" in user:
            raise KubeconfigError(
                f"user {ctx['user']!r} logs in through auth-provider, which kubectl itself "
                "dropped (1.26): use the exec plugin that replaced it (gke-gcloud-auth-plugin, "
                "kubelogin)"
            )
        plugin, expires_at = None, None
        if token is None and "exec" in user:
            try:
                plugin = ExecPlugin.of(user["exec"], cluster, base)
                credential = plugin.run()
            except ExecCredentialError as exc:
                raise KubeconfigError(f"user {ctx['user']!r}: {exc}") from None
            token, expires_at = credential.token, credential.expires_at
            if credential.certificate and credential.key:
                caller_ssl_context = _server_context(cluster, base)
                _load_cert_pem(ssl_context, credential.certificate, credential.key)
        return cls(
            server=cluster["server"].rstrip("/"),
            ssl_context=ssl_context,
            token=token,
            token_file=token_file,
            caller_ssl_context=caller_ssl_context,
            exec_plugin=plugin if token else None,
            token_expires_at=expires_at if token else None,
        )

    @classmethod
    def in_cluster(cls, host: str, port: str) -> KubeConfig:
        ssl_context = ssl.create_default_context(cafile=str(IN_CLUSTER_CA))
        return cls(
            server=f"https://{host}:{port}",
            ssl_context=ssl_context,
            token=IN_CLUSTER_TOKEN.read_text().strip(),
            token_file=IN_CLUSTER_TOKEN,
        )


def _named(items: list[dict[str, Any]], name: str, what: str) -> dict[str, Any]:
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict) and item.get("name") == name:
            return item
    raise KubeconfigError(f"kubeconfig has no {what} named {name!r}")


def _server_context(cluster: Mapping[str, Any], base: Path) -> ssl.SSLContext:
    """A TLS context that verifies the apiserver as the kubeconfig's cluster says."""
    context = ssl.create_default_context()
    if cluster.get("insecure-skip-tls-verify"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif "certificate-authority-data" in cluster:
        context.load_verify_locations(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
    elif "certificate-authority" in cluster:
        context.load_verify_locations(cafile=str(base / cluster["certificate-authority"]))
    return context


def _load_cert_data(context: ssl.SSLContext, cert_b64: str, key_b64: str) -> None:
    _load_cert_pem(context, base64.b64decode(cert_b64), base64.b64decode(key_b64))


def _load_cert_pem(context: ssl.SSLContext, cert: bytes | str, key: bytes | str) -> None:
    # ssl wants files; the data lives only as long as it takes to load it.
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
        key_file.touch(mode=0o600)
        cert_file.write_bytes(cert.encode() if isinstance(cert, str) else cert)
        key_file.write_bytes(key.encode() if isinstance(key, str) else key)
        context.load_cert_chain(str(cert_file), str(key_file))


def load_config(kubeconfig: Path | None, environ: Mapping[str, str]) -> KubeConfig:
    """The kubeconfig when given, else the in-cluster service account.

    Raises ``KubeconfigError`` when neither can be read, saying which and why.
    """
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if kubeconfig is None and not (host and port):
        raise KubeconfigError(
            "no kubeconfig set (DOCKYARD_KUBECONFIG) and not running in a cluster"
        )
    try:
        if kubeconfig is not None:
            return KubeConfig.from_kubeconfig(kubeconfig)
        return KubeConfig.in_cluster(str(host), str(port))
    except KubeconfigError as exc:
        raise KubeconfigError(f"kubeconfig {kubeconfig}: {exc}") from None
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError, ValueError) as exc:
        what = f"kubeconfig {kubeconfig}" if kubeconfig else "the in-cluster ServiceAccount"
        raise KubeconfigError(f"{what} cannot be used: {unreadable(exc)}") from None


def unreadable(exc: Exception) -> str:
    """Why a kubeconfig could not be read, in words that quote none of it (it holds
    tokens and keys): a YAML error's snippet of the file is left out, for one."""
    if isinstance(exc, KubeconfigError):
        return str(exc)
    if isinstance(exc, yaml.YAMLError):
        mark = getattr(exc, "problem_mark", None)
        return "not YAML" + (f" (line {mark.line + 1})" if mark is not None else "")
    if isinstance(exc, KeyError):
        return f"it names no {exc}"
    if isinstance(exc, OSError):
        return str(exc)  # the file and the system's reason
    return f"it is not a kubeconfig ({type(exc).__name__})"


# client-go re-reads a token file once a minute: projected service-account tokens are
# rotated by the kubelet well before they expire (an hour, or 80% of their lifetime).
TOKEN_RELOAD_SECONDS = 60.0


class BearerToken:
    """The bearer token: fixed, a file read again once it is ``reload_seconds`` old, or an
    exec plugin's, fetched again as it nears its expiry (``ExecCredentialError`` when the
    plugin fails then: it says why, where the apiserver would only say 401)."""

    def __init__(self, config: KubeConfig, reload_seconds: float) -> None:
        self._value = config.token
        self._file = config.token_file
        self._reload_seconds = reload_seconds
        self._read_at = time.monotonic()
        self._plugin = config.exec_plugin
        self._expires = ExecCredential(token=config.token, expires_at=config.token_expires_at)

    def header(self) -> str | None:
        if self._plugin is not None and self._expires.stale(datetime.now(UTC)):
            # Blocks while it runs, as it does in kubectl; a plugin answers in about a
            # second, every few minutes at most (tokens live 15 minutes or more).
            self._expires = self._plugin.run()
            self._value = self._expires.token or self._value
        if self._file is not None and time.monotonic() - self._read_at >= self._reload_seconds:
            self._read_at = time.monotonic()
            # A missing file keeps the last token: the apiserver says when it stops working.
            with contextlib.suppress(OSError):
                self._value = self._file.read_text().strip() or self._value
        return f"Bearer {self._value}" if self._value else None
