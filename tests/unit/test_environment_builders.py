"""The children of an Environment, as the pure builders compute them from its spec."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from dockyard.core.models.environment import Environment, EnvironmentSpec, Tier
from dockyard.core.resources import ChildRef
from dockyard.operator.builders import environment as build

INGRESS_NAMESPACE = "ingress-nginx"


def _env(tier: str = "development", **spec: Any) -> Environment:
    image = "registry.example.com/shop:1.4.2"
    return Environment.model_validate(
        {
            "metadata": {"name": "shop", "namespace": "team-a", "uid": "uid-1", "generation": 1},
            "spec": {"tier": tier, "image": image, **spec},
        }
    )


def _children(env: Environment) -> list[dict[str, Any]]:
    desired = build.workload_children(env, ingress_namespace=INGRESS_NAMESPACE)
    secret = build.database_secret(env, {"password": "pw", "uri": "postgresql://x"})
    return [*desired.present, secret]


def _kinds(env: Environment) -> list[str]:
    return [m["kind"] for m in build.workload_children(env, ingress_namespace="x").present]


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


# -- every child -------------------------------------------------------------------------


@pytest.mark.parametrize("tier", ["development", "staging", "production"])
def test_every_child_is_controlled_by_the_environment(tier: str) -> None:
    for manifest in _children(_env(tier, ingress={"host": "shop.example.com"})):
        assert manifest["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "dockyard.io/v1alpha1",
                "kind": "Environment",
                "name": "shop",
                "uid": "uid-1",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ], manifest["kind"]
        assert manifest["metadata"]["namespace"] == "team-a"


def test_every_child_carries_the_recommended_labels_and_the_tier() -> None:
    for manifest in _children(_env("staging", ingress={"host": "shop.example.com"})):
        labels = dict(manifest["metadata"]["labels"])
        if manifest["kind"] == "Ingress":  # and its claim on the host
            assert labels.pop(build.INGRESS_HOST_LABEL) == build.ingress_host_label(
                "shop.example.com"
            )
        assert labels == {
            "app.kubernetes.io/name": "shop",
            "app.kubernetes.io/instance": "shop",
            "app.kubernetes.io/managed-by": "dockyard",
            "app.kubernetes.io/part-of": "dockyard",
            "dockyard.io/tier": "staging",
        }, manifest["kind"]


def test_children_are_applied_fence_first() -> None:
    assert _kinds(_env()) == [
        "ServiceAccount",
        "NetworkPolicy",
        "Service",
        "Deployment",
    ]


# -- the tier decides what the spec leaves open ------------------------------------------


@pytest.mark.parametrize(
    ("tier", "replicas"), [("development", 1), ("staging", 2), ("production", 3)]
)
def test_unset_replicas_follow_the_tier(tier: str, replicas: int) -> None:
    assert build.deployment(_env(tier))["spec"]["replicas"] == replicas


def test_set_replicas_win_over_the_tier() -> None:
    assert build.deployment(_env("production", replicas=5))["spec"]["replicas"] == 5


@pytest.mark.parametrize("replicas", [None, 4])
def test_a_suspended_environment_runs_no_pods(replicas: int | None) -> None:
    env = _env("staging", suspend=True, **({"replicas": replicas} if replicas else {}))

    assert build.deployment(env)["spec"]["replicas"] == 0


def test_unset_resources_follow_the_tier() -> None:
    assert _container(build.deployment(_env("production")))["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "2", "memory": "1Gi"},
    }


def test_resources_set_in_the_spec_are_taken_as_written_per_resource() -> None:
    env = _env("staging", resources={"limits": {"cpu": "40m"}, "requests": {"memory": "1Gi"}})

    # cpu: only a limit given, so no tier request (Kubernetes makes the request 40m);
    # memory: only a request given, so no tier limit.
    assert _container(build.deployment(env))["resources"] == {
        "requests": {"memory": "1Gi"},
        "limits": {"cpu": "40m"},
    }


def test_the_tier_defaults_are_the_ones_kubectl_explain_teaches() -> None:
    fields = EnvironmentSpec.model_fields
    replicas_doc = fields["replicas"].description or ""
    resources_doc = fields["resources"].description or ""
    for tier, defaults in build.TIER_DEFAULTS.items():
        assert f"{defaults.replicas} for {tier}" in replicas_doc
        requests = f"{tier} requests {defaults.requests['cpu']}"
        limits = f"{defaults.limits['cpu']} and {defaults.limits['memory']}"
        assert requests in resources_doc
        assert limits in resources_doc
    assert set(build.TIER_DEFAULTS) == set(Tier)


# -- the Deployment ----------------------------------------------------------------------


def test_pods_run_with_the_restricted_security_profile() -> None:
    pod = build.deployment(_env())["spec"]["template"]["spec"]
    container = _container(build.deployment(_env()))

    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == "shop"
    # a read-only root still gets a writable /tmp
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]  # noqa: S108


def test_pods_are_probed_for_readiness_on_their_port() -> None:
    container = _container(build.deployment(_env(port=9000)))

    assert container["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    assert container["readinessProbe"]["tcpSocket"] == {"port": "http"}


def test_the_selector_matches_the_pod_labels() -> None:
    spec = build.deployment(_env())["spec"]
    labels = spec["template"]["metadata"]["labels"]

    assert spec["selector"]["matchLabels"].items() <= labels.items()


def test_database_url_comes_from_the_database_secret() -> None:
    container = _container(build.deployment(_env()))

    assert container["env"][0] == {
        "name": "DATABASE_URL",
        "valueFrom": {"secretKeyRef": {"name": "shop-database", "key": "uri"}},
    }


def test_without_a_database_there_is_no_database_url() -> None:
    container = _container(build.deployment(_env(database={"enabled": False})))

    assert container["env"] == []


def test_spec_variables_keep_their_secret_references() -> None:
    env = _env(
        env=[
            {"name": "LOG_LEVEL", "value": "debug"},
            {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
        ],
        database={"enabled": False},
    )

    assert _container(build.deployment(env))["env"] == [
        {"name": "LOG_LEVEL", "value": "debug"},
        {"name": "API_TOKEN", "valueFrom": {"secretKeyRef": {"name": "api", "key": "token"}}},
    ]


def test_a_new_password_rolls_the_pods() -> None:
    first = build.deployment(_env(), credentials_digest=build.credentials_digest("one"))
    second = build.deployment(_env(), credentials_digest=build.credentials_digest("two"))

    def annotation(deployment: dict[str, Any]) -> str:
        return str(
            deployment["spec"]["template"]["metadata"]["annotations"][build.CREDENTIALS_ANNOTATION]
        )

    assert annotation(first) != annotation(second)
    assert "one" not in annotation(first)


# -- the other children ------------------------------------------------------------------


def test_the_service_account_gets_no_api_token() -> None:
    assert build.service_account(_env())["automountServiceAccountToken"] is False


def test_the_service_exposes_the_port_to_the_pods() -> None:
    service = build.service(_env(port=9000))

    assert service["spec"]["ports"] == [
        {"name": "http", "port": 9000, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == build.selector(_env())


@pytest.mark.parametrize("tier", ["development", "staging"])
def test_only_production_gets_a_disruption_budget(tier: str) -> None:
    assert build.pod_disruption_budget(_env(tier)) is None
    assert "PodDisruptionBudget" not in _kinds(_env(tier))
    assert (
        ChildRef("policy/v1", "PodDisruptionBudget", "shop")
        in build.workload_children(_env(tier), ingress_namespace="x").absent
    )


def test_production_takes_one_pod_at_a_time() -> None:
    pdb = build.pod_disruption_budget(_env("production"))

    assert pdb is not None
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": build.selector(_env())}}
    assert "PodDisruptionBudget" in _kinds(_env("production"))


def test_the_network_policy_admits_only_the_environment_and_the_ingress_controller() -> None:
    policy = build.network_policy(_env(port=9000), ingress_namespace="edge")

    assert policy["spec"]["policyTypes"] == ["Ingress"]
    assert policy["spec"]["podSelector"] == {"matchLabels": build.selector(_env())}
    own, controller = policy["spec"]["ingress"]
    assert own == {"from": [{"podSelector": {"matchLabels": build.selector(_env())}}]}
    assert controller == {
        "from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "edge"}}}],
        "ports": [{"protocol": "TCP", "port": 9000}],
    }


def test_no_host_no_ingress() -> None:
    assert build.ingress(_env()) is None
    assert "Ingress" not in _kinds(_env())
    assert (
        ChildRef("networking.k8s.io/v1", "Ingress", "shop")
        in build.workload_children(_env(), ingress_namespace="x").absent
    )


def test_a_host_gets_an_ingress_to_the_service() -> None:
    ingress = build.ingress(_env(ingress={"host": "shop.example.com"}))

    assert ingress is not None
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == "shop.example.com"
    assert rule["http"]["paths"][0]["backend"] == {
        "service": {"name": "shop", "port": {"name": "http"}}
    }
    assert "tls" not in ingress["spec"]


def test_the_ingress_carries_its_claim_on_the_host() -> None:
    ingress = build.ingress(_env(ingress={"host": "shop.example.com"}))

    assert ingress is not None
    label = ingress["metadata"]["labels"][build.INGRESS_HOST_LABEL]
    assert label == build.ingress_host_label("Shop.Example.com")
    assert len(label) == 32
    assert label != build.ingress_host_label("shop.example.org")


def test_a_host_the_environment_may_not_publish_gets_no_ingress() -> None:
    desired = build.workload_children(
        _env(ingress={"host": "shop.example.com"}), ingress_namespace="x", host_admitted=False
    )

    assert ChildRef("networking.k8s.io/v1", "Ingress", "shop") in desired.absent
    assert "Ingress" not in [m["kind"] for m in desired.present]


def test_a_tls_secret_terminates_tls_for_the_host() -> None:
    ingress = build.ingress(_env(ingress={"host": "shop.example.com", "tlsSecretName": "cert"}))

    assert ingress is not None
    assert ingress["spec"]["tls"] == [{"hosts": ["shop.example.com"], "secretName": "cert"}]


def test_the_database_secret_holds_the_credentials_base64_encoded() -> None:
    secret = build.database_secret(_env(), {"username": "env_x", "password": "p@ss"})

    assert secret["type"] == "Opaque"
    assert secret["metadata"]["name"] == "shop-database"
    assert {k: base64.b64decode(v).decode() for k, v in secret["data"].items()} == {
        "username": "env_x",
        "password": "p@ss",
    }
    assert "stringData" not in secret


def test_a_disabled_database_has_its_secret_removed() -> None:
    without = build.workload_children(_env(database={"enabled": False}), ingress_namespace="x")
    with_db = build.workload_children(_env(), ingress_namespace="x")

    assert ChildRef("v1", "Secret", "shop-database") in without.absent
    assert all(ref.kind != "Secret" for ref in with_db.absent)


def test_an_environment_never_stored_has_no_children() -> None:
    unsaved = Environment.model_validate({"spec": {"tier": "development", "image": "shop:1"}})

    with pytest.raises(ValueError, match="no name, namespace or uid"):
        build.deployment(unsaved)
