"""Which host an Environment may publish through its Ingress.

An ingress controller serves a host for whichever Ingress names it, in any namespace,
and the operator makes an environment's Ingress for any tenant who may write
Environments. Left at that, a developer in one namespace could publish another team's
host, or the platform's own, and take its traffic. Two rules keep hosts apart:

- **A namespace publishes hosts within its domains.** The Namespace's annotation
  ``dockyard.io/ingress-domains`` (comma-separated: ``shop.example.com``,
  ``*.team-a.example.com``, or ``*`` for any host) says which; only a cluster
  administrator can write it, as Dockyard's roles cannot change Namespaces. A namespace
  without it has ``DOCKYARD_INGRESS_DOMAINS`` (``["*"]`` by default and in the
  development overlay; the deploy base, and so staging and production, set ``[]``:
  there only a namespace an administrator annotated publishes any host).
- **A host is one environment's**, the first to claim it: the claims are Dockyard's own
  Ingresses, labelled ``dockyard.io/ingress-host`` with a digest of their host, and the
  oldest of them (by creation time, then namespace and name) keeps the host. They are
  read from the apiserver on every pass, so two environments that claimed a host at the
  same moment are told apart within one drift-repair interval.

An environment whose host is refused keeps running without an Ingress: the condition
``HostAdmitted`` is ``False`` with the reason (``HostNotAllowed`` or ``HostTaken``), and
its ``url`` is the in-cluster Service's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from dockyard.core.conditions import Verdict
from dockyard.core.kube import KubeClient
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.environment import Environment
from dockyard.core.resources import INGRESSES, NAMESPACES
from dockyard.operator.apply import get, items
from dockyard.operator.builders.environment import INGRESS_HOST_LABEL, ingress_host_label

DOMAINS_ANNOTATION: Final = "dockyard.io/ingress-domains"


def within(host: str, domains: Iterable[str]) -> bool:
    """Whether ``host`` is one of ``domains``: ``*`` is any host, ``*.example.com`` any
    host under example.com (not example.com itself), anything else that host alone."""
    host = host.lower()
    for domain in (d.strip().lower() for d in domains):
        if domain == "*" or domain == host:
            return True
        if domain.startswith("*.") and host.endswith(domain[1:]) and len(host) > len(domain) - 1:
            return True
    return False


async def admission(
    kube: KubeClient, env: Environment, default_domains: Sequence[str]
) -> Verdict | None:
    """Whether ``env`` may publish its ``spec.ingress.host``; ``None`` without one."""
    if env.spec.ingress is None:
        return None
    host = env.spec.ingress.host
    namespace = env.metadata.namespace or ""
    domains = await _domains(kube, namespace, default_domains)
    if not within(host, domains):
        allowed = ", ".join(domains) if domains else "none"
        return Verdict(
            ConditionStatus.FALSE,
            "HostNotAllowed",
            f"Host {host} is not within the domains namespace {namespace} may publish "
            f"({allowed}); a cluster administrator grants domains with the Namespace "
            f"annotation {DOMAINS_ANNOTATION}.",
        )
    claim = f"{INGRESS_HOST_LABEL}={ingress_host_label(host)}"
    claims = await items(kube, INGRESSES, None, params={"labelSelector": claim})
    holder = first_claim(claims, env.metadata.uid or "")
    if holder is not None:
        # Another namespace's environment stays unnamed: its tenant's business.
        by = (
            f"environment {_controller(holder)}"
            if holder["metadata"].get("namespace") == namespace
            else "an environment in another namespace"
        )
        return Verdict(
            ConditionStatus.FALSE,
            "HostTaken",
            f"Host {host} is published by {by}, which claimed it first; choose another host.",
        )
    return Verdict(ConditionStatus.TRUE, "Admitted", f"Host {host} is this environment's.")


def first_claim(ingresses: Iterable[Mapping[str, Any]], uid: str) -> Mapping[str, Any] | None:
    """The Ingress of another environment that claimed the host before the one controlled
    by ``uid`` did (or at all, when it has none); ``None`` when the host is ``uid``'s."""
    live = [i for i in ingresses if not (i.get("metadata") or {}).get("deletionTimestamp")]
    ours = [i for i in live if _controller_uid(i) == uid]
    others = [i for i in live if _controller_uid(i) != uid]
    if not others:
        return None
    first = min(others, key=_claimed)
    if ours and _claimed(min(ours, key=_claimed)) < _claimed(first):
        return None
    return first


def _claimed(ingress: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = ingress.get("metadata") or {}
    # RFC 3339 UTC timestamps sort as strings.
    return (meta.get("creationTimestamp") or "", meta.get("namespace", ""), meta.get("name", ""))


def _controller_uid(ingress: Mapping[str, Any]) -> str | None:
    refs = (ingress.get("metadata") or {}).get("ownerReferences") or ()
    return next((r.get("uid") for r in refs if r.get("controller")), None)


def _controller(ingress: Mapping[str, Any]) -> str:
    refs = (ingress.get("metadata") or {}).get("ownerReferences") or ()
    return next((str(r.get("name")) for r in refs if r.get("controller")), "an unknown owner")


async def _domains(kube: KubeClient, namespace: str, default: Sequence[str]) -> list[str]:
    found = await get(kube, NAMESPACES.path(None, namespace))
    annotations = ((found or {}).get("metadata") or {}).get("annotations") or {}
    value = annotations.get(DOMAINS_ANNOTATION)
    if value is None:
        return list(default)
    return [d.strip() for d in value.split(",") if d.strip()]
