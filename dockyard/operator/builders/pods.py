"""The security every pod Dockyard makes runs under: the service's and the runner Jobs'.

Both follow the Pod Security Standards' "restricted" profile, declared once here so that
the two cannot drift apart: no privilege escalation, no capabilities, a read-only root
file system, a non-root user and the runtime's default seccomp profile.
"""

from __future__ import annotations

from typing import Final

from dockyard.core.resources import Manifest

_DEFAULT_SECCOMP: Final = "RuntimeDefault"


def restricted_pod() -> Manifest:
    """A pod's ``securityContext`` (a new dict: manifests are changed in place later)."""
    return {"runAsNonRoot": True, "seccompProfile": {"type": _DEFAULT_SECCOMP}}


def restricted_container() -> Manifest:
    """A container's ``securityContext`` (a new dict, likewise)."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        **restricted_pod(),
    }
