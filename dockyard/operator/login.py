"""How Kopf reaches the apiserver: the configured kubeconfig, else the service account.

Kopf keeps its own connection (for its watches and its bookkeeping); the operator's own
calls go through the ``KubeClient`` of its services, made from the same settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kopf
import yaml

from dockyard.operator.services import OperatorMemo


def connection_from_kubeconfig(path: Path) -> kopf.ConnectionInfo:
    """Kopf's connection info for the current context of one kubeconfig file."""
    raw = yaml.safe_load(path.read_text()) or {}
    name = raw.get("current-context")
    ctx = _named(raw.get("contexts", []), name, "context")
    cluster = _named(raw.get("clusters", []), ctx["cluster"], "cluster")
    user = _named(raw.get("users", []), ctx["user"], "user")
    base = path.parent

    def resolve(value: str | None) -> str | None:
        return None if value is None else str(base / value)

    return kopf.ConnectionInfo(
        server=cluster["server"],
        ca_path=resolve(cluster.get("certificate-authority")),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        certificate_path=resolve(user.get("client-certificate")),
        certificate_data=user.get("client-certificate-data"),
        private_key_path=resolve(user.get("client-key")),
        private_key_data=user.get("client-key-data"),
        token=user.get("token"),
        default_namespace=ctx.get("namespace"),
    )


def _named(items: list[dict[str, Any]], name: str | None, what: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return dict(item.get(what) or {})
    raise kopf.LoginError(f"kubeconfig has no {what} named {name!r}")


@kopf.on.login()
def login(memo: OperatorMemo, **kwargs: Any) -> kopf.ConnectionInfo | None:
    settings = memo.settings
    if settings.kubeconfig is not None:
        return connection_from_kubeconfig(settings.kubeconfig)
    return kopf.login_with_service_account(**kwargs)
