"""Credentials from a kubeconfig's ``exec`` plugin, as kubectl gets them.

Managed clusters hand out short-lived tokens through a program the kubeconfig names
(``aws eks get-token``, ``gke-gcloud-auth-plugin``, ``kubelogin``): its ``user.exec``
entry says what to run, with which arguments and variables. The program is given
``KUBERNETES_EXEC_INFO`` (an ``ExecCredential`` request: whether it may ask the user
anything, and the cluster when ``provideClusterInfo`` is set) and prints an
``ExecCredential`` whose status holds a token, or a client certificate and key, and
when it expires (``client.authentication.k8s.io/v1`` and ``v1beta1``).

The program's standard error goes to ours, as kubectl lets it (a login prompt, a hint);
what it prints on standard output holds the credential and is quoted in no error. A
token is fetched again once it is within ``REFRESH_MARGIN`` of its expiry
(``dockyard.core.kubeconfig.BearerToken``); a client certificate is loaded once, for the
client's life.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess  # nosec B404: runs the program the user's own kubeconfig names
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

API_VERSIONS: Final = frozenset(
    {"client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"}
)
# A plugin that asks nothing answers in a second or two; one that opens a browser for a
# login waits for the user.
EXEC_TIMEOUT_SECONDS: Final = 120.0
REFRESH_MARGIN: Final = timedelta(seconds=30)


class ExecCredentialError(ValueError):
    """The plugin could not be run, failed, or printed no credential: says which."""


@dataclass(frozen=True, slots=True)
class ExecCredential:
    """What the plugin printed: a token, or a client certificate and key (PEM)."""

    token: str | None = None
    certificate: str | None = None
    key: str | None = None
    expires_at: datetime | None = None

    def stale(self, now: datetime) -> bool:
        """Whether the token should be fetched again (it expires within the margin)."""
        return self.expires_at is not None and now >= self.expires_at - REFRESH_MARGIN


@dataclass(frozen=True, slots=True)
class ExecPlugin:
    """A kubeconfig ``user.exec`` entry, read and checked, ready to run."""

    api_version: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    interactive_mode: str
    install_hint: str
    cluster: Mapping[str, Any] | None

    @classmethod
    def of(cls, entry: Mapping[str, Any], cluster: Mapping[str, Any], base: Path) -> ExecPlugin:
        """``entry`` as a plugin; ``ExecCredentialError`` naming what is wrong in it."""
        api_version = entry.get("apiVersion")
        if api_version not in API_VERSIONS:
            raise ExecCredentialError(
                f"exec apiVersion {api_version!r} is not one of {', '.join(sorted(API_VERSIONS))}"
            )
        command = entry.get("command")
        if not isinstance(command, str) or not command:
            raise ExecCredentialError("exec names no command")
        # As kubectl: a command with a path separator is relative to the kubeconfig.
        if os.sep in command and not Path(command).is_absolute():
            command = str(base / command)
        args = entry.get("args") or []
        variables = entry.get("env") or []
        if not isinstance(args, list) or not isinstance(variables, list):
            raise ExecCredentialError("exec args and env must be lists")
        return cls(
            api_version=str(api_version),
            argv=(command, *(str(a) for a in args)),
            env={str(v["name"]): str(v.get("value", "")) for v in variables},
            interactive_mode=str(entry.get("interactiveMode") or "IfAvailable"),
            install_hint=str(entry.get("installHint") or "").strip(),
            cluster=_cluster_info(cluster, base) if entry.get("provideClusterInfo") else None,
        )

    def run(self) -> ExecCredential:
        """Run the plugin once and read its credential."""
        interactive = self.interactive_mode != "Never" and sys.stdin.isatty()
        request: dict[str, Any] = {"interactive": interactive}
        if self.cluster is not None:
            request["cluster"] = self.cluster
        info = {"apiVersion": self.api_version, "kind": "ExecCredential", "spec": request}
        env = {**os.environ, **self.env, "KUBERNETES_EXEC_INFO": json.dumps(info)}
        name = Path(self.argv[0]).name
        try:
            done = subprocess.run(  # nosec B603: the user's kubeconfig
                self.argv,
                env=env,
                stdin=None if interactive else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                timeout=EXEC_TIMEOUT_SECONDS,
                check=False,
            )
        except FileNotFoundError:
            hint = f" ({self.install_hint})" if self.install_hint else ""
            raise ExecCredentialError(f"exec plugin {name} is not installed{hint}") from None
        except subprocess.TimeoutExpired:
            raise ExecCredentialError(
                f"exec plugin {name} did not answer within {EXEC_TIMEOUT_SECONDS:.0f}s"
            ) from None
        except OSError as exc:
            raise ExecCredentialError(f"exec plugin {name} cannot run: {exc.strerror}") from None
        if done.returncode != 0:
            raise ExecCredentialError(
                f"exec plugin {name} failed (exit status {done.returncode}; its own "
                "messages are above)"
            )
        return _credential(done.stdout, name, self.api_version)


# The kubeconfig cluster's fields that ExecCredential.spec.cluster shadows, under the
# same names; its CA is always data there, never a file.
_CLUSTER_FIELDS: Final = (
    "server",
    "tls-server-name",
    "insecure-skip-tls-verify",
    "certificate-authority-data",
    "proxy-url",
    "disable-compression",
)


def _cluster_info(cluster: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """The cluster as ``ExecCredential.spec.cluster`` carries it: the kubeconfig's
    fields, a ``certificate-authority`` file read into ``certificate-authority-data``,
    and the exec extension's ``config``."""
    info = {field: cluster[field] for field in _CLUSTER_FIELDS if field in cluster}
    if "certificate-authority-data" not in info and cluster.get("certificate-authority"):
        ca = (base / str(cluster["certificate-authority"])).read_bytes()
        info["certificate-authority-data"] = base64.b64encode(ca).decode()
    extension = cluster.get("extensions") or []
    for item in extension if isinstance(extension, list) else ():
        if isinstance(item, dict) and item.get("name") == "client.authentication.k8s.io/exec":
            info["config"] = item.get("extension")
    return info


def _credential(stdout: bytes, name: str, api_version: str) -> ExecCredential:
    """The ``ExecCredential`` the plugin printed; quotes none of it in an error."""
    try:
        document = json.loads(stdout)
    except ValueError:
        raise ExecCredentialError(f"exec plugin {name} printed no JSON") from None
    if not isinstance(document, dict) or document.get("kind") != "ExecCredential":
        raise ExecCredentialError(f"exec plugin {name} printed no ExecCredential")
    if document.get("apiVersion") != api_version:
        raise ExecCredentialError(
            f"exec plugin {name} answered in {document.get('apiVersion')!r}, not {api_version}"
        )
    status = document.get("status")
    if not isinstance(status, dict):
        raise ExecCredentialError(f"exec plugin {name} printed an ExecCredential without status")
    token = status.get("token")
    certificate, key = status.get("clientCertificateData"), status.get("clientKeyData")
    if not (isinstance(token, str) and token) and not (
        isinstance(certificate, str) and isinstance(key, str)
    ):
        raise ExecCredentialError(
            f"exec plugin {name} printed neither a token nor a client certificate and key"
        )
    expires_at = None
    if isinstance(stamp := status.get("expirationTimestamp"), str):
        try:
            expires_at = datetime.fromisoformat(stamp)
        except ValueError:
            raise ExecCredentialError(
                f"exec plugin {name} printed an expirationTimestamp that is not RFC 3339"
            ) from None
        if expires_at.tzinfo is None:
            raise ExecCredentialError(
                f"exec plugin {name} printed an expirationTimestamp without a time zone"
            )
    return ExecCredential(
        token=token if isinstance(token, str) and token else None,
        certificate=certificate if isinstance(certificate, str) else None,
        key=key if isinstance(key, str) else None,
        expires_at=expires_at,
    )


__all__ = [
    "EXEC_TIMEOUT_SECONDS",
    "REFRESH_MARGIN",
    "ExecCredential",
    "ExecCredentialError",
    "ExecPlugin",
]
