"""How Kopf reaches the apiserver: the configured kubeconfig, else the service account.

Kopf keeps its own connection (for its watches and its bookkeeping); the operator's own
calls go through the ``KubeClient`` of its services, made from the same settings. Both
authenticate alike: the kubeconfig's user is read by ``load_config`` for either, so a
``tokenFile`` or an ``exec`` plugin serves Kopf's watches too, not only the operator's
calls (a replica whose watches went out without credentials would hold the Lease and
reconcile nothing).

Kopf logs in again, calling ``login``, when the apiserver answers 401 and when the
connection info returned expires: an exec plugin's token shortly before its own
expiry, a token file's every ``TOKEN_FILE_RELOGIN``, so that a rotated token is read.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import kopf
import yaml

from dockyard.core.exec_credentials import REFRESH_MARGIN, ExecPlugin
from dockyard.core.kubeconfig import KubeConfig, load_config
from dockyard.operator.services import OperatorMemo

TOKEN_FILE_RELOGIN: Final = timedelta(minutes=5)
"""How often Kopf reads a token file again. Not every minute, as client-go does: Kopf
drops its connections at a re-login and every watch reconnects. The kubelet rotates a
token at 80% of its life, so five minutes is well inside what is left (12 minutes of
an hour's token); a token refused before that is read again at the 401."""


def connection_from_kubeconfig(path: Path) -> kopf.ConnectionInfo:
    """Kopf's connection info for the current context of one kubeconfig file: its
    credentials as the operator's own client has them (``load_config``, which reads a
    token file or runs an exec plugin now), TLS as the kubeconfig's cluster says."""
    config = load_config(path, os.environ)
    raw = yaml.safe_load(path.read_text()) or {}
    ctx = _named(raw.get("contexts", []), raw.get("current-context"), "context")
    cluster = _named(raw.get("clusters", []), ctx["cluster"], "cluster")
    user = _named(raw.get("users", []), ctx["user"], "user")
    base = path.parent

    def resolve(value: str | None) -> str | None:
        return None if value is None else str(base / value)

    certificate, key = user.get("client-certificate-data"), user.get("client-key-data")
    expires_at = config.token_expires_at
    own = "client-certificate" in user or "client-certificate-data" in user
    if config.token is None and "exec" in user and not own:
        # The plugin gave a client certificate, not a token: the operator's client holds
        # it in its TLS context only, so the plugin is asked once more, for Kopf.
        credential = ExecPlugin.of(user["exec"], cluster, base).run()
        certificate, key, expires_at = credential.certificate, credential.key, credential.expires_at
    return kopf.ConnectionInfo(
        server=config.server,
        ca_path=resolve(cluster.get("certificate-authority")),
        ca_data=cluster.get("certificate-authority-data"),
        insecure=cluster.get("insecure-skip-tls-verify"),
        certificate_path=resolve(user.get("client-certificate")),
        certificate_data=certificate,
        private_key_path=resolve(user.get("client-key")),
        private_key_data=key,
        token=config.token,
        default_namespace=ctx.get("namespace"),
        expiration=_expiration(config, expires_at, datetime.now(UTC)),
    )


def _expiration(config: KubeConfig, expires_at: datetime | None, now: datetime) -> datetime | None:
    """When Kopf should log in again: the exec plugin's credential a little before it
    expires, a token file's at the next multiple of ``TOKEN_FILE_RELOGIN``, else never
    (an inline token changes with the kubeconfig only; a 401 makes Kopf log in anyway).

    A token file's is on a grid rather than ``now`` plus the period: Kopf never uses
    again a connection info equal to one the apiserver refused, so two logins of one
    period, returning equal infos, do not retry a refused token at once, in a loop.
    """
    if expires_at is not None:
        for moment in (expires_at - REFRESH_MARGIN, expires_at):
            if moment > now:
                return moment
        return None  # already expired by our clock: the apiserver will say (401)
    if config.token_file is not None:
        period = TOKEN_FILE_RELOGIN.total_seconds()
        return datetime.fromtimestamp((now.timestamp() // period + 1) * period, UTC)
    return None


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
