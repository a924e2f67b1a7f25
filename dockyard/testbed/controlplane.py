"""The test bed's control plane: etcd, kube-apiserver with its configuration, and the
kube-controller-manager and kube-scheduler that work against it.

The apiserver authenticates people with JWTs from the test bed's OIDC issuer (see
``oidc``) and components with client certificates from its CA (see ``pki``); it
enforces RBAC and writes an audit log of every ``dockyard.io`` request and of every
write (but the control plane's leases).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import yaml

from dockyard.testbed import oidc
from dockyard.testbed.pki import CertificateAuthority, write_signing_key
from dockyard.testbed.processes import Launcher, http_ok

ADMIN_USER = "dockyard-testbed-admin"
# Who each kubeconfig authenticates as: (user, groups), by the kubeconfig's stem.
KUBECONFIG_USERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "admin": (ADMIN_USER, ("system:masters",)),
    "controller-manager": ("system:kube-controller-manager", ()),
    "scheduler": ("system:kube-scheduler", ()),
    "kwok": ("dockyard-testbed-kwok", ("system:masters",)),
}


def start_etcd(launcher: Launcher, port: int, peer: int) -> None:
    client, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
    launcher.spawn(
        "etcd",
        [
            str(launcher.bin.path("etcd")),
            "--name",
            "testbed",
            "--data-dir",
            str(launcher.dir / "etcd"),
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
    launcher.wait_until("etcd", lambda: http_ok(f"{client}/health"), "healthy")


def write_kubeconfigs(launcher: Launcher, ca: CertificateAuthority, server: str) -> dict[str, Path]:
    """One kubeconfig per client (``KUBECONFIG_USERS``), each with its own certificate."""
    paths: dict[str, Path] = {}
    for stem, (user, groups) in KUBECONFIG_USERS.items():
        pair = ca.issue(launcher.pki, f"client-{stem}", common_name=user, organizations=groups)
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
        path = launcher.dir / f"{stem}.kubeconfig"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)
        paths[stem] = path
    return paths


def start_apiserver(
    launcher: Launcher,
    ca: CertificateAuthority,
    *,
    etcd_port: int,
    port: int,
    issuer: str,
    audit_sink: tuple[int, str],
) -> None:
    """Start kube-apiserver on ``port`` against etcd, trusting ``issuer``; wait for /readyz.

    Its audit events go to a log file and, through the webhook backend, to a Dockyard
    API on ``audit_sink`` (port, token): ``POST /api/v1/audit/kubernetes`` over HTTPS
    (the apiserver sends a bearer token over TLS only), with the serving certificate
    ``pki/audit-sink.crt`` that an API started there presents.
    """
    serving = ca.issue(launcher.pki, "apiserver", common_name="kube-apiserver", server=True)
    sa_key, sa_pub = write_signing_key(launcher.pki, "service-account")
    authn = _write_yaml(launcher.dir / "authentication.yaml", _authentication(ca, issuer))
    audit_policy = _write_yaml(launcher.dir / "audit-policy.yaml", _AUDIT_POLICY)
    ca.issue(launcher.pki, "audit-sink", common_name="dockyard-audit-sink", server=True)
    audit_webhook = _write_yaml(
        launcher.dir / "audit-webhook.kubeconfig", _audit_sink(*audit_sink, ca.pair.cert)
    )
    audit_webhook.chmod(0o600)
    launcher.spawn(
        "kube-apiserver",
        [
            str(launcher.bin.path("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            # Loopback cannot back the kubernetes Service; nothing in-cluster needs it.
            "--endpoint-reconciler-type=none",
            f"--secure-port={port}",
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
            f"--audit-log-path={launcher.logs / 'audit.log'}",
            # Megabytes before rotation: a whole `make test` writes more than 50 (the
            # steady-state test reads across a rotation, but rarely needs to).
            "--audit-log-maxsize=500",
            f"--audit-webhook-config-file={audit_webhook}",
            # Small batches, sent within a second: tests wait for them.
            "--audit-webhook-batch-max-wait=1s",
            "--audit-webhook-batch-max-size=100",
            "--audit-webhook-initial-backoff=1s",
            *_AUDIT_TRUNCATION,
            "--event-ttl=1h",
            "--max-requests-inflight=800",
            "--max-mutating-requests-inflight=400",
        ],
    )
    context = ssl.create_default_context(cafile=str(ca.pair.cert))
    admin_pair = launcher.pki / "client-admin"
    context.load_cert_chain(f"{admin_pair}.crt", f"{admin_pair}.key")
    url = f"https://127.0.0.1:{port}/readyz"
    launcher.progress("kube-apiserver: waiting for /readyz")
    launcher.wait_until("kube-apiserver", lambda: http_ok(url, context), "ready")


def start_controllers(launcher: Launcher, kubeconfigs: dict[str, Path]) -> None:
    """kube-controller-manager (Deployments, Jobs, token signing) and kube-scheduler."""
    pki = launcher.pki
    launcher.spawn(
        "kube-controller-manager",
        [
            str(launcher.bin.path("kube-controller-manager")),
            f"--kubeconfig={kubeconfigs['controller-manager']}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki / 'service-account.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--use-service-account-credentials=true",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--concurrent-deployment-syncs=20",
            "--concurrent-replicaset-syncs=20",
            "--concurrent-job-syncs=20",
        ],
    )
    launcher.spawn(
        "kube-scheduler",
        [
            str(launcher.bin.path("kube-scheduler")),
            f"--kubeconfig={kubeconfigs['scheduler']}",
            "--bind-address=127.0.0.1",
            "--secure-port=0",
            "--leader-elect=false",
        ],
    )


def _authentication(ca: CertificateAuthority, issuer: str) -> dict[str, object]:
    """People are JWTs from ``issuer``: ``sub`` is the user name, ``groups`` the groups."""
    return {
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
    }


# Metadata of every dockyard.io request, and of every write to anything else but the
# control plane's own leases: what the audit and steady-state tests read.
# As manifests/audit/webhook-kubeconfig.yaml recommends: events as large as a request
# line may make them, in batches the sink takes whole (DOCKYARD_AUDIT_SINK_MAX_BYTES).
_AUDIT_TRUNCATION = (
    "--audit-webhook-truncate-enabled",
    "--audit-webhook-truncate-max-batch-size=16777216",
    "--audit-webhook-truncate-max-event-size=8388608",
)

_AUDIT_POLICY: dict[str, object] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {"level": "Metadata", "resources": [{"group": "dockyard.io"}]},
        {"level": "None", "resources": [{"group": "coordination.k8s.io"}]},
        {
            "level": "Metadata",
            "verbs": ["create", "update", "patch", "delete", "deletecollection"],
        },
        {"level": "None"},
    ],
}


def _audit_sink(port: int, token: str, ca: Path) -> dict[str, object]:
    """The audit webhook's kubeconfig: the API's ingestion endpoint, the CA its serving
    certificate is signed by, and the token (as manifests/audit/ ships it)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "dockyard",
                "cluster": {
                    "server": f"https://127.0.0.1:{port}/api/v1/audit/kubernetes",
                    "certificate-authority": str(ca),
                },
            }
        ],
        "users": [{"name": "kube-apiserver", "user": {"token": token}}],
        "contexts": [
            {"name": "audit", "context": {"cluster": "dockyard", "user": "kube-apiserver"}}
        ],
        "current-context": "audit",
    }


def _write_yaml(path: Path, document: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path
