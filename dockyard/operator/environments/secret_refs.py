"""Which Secrets an Environment's variables may take values from.

An Environment's pods read every Secret its ``spec.env`` names. Kubernetes lets anyone
who can make pods in a namespace read its Secrets that way; Dockyard's developer role
cannot read Secrets, but it can write Environments, and the operator makes the pods. So
the Secrets Dockyard itself keeps in a tenant's namespace stay out of reach: another
environment's database credentials, a BackupStore's derived keys. Those carry
``app.kubernetes.io/managed-by: dockyard``; an environment may name one only when it is
its own (its controller is the environment). The tenant's own Secrets are theirs to use,
except ServiceAccount tokens (``kubernetes.io/service-account-token``): those are
credentials of another identity, with whatever RBAC it holds, and a pod that reads one
acts as that account (a CI account that may create pods or read Secrets, say).

A Secret that does not exist yet is fine (the pod waits for it, as Kubernetes has it),
unless its name is one Dockyard gives its own Secrets (``<environment>-database``,
``<store>-k-<16 hex digits>``): otherwise an environment could name production's before
production exists, and read it once Dockyard makes it.
"""

from __future__ import annotations

import asyncio
import re

from dockyard.core.kube import KubeClient
from dockyard.core.models.environment import Environment
from dockyard.core.resources import SECRETS
from dockyard.operator.apply import get
from dockyard.operator.builders.environment import database_secret_name
from dockyard.operator.builders.metadata import MANAGED_BY, MANAGED_BY_LABEL

# The type of a Secret holding a ServiceAccount's token: never a variable's source.
SERVICE_ACCOUNT_TOKEN = "kubernetes.io/service-account-token"  # noqa: S105  # nosec B105  # a type
# The names Dockyard gives the Secrets it keeps in a tenant's namespace: an environment's
# database credentials, and a store's derived keys (``stores.derived_secret_name``).
_DOCKYARDS_NAME = re.compile(rf".+{re.escape(database_secret_name(''))}|.+-k-[0-9a-f]{{16}}")


async def refused_secret(kube: KubeClient, env: Environment) -> str | None:
    """What is wrong with the first Secret ``env``'s variables may not name, as an
    invalid-spec message with its field path; ``None`` when every one may be named."""
    namespace, uid = env.metadata.namespace or "", env.metadata.uid or ""
    own = database_secret_name(env.metadata.name or "")
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
            if name == own or not _DOCKYARDS_NAME.fullmatch(name):
                continue  # not there yet: the pod waits for it, as Kubernetes has it
            return (
                f"spec.env[{index}].valueFrom.secretKeyRef.name: Secret {name} does not exist, "
                "and its name is one Dockyard gives the Secrets it keeps (an environment's "
                "database credentials, a backup store's keys): name it once it exists and is "
                "not Dockyard's"
            )
        meta = secret.get("metadata") or {}
        if secret.get("type") == SERVICE_ACCOUNT_TOKEN:
            return (
                f"spec.env[{index}].valueFrom.secretKeyRef.name: Secret {name} is a "
                "ServiceAccount token: an environment may not act as another account; give "
                "the workload what it needs another way"
            )
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
