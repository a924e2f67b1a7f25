"""The children of an Environment, computed from its spec: pure functions, no I/O.

An environment runs as a ServiceAccount, a Deployment and a Service, fenced by a
NetworkPolicy; production adds a PodDisruptionBudget, a host adds an Ingress, and an
enabled database adds the Secret with its credentials. This module owns what each of
those looks like, the tier defaults (replicas, resources) that fill in what the spec
leaves unset, and which children must not exist for a given spec.

Every child is named after the environment (the database Secret gets a suffix), carries
the recommended labels plus ``dockyard.io/tier``, and is controlled by the environment
through an owner reference.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from dockyard.core.models.environment import DATABASE_URL_VARIABLE, Environment, Tier
from dockyard.core.models.workload import EnvVar
from dockyard.core.resources import (
    DEPLOYMENTS,
    INGRESSES,
    NETWORK_POLICIES,
    POD_DISRUPTION_BUDGETS,
    SECRETS,
    SERVICE_ACCOUNTS,
    SERVICES,
    ChildRef,
    Manifest,
    ResourceType,
)
from dockyard.operator.builders.metadata import (
    INSTANCE_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    NAME_LABEL,
    Owner,
    child_metadata,
    recommended_labels,
)
from dockyard.operator.builders.pods import restricted_container, restricted_pod
from dockyard.operator.builders.tiers import TIER_DEFAULTS as TIER_DEFAULTS  # for the tests
from dockyard.operator.builders.tiers import container_resources, desired_replicas

TIER_LABEL: Final = "dockyard.io/tier"
INGRESS_HOST_LABEL: Final = "dockyard.io/ingress-host"
CONTAINER_NAME: Final = "app"
PORT_NAME: Final = "http"
DATABASE_URI_KEY: Final = "uri"
# On the pod template: a digest of the database password, so that pods restart (and read
# DATABASE_URL afresh) when the credentials change, as environment variables from a
# Secret are read only when a container starts.
CREDENTIALS_ANNOTATION: Final = "dockyard.io/database-credentials"
# The label every namespace carries with its own name (Kubernetes 1.22+), by which the
# NetworkPolicy admits the ingress controller's namespace.
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"


@dataclass(frozen=True, slots=True)
class DesiredChildren:
    """The children an environment should have, in apply order, and those it should not."""

    present: tuple[Manifest, ...]
    absent: tuple[ChildRef, ...]


# -- names, labels and URLs --------------------------------------------------------------


def database_secret_name(environment: str) -> str:
    """Name of the Secret that holds an environment's database credentials."""
    return f"{environment}-database"


def labels(env: Environment) -> dict[str, str]:
    """The labels of every child of ``env``."""
    return recommended_labels(_owner(env).name, **{TIER_LABEL: env.spec.tier.value})


def selector(env: Environment) -> dict[str, str]:
    """The labels that pick out the environment's pods; immutable once a Deployment exists."""
    name = _owner(env).name
    return {NAME_LABEL: name, INSTANCE_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY}


def credentials_digest(password: str) -> str:
    """A short digest that changes with the password.

    It reveals nothing useful because the operator's passwords are 256 random bits; a
    weak password set by hand in the Secret would be guessable from it, as from any hash.
    """
    return hashlib.sha256(password.encode()).hexdigest()[:16]


def url(env: Environment, *, host_admitted: bool = True) -> str:
    """Where the service is reachable: its ingress host (when the environment may publish
    it), else its in-cluster Service."""
    if env.spec.ingress is not None and host_admitted:
        scheme = "https" if env.spec.ingress.tls_secret_name else "http"
        return f"{scheme}://{env.spec.ingress.host}"
    owner = _owner(env)
    return f"http://{owner.name}.{owner.namespace}.svc:{env.spec.port}"


# -- the children ------------------------------------------------------------------------


def service_account(env: Environment) -> Manifest:
    """The pods' identity; it gets no API token, as the service has no business with the API."""
    return child(env, SERVICE_ACCOUNTS, automountServiceAccountToken=False)


def container_env(env: Environment) -> list[Manifest]:
    """The container's variables: DATABASE_URL from the database Secret, then the spec's."""
    variables: list[Manifest] = []
    if env.spec.database.enabled:
        variables.append(
            {
                "name": DATABASE_URL_VARIABLE,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": database_secret_name(_owner(env).name),
                        "key": DATABASE_URI_KEY,
                    }
                },
            }
        )
    variables.extend(_env_var(var) for var in env.spec.env)
    return variables


def _env_var(var: EnvVar) -> Manifest:
    if var.value_from is not None:
        ref = var.value_from.secret_key_ref
        return {"name": var.name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
    return {"name": var.name, "value": var.value or ""}


def deployment(
    env: Environment, *, credentials_digest: str | None = None, autoscaled: bool = False
) -> Manifest:
    """The service's pods: restricted, probed on their port, sized by the spec or the tier.

    ``credentials_digest`` (of the database password) goes on the pod template, so that a
    new password rolls the pods. ``autoscaled`` (a ScalingPolicy's HPA sets the replicas)
    leaves ``spec.replicas`` out, so that applying does not undo the HPA's scaling; a
    suspended environment still applies 0, as suspension wins over autoscaling.
    """
    owner = _owner(env)
    template_metadata: Manifest = {"labels": labels(env)}
    if credentials_digest is not None:
        template_metadata["annotations"] = {CREDENTIALS_ANNOTATION: credentials_digest}
    container: Manifest = {
        "name": CONTAINER_NAME,
        "image": env.spec.image,
        "ports": [{"name": PORT_NAME, "containerPort": env.spec.port, "protocol": "TCP"}],
        "env": container_env(env),
        "resources": container_resources(env.spec),
        "readinessProbe": {
            "tcpSocket": {"port": PORT_NAME},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
        "securityContext": restricted_container(),
        # The root file system is read-only; most runtimes still need a scratch /tmp.
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108  # nosec B108
    }
    replicas = (
        {} if autoscaled and not env.spec.suspend else {"replicas": desired_replicas(env.spec)}
    )
    return child(
        env,
        DEPLOYMENTS,
        spec={
            **replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(env)},
            "template": {
                "metadata": template_metadata,
                "spec": {
                    "serviceAccountName": owner.name,
                    "automountServiceAccountToken": False,
                    # Service links put every Service of the namespace in the environment.
                    "enableServiceLinks": False,
                    "securityContext": restricted_pod(),
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    )


def service(env: Environment) -> Manifest:
    """A ClusterIP Service on the environment's port, in front of its pods."""
    port = {"name": PORT_NAME, "port": env.spec.port, "targetPort": PORT_NAME, "protocol": "TCP"}
    return child(
        env, SERVICES, spec={"type": "ClusterIP", "selector": selector(env), "ports": [port]}
    )


def pod_disruption_budget(env: Environment) -> Manifest | None:
    """Production only: voluntary disruptions (drains, upgrades) take one pod at a time."""
    if env.spec.tier is not Tier.PRODUCTION:
        return None
    # maxUnavailable rather than minAvailable: it keeps allowing drains when the
    # environment is scaled down or suspended.
    spec = {"maxUnavailable": 1, "selector": {"matchLabels": selector(env)}}
    return child(env, POD_DISRUPTION_BUDGETS, spec=spec)


def network_policy(env: Environment, *, ingress_namespace: str) -> Manifest:
    """Deny ingress to the pods but from the environment's own pods and the ingress controller."""
    ingress_namespace_labels = {NAMESPACE_NAME_LABEL: ingress_namespace}
    return child(
        env,
        NETWORK_POLICIES,
        spec={
            "podSelector": {"matchLabels": selector(env)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": selector(env)}}]},
                {
                    "from": [{"namespaceSelector": {"matchLabels": ingress_namespace_labels}}],
                    "ports": [{"protocol": "TCP", "port": env.spec.port}],
                },
            ],
        },
    )


def ingress(env: Environment) -> Manifest | None:
    """An Ingress for the spec's host, terminating TLS when it names a certificate Secret."""
    if env.spec.ingress is None:
        return None
    owner = _owner(env)
    host = env.spec.ingress.host
    spec: Manifest = {
        "rules": [
            {
                "host": host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {
                                "service": {"name": owner.name, "port": {"name": PORT_NAME}}
                            },
                        }
                    ]
                },
            }
        ]
    }
    if env.spec.ingress.tls_secret_name:
        spec["tls"] = [{"hosts": [host], "secretName": env.spec.ingress.tls_secret_name}]
    manifest = child(env, INGRESSES, spec=spec)
    # The claim on the host that other environments' passes find (environments.hosts).
    manifest["metadata"]["labels"][INGRESS_HOST_LABEL] = ingress_host_label(host)
    return manifest


def ingress_host_label(host: str) -> str:
    """The ``dockyard.io/ingress-host`` label value of ``host``: a digest, as a label holds
    at most 63 characters and a host up to 253."""
    return hashlib.sha256(host.lower().encode()).hexdigest()[:32]


def database_secret(env: Environment, data: Mapping[str, str]) -> Manifest:
    """The Secret with the database credentials (``DatabaseCredentials.secret_data()``).

    Written as ``data`` (base64) rather than ``stringData``: server-side apply tracks
    ownership of what is stored, and ``stringData`` is never stored.
    """
    encoded = {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}
    name = database_secret_name(_owner(env).name)
    return child(env, SECRETS, name, type="Opaque", data=encoded)


def workload_children(
    env: Environment,
    *,
    ingress_namespace: str,
    credentials_digest: str | None = None,
    autoscaled: bool = False,
    host_admitted: bool = True,
) -> DesiredChildren:
    """Every child but the database Secret (which the database step applies), in apply order.

    The NetworkPolicy comes before the Deployment so that no pod ever runs unfenced.
    The Ingress is absent when the environment may not publish its host
    (``host_admitted``, from ``dockyard.operator.environments.hosts``).
    A disabled database lists its Secret as absent; while the database is enabled the
    Secret is the database step's business, so it is in neither list.
    """
    owner = _owner(env)
    optional = {
        ("policy/v1", "PodDisruptionBudget"): pod_disruption_budget(env),
        ("networking.k8s.io/v1", "Ingress"): ingress(env) if host_admitted else None,
    }
    present = [
        service_account(env),
        network_policy(env, ingress_namespace=ingress_namespace),
        service(env),
        deployment(env, credentials_digest=credentials_digest, autoscaled=autoscaled),
        *(manifest for manifest in optional.values() if manifest is not None),
    ]
    absent = [
        ChildRef(api_version, kind, owner.name)
        for (api_version, kind), manifest in optional.items()
        if manifest is None
    ]
    if not env.spec.database.enabled:
        absent.append(ChildRef("v1", "Secret", database_secret_name(owner.name)))
    return DesiredChildren(present=tuple(present), absent=tuple(absent))


def _owner(env: Environment) -> Owner:
    return Owner.of(env)


def child(
    env: Environment, rtype: ResourceType, name: str | None = None, **fields: Any
) -> Manifest:
    """A child of ``env`` of type ``rtype``: named after it (or ``name``), with its labels
    and its owner reference, and ``fields`` beside ``metadata``."""
    owner = _owner(env)
    return {
        "apiVersion": rtype.api_version,
        "kind": rtype.kind,
        "metadata": child_metadata(owner, name or owner.name, labels(env)),
        **fields,
    }
