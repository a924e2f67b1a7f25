"""Which Secrets an Environment's variables may take values from.

An Environment's pods read every Secret its ``spec.env`` names. Kubernetes lets anyone
who can make pods in a namespace read its Secrets that way; Dockyard's developer role
cannot read Secrets, but it can write Environments, and the operator makes the pods. So
the Secrets Dockyard itself keeps in a tenant's namespace stay out of reach: another
environment's database credentials, a BackupStore's derived keys. Those carry
``app.kubernetes.io/managed-by: dockyard``; an environment may name one only when it is
its own (its controller is the environment). The tenant's own Secrets are theirs to use.
"""

from __future__ import annotations

import asyncio

from dockyard.core.kube import KubeClient
from dockyard.core.models.environment import Environment
from dockyard.core.resources import SECRETS
from dockyard.operator.apply import get
from dockyard.operator.builders.metadata import MANAGED_BY, MANAGED_BY_LABEL


async def refused_secret(kube: KubeClient, env: Environment) -> str | None:
    """What is wrong with the first Secret ``env``'s variables may not name, as an
    invalid-spec message with its field path; ``None`` when every one may be named."""
    namespace, uid = env.metadata.namespace or "", env.metadata.uid or ""
    refs = [
        (index, var.value_from.secret_key_ref.name)
        for index, var in enumerate(env.spec.env)
        if var.value_from is not None
    ]
    names = sorted({name for _, name in refs})
    found = await asyncio.gather(*(get(kube, SECRETS.path(namespace, name)) for name in names))
    secrets = dict(zip(names, found, strict=True))
    for index, name in refs:
        secret = secrets[name]
        if secret is None:
            continue  # not there yet: the pod waits for it, as Kubernetes has it
        meta = secret.get("metadata") or {}
        if (meta.get("labels") or {}).get(MANAGED_BY_LABEL) != MANAGED_BY:
            continue
        controllers = [
            ref.get("uid") for ref in meta.get("ownerReferences") or () if ref.get("controller")
        ]
        if uid and uid in controllers:
            continue
        return (
            f"spec.env[{index}].valueFrom.secretKeyRef.name: Secret {name} is kept by Dockyard "
            "for something else (another environment's database credentials, a backup "
            "store's keys): an environment takes values only from its own or from Secrets "
            "Dockyard does not manage"
        )
    return None
