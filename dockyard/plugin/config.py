"""Which cluster, as whom and in which namespace: the kubeconfig resolved as kubectl does.

``--kubeconfig``, else the first file of ``$KUBECONFIG`` that exists, else
``~/.kube/config``; ``--context``, else the current context; ``--namespace``, else the
context's namespace, else ``default``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from dockyard.core.kubeconfig import KubeConfig, unreadable


class ConfigError(Exception):
    """No usable kubeconfig: the one line says what to fix."""


@dataclass(frozen=True, slots=True)
class Target:
    """The apiserver, the identity and the namespace the commands act in."""

    config: KubeConfig
    namespace: str


def kubeconfig_path(flag: str | None, environ: Mapping[str, str]) -> Path:
    """The kubeconfig file kubectl would read first."""
    if flag:
        return Path(flag).expanduser()
    listed = [Path(p).expanduser() for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    for path in listed:
        if path.is_file():
            return path
    return Path(environ.get("HOME", "~")).expanduser() / ".kube" / "config"


def resolve(
    *,
    kubeconfig: str | None,
    context: str | None,
    namespace: str | None,
    environ: Mapping[str, str],
) -> Target:
    """The target of a command line; ``ConfigError`` when the kubeconfig cannot be used."""
    path = kubeconfig_path(kubeconfig, environ)
    if not path.is_file():
        raise ConfigError(f"no kubeconfig at {path}; set KUBECONFIG or pass --kubeconfig")
    try:
        config = KubeConfig.from_kubeconfig(path, context)
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as exc:
        raise ConfigError(f"kubeconfig {path} cannot be used: {unreadable(exc)}") from None
    return Target(config, namespace or _context_namespace(raw, context) or "default")


def _context_namespace(raw: Mapping[str, object], context: str | None) -> str | None:
    name = context or raw.get("current-context")
    contexts = raw.get("contexts")
    for item in contexts if isinstance(contexts, list) else []:
        if isinstance(item, dict) and item.get("name") == name:
            namespace = (item.get("context") or {}).get("namespace")
            return str(namespace) if namespace else None
    return None
