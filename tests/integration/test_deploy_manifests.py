"""The deploy/ overlays render, pass the real apiserver's validation and admission (a
server dry run, Pod Security `restricted` included), and keep the promises of
docs/deployment.md: restricted pods with requests and limits, secrets only by
reference, HTTPS in staging and production, a pinned and highly available production.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from dockyard.api.auth import AUDIT_SINK_PATH
from dockyard.core import crds
from dockyard.core.settings import Mode, Settings
from tests.conftest import ROOT, Kubectl

Manifest = dict[str, Any]

OVERLAYS = ("development", "staging", "production")
NAMESPACE = "dockyard-system"
IMAGE = "ghcr.io/dockyard/dockyard"
PLATFORM_SECRET = "dockyard-platform"
SECRET_SETTINGS = {
    "DOCKYARD_DATABASE_URL": "database-url",
    "DOCKYARD_MIGRATION_DATABASE_URL": "migration-database-url",
    "DOCKYARD_REDIS_URL": "redis-url",
    "DOCKYARD_MANAGED_POSTGRES_URL": "managed-postgres-url",
    "DOCKYARD_CURSOR_KEY": "cursor-key",
}
OPTIONAL_SECRET_SETTINGS = {"DOCKYARD_AUDIT_SINK_TOKEN": "audit-sink-token"}
"""Read when the Secret has the key: the audit sink is off without it."""
WORKLOADS = ("Deployment", "StatefulSet")
# Left out of manifests/Kustomization on purpose: the operator stamps it out per namespace.
TEMPLATE_MANIFESTS = {"backup-runner-rbac.yaml"}


@pytest.fixture(scope="module")
def rendered(kubectl: Kubectl) -> dict[str, str]:
    """Each overlay as `kubectl kustomize` renders it."""
    return {
        overlay: kubectl("kustomize", str(ROOT / "deploy" / "overlays" / overlay)).stdout
        for overlay in OVERLAYS
    }


@pytest.fixture(scope="module")
def objects(rendered: dict[str, str]) -> dict[str, list[Manifest]]:
    return {overlay: list(yaml.safe_load_all(text)) for overlay, text in rendered.items()}


@pytest.fixture(scope="module")
def platform_namespace(kubectl: Kubectl, crds_installed: None) -> str:
    """The platform namespace, applied for real: a server dry run of namespaced objects
    needs it. Never deleted: other tests and sessions may use it."""
    kubectl("apply", "-f", str(ROOT / "manifests" / "namespace.yaml"))
    return NAMESPACE


def _one(objects: list[Manifest], kind: str, name: str) -> Manifest:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def _configmap(objects: list[Manifest], prefix: str) -> dict[str, str]:
    """The data of the generated ConfigMap ``prefix-<hash>``."""
    (found,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap"
        and re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", o["metadata"]["name"])
    ]
    data: dict[str, str] = found["data"]
    return data


def _pod_specs(objects: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for o in objects:
        if o["kind"] in WORKLOADS:
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]


def _containers(pod: Manifest) -> list[Manifest]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def _container(objects: list[Manifest], deployment: str, name: str) -> Manifest:
    pod = _one(objects, "Deployment", deployment)["spec"]["template"]["spec"]
    (found,) = [c for c in _containers(pod) if c["name"] == name]
    return found


def _quantity(value: str) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


def _api_config(objects: list[Manifest]) -> dict[str, str]:
    return _configmap(objects, "dockyard-api-config")


# -- the apiserver accepts every overlay ---------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_apiserver_accepts_every_object_and_pod_security_has_nothing_to_say(
    kubectl: Kubectl,
    rendered: dict[str, str],
    objects: dict[str, list[Manifest]],
    platform_namespace: str,
    overlay: str,
) -> None:
    result = kubectl("apply", "--dry-run=server", "-f", "-", input=rendered[overlay], check=False)
    assert result.returncode == 0, result.stderr
    # The namespace enforces the restricted level; workloads get warnings, not refusals,
    # at this stage, so a warning is the failure.
    assert "PodSecurity" not in result.stderr, result.stderr
    assert len(result.stdout.splitlines()) == len(objects[overlay])


# -- what every overlay promises -----------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_restricted_on_a_read_only_root(
    objects: dict[str, list[Manifest]], overlay: str
) -> None:
    for workload, pod in _pod_specs(objects[overlay]):
        pod_context = pod.get("securityContext", {})
        assert pod_context.get("seccompProfile") == {"type": "RuntimeDefault"}, workload
        for container in _containers(pod):
            where = f"{workload}/{container['name']}"
            context = container["securityContext"]
            assert context.get("runAsNonRoot", pod_context.get("runAsNonRoot")) is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_cpu_and_memory_requests_and_limits(
    objects: dict[str, list[Manifest]], overlay: str
) -> None:
    for workload, pod in _pod_specs(objects[overlay]):
        for container in _containers(pod):
            resources = container["resources"]
            for bound in ("requests", "limits"):
                assert set(resources[bound]) == {"cpu", "memory"}, (workload, container["name"])
            for resource in ("cpu", "memory"):
                assert _quantity(resources["requests"][resource]) <= _quantity(
                    resources["limits"][resource]
                )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_secrets_reach_the_pods_only_by_reference(
    objects: dict[str, list[Manifest]], overlay: str
) -> None:
    assert not [o for o in objects[overlay] if o["kind"] == "Secret"]
    credential = re.compile(r"://[^/\s]*@|password|secret|token", re.IGNORECASE)
    for workload, pod in _pod_specs(objects[overlay]):
        for container in _containers(pod):
            for var in container.get("env", []):
                if "value" in var:
                    assert not credential.search(var["value"]), (workload, var["name"])
                    assert var["name"] not in SECRET_SETTINGS, (workload, var["name"])
                elif "fieldRef" in var["valueFrom"]:  # the pod's own name, for the Lease
                    assert var["valueFrom"]["fieldRef"] == {"fieldPath": "metadata.name"}
                else:
                    assert set(var["valueFrom"]) == {"secretKeyRef"}, (workload, var["name"])
            for var in container.get("env", []):
                if var["name"] in SECRET_SETTINGS:
                    assert var["valueFrom"]["secretKeyRef"] == {
                        "name": PLATFORM_SECRET,
                        "key": SECRET_SETTINGS[var["name"]],
                    }
                if var["name"] in OPTIONAL_SECRET_SETTINGS:
                    assert var["valueFrom"]["secretKeyRef"] == {
                        "name": PLATFORM_SECRET,
                        "key": OPTIONAL_SECRET_SETTINGS[var["name"]],
                        "optional": True,
                    }
    for o in objects[overlay]:
        if o["kind"] == "ConfigMap":
            assert not set(o["data"]) & SECRET_SETTINGS.keys()
            assert not [v for v in o["data"].values() if credential.search(v)]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_setting_given_to_dockyard_is_one_it_knows_with_a_valid_value(
    objects: dict[str, list[Manifest]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    configmaps = {
        o["metadata"]["name"]: o["data"] for o in objects[overlay] if o["kind"] == "ConfigMap"
    }
    stand_ins = {
        "DOCKYARD_DATABASE_URL": "postgresql://dockyard@db:5432/dockyard",
        "DOCKYARD_MIGRATION_DATABASE_URL": "postgresql://owner@db:5432/dockyard",
        "DOCKYARD_AUDIT_SINK_TOKEN": "a stand-in token",
        "DOCKYARD_REDIS_URL": "redis://redis:6379/0",
        "DOCKYARD_MANAGED_POSTGRES_URL": "postgresql://admin@db:5432/postgres",
        "DOCKYARD_CURSOR_KEY": "a stand-in of at least 32 characters",
    }
    for deployment in ("dockyard-api", "dockyard-operator"):
        pod = _one(objects[overlay], "Deployment", deployment)["spec"]["template"]["spec"]
        for container in _containers(pod):
            env: dict[str, str] = {}
            for source in container.get("envFrom", []):
                env.update(configmaps[source["configMapRef"]["name"]])
            for var in container.get("env", []):
                env[var["name"]] = var.get("value", stand_ins.get(var["name"], ""))
            for name in env:
                if name.startswith("DOCKYARD_"):
                    # Settings ignores unknown variables: a misspelt one would do nothing.
                    assert name.removeprefix("DOCKYARD_").lower() in Settings.model_fields, name
            with monkeypatch.context() as patched:
                for name in [n for n in os.environ if n.startswith("DOCKYARD_")]:
                    patched.delenv(name)
                for name, value in env.items():
                    patched.setenv(name, value)
                settings = Settings()
            if overlay != "development" and container["name"] == "api":
                assert settings.mode is Mode.PRODUCTION
                assert settings.tls_cert_file is not None


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_and_the_operator_have_their_probes(
    objects: dict[str, list[Manifest]], overlay: str
) -> None:
    api = _container(objects[overlay], "dockyard-api", "api")
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert ports == {
        "http": 8080,
        "metrics": int(_api_config(objects[overlay])["DOCKYARD_METRICS_PORT"]),
    }
    operator = _container(objects[overlay], "dockyard-operator", "operator")
    operator_port = _configmap(objects[overlay], "dockyard-operator-config")[
        "DOCKYARD_OPERATOR_METRICS_PORT"
    ]
    assert operator["ports"] == [
        {"name": "metrics", "containerPort": int(operator_port), "protocol": "TCP"}
    ]
    assert operator["livenessProbe"]["httpGet"]["port"] == "metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_migrates_first_and_two_operators_share_a_lease_and_the_backups_volume(
    objects: dict[str, list[Manifest]], overlay: str
) -> None:
    migrate = _container(objects[overlay], "dockyard-api", "migrate")
    assert migrate["args"] == ["migrate"]
    operator = _one(objects[overlay], "Deployment", "dockyard-operator")
    # One leads, one stands by; a rolling update starts the new one before the old goes.
    assert operator["spec"]["replicas"] == 2
    assert operator["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    budget = _one(objects[overlay], "PodDisruptionBudget", "dockyard-operator")
    assert budget["spec"]["maxUnavailable"] == 1
    env = {
        e["name"]: e for e in _container(objects[overlay], "dockyard-operator", "operator")["env"]
    }
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    pod = operator["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "dockyard-operator"
    root = _configmap(objects[overlay], "dockyard-operator-config")["DOCKYARD_BACKUP_ROOT"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes[mounts[root]]["persistentVolumeClaim"]["claimName"]
    assert _one(objects[overlay], "PersistentVolumeClaim", claim)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_runner_jobs_use_the_image_the_api_and_the_operator_run(
    objects: dict[str, list[Manifest]], overlay: str
) -> None:
    images = {
        container["image"]
        for _, pod in _pod_specs(objects[overlay])
        for container in _containers(pod)
        if container["image"].startswith(IMAGE)
    }
    runner = _configmap(objects[overlay], "dockyard-operator-config")["DOCKYARD_RUNNER_IMAGE"]
    assert images == {runner}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_image_floats_on_latest(objects: dict[str, list[Manifest]], overlay: str) -> None:
    for workload, pod in _pod_specs(objects[overlay]):
        for container in _containers(pod):
            image = container["image"]
            assert re.search(r"(:[\w.-]+|@sha256:[0-9a-f]{64})$", image), (workload, image)
            assert not image.endswith(":latest"), (workload, image)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_namespaced_lives_in_the_platform_namespace(
    kubectl: Kubectl, objects: dict[str, list[Manifest]], overlay: str
) -> None:
    listed = kubectl("api-resources", "--namespaced=false", "--no-headers").stdout
    cluster_scoped = {line.split()[-1] for line in listed.splitlines() if line.strip()}
    for o in objects[overlay]:
        namespace = o["metadata"].get("namespace")
        if o["kind"] in cluster_scoped:
            assert namespace is None, (o["kind"], o["metadata"]["name"])
        else:
            assert namespace == NAMESPACE, (o["kind"], o["metadata"]["name"])
    assert _configmap(objects[overlay], "dockyard-config")["DOCKYARD_NAMESPACE"] == NAMESPACE
    assert Settings.model_fields["namespace"].default == NAMESPACE
    namespace_object = _one(objects[overlay], "Namespace", NAMESPACE)
    assert namespace_object["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_dockyards_pods_run_as_the_images_user_under_their_service_accounts(
    objects: dict[str, list[Manifest]], overlay: str
) -> None:
    (user,) = re.findall(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.M)
    accounts = {o["metadata"]["name"] for o in objects[overlay] if o["kind"] == "ServiceAccount"}
    for name in ("dockyard-api", "dockyard-operator"):
        pod = _one(objects[overlay], "Deployment", name)["spec"]["template"]["spec"]
        context = pod["securityContext"]
        assert (str(context["runAsUser"]), str(context["runAsGroup"])) == user
        # Each runs as the ServiceAccount of the same name, which the overlay creates.
        assert pod["serviceAccountName"] == name
        assert name in accounts


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_api_takes_traffic_only_from_the_ingress_controller_and_the_scraper(
    objects: dict[str, list[Manifest]], overlay: str
) -> None:
    policy = _one(objects[overlay], "NetworkPolicy", "dockyard-api")
    api = _one(objects[overlay], "Deployment", "dockyard-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    ingress_namespace = _configmap(objects[overlay], "dockyard-operator-config")[
        "DOCKYARD_INGRESS_NAMESPACE"
    ]
    sources = {
        rule["ports"][0]["port"]: rule["from"][0]["namespaceSelector"]["matchLabels"]
        for rule in policy["spec"]["ingress"]
    }
    assert sources == {
        "http": {"kubernetes.io/metadata.name": ingress_namespace},
        "metrics": {"kubernetes.io/metadata.name": "monitoring"},
    }


@pytest.mark.parametrize("overlay", ["staging", "production"])
def test_the_audit_sink_is_reachable_as_shipped(
    objects: dict[str, list[Manifest]], overlay: str
) -> None:
    """The apiserver's audit webhook (manifests/audit/) reaches the API as deployed: the
    Service's port and the sink's route over HTTPS, checked against the Service's
    name, with the token the API reads, through a NetworkPolicy that admits the
    control plane on that port. Without all of them kubectl writes reach no trail."""
    audit = ROOT / "manifests" / "audit"
    [cluster] = yaml.safe_load((audit / "webhook-kubeconfig.yaml").read_text())["clusters"]
    url = urlsplit(cluster["cluster"]["server"])
    service = _one(objects[overlay], "Service", "dockyard-api")
    [port] = [p for p in service["spec"]["ports"] if p["name"] == "http"]
    assert (url.scheme, url.port, url.path) == ("https", port["port"], AUDIT_SINK_PATH)
    assert url.hostname == "replace_with_dockyard_api_cluster_ip"  # an IP: no resolver
    assert cluster["cluster"]["tls-server-name"] == f"dockyard-api.{NAMESPACE}.svc"
    api = _container(objects[overlay], "dockyard-api", "api")
    [token] = [v for v in api["env"] if v["name"] == "DOCKYARD_AUDIT_SINK_TOKEN"]
    assert token["valueFrom"]["secretKeyRef"]["key"] == "audit-sink-token"
    policy = yaml.safe_load((audit / "networkpolicy.yaml").read_text())
    labels = _one(objects[overlay], "Deployment", "dockyard-api")["spec"]["template"]["metadata"]
    assert policy["metadata"]["namespace"] == NAMESPACE
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels["labels"].items()
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert list(rule["from"][0]) == ["ipBlock"]


# -- how the overlays differ ---------------------------------------------------------------


def test_production_runs_several_api_replicas_under_a_disruption_budget(
    objects: dict[str, list[Manifest]],
) -> None:
    production = objects["production"]
    api = _one(production, "Deployment", "dockyard-api")
    replicas = api["spec"]["replicas"]
    assert replicas >= 2
    budget = _one(production, "PodDisruptionBudget", "dockyard-api")
    labels = api["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert 1 <= budget["spec"]["maxUnavailable"] < replicas
    spread = {
        c["topologyKey"] for c in api["spec"]["template"]["spec"]["topologySpreadConstraints"]
    }
    assert spread == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}


def test_production_pins_the_image_by_digest(objects: dict[str, list[Manifest]]) -> None:
    for _, pod in _pod_specs(objects["production"]):
        for container in _containers(pod):
            assert re.fullmatch(rf"{IMAGE}@sha256:[0-9a-f]{{64}}", container["image"])


@pytest.mark.parametrize("overlay", ["staging", "production"])
def test_staging_and_production_serve_https_only(
    objects: dict[str, list[Manifest]], overlay: str
) -> None:
    config = _api_config(objects[overlay])
    assert config["DOCKYARD_MODE"] == "production"
    assert int(config["DOCKYARD_HSTS_MAX_AGE"]) > 0
    api = _container(objects[overlay], "dockyard-api", "api")
    pod = _one(objects[overlay], "Deployment", "dockyard-api")["spec"]["template"]["spec"]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    mounts = {m["name"]: m["mountPath"] for m in api["volumeMounts"]}
    (tls_volume,) = [name for name, secret in secrets.items() if secret == "dockyard-api-tls"]
    for setting, file in (
        ("DOCKYARD_TLS_CERT_FILE", "tls.crt"),
        ("DOCKYARD_TLS_KEY_FILE", "tls.key"),
    ):
        assert config[setting] == f"{mounts[tls_volume]}/{file}"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert api[probe]["httpGet"]["scheme"] == "HTTPS"
    for origin in yaml.safe_load(config["DOCKYARD_CORS_ORIGINS"]):
        assert origin.startswith("https://")


@pytest.mark.parametrize("overlay", ["staging", "production"])
def test_staging_and_production_trust_the_ingress_controllers_pod_network(
    objects: dict[str, list[Manifest]], overlay: str
) -> None:
    """Behind the ingress every client has the controller's address; without trusting it,
    one shared per-address budget would let anyone exhaust it for everyone."""
    networks = [
        ip_network(n) for n in json.loads(_api_config(objects[overlay])["DOCKYARD_TRUSTED_PROXIES"])
    ]
    assert networks, f"{overlay} sets no DOCKYARD_TRUSTED_PROXIES"
    for network in networks:
        # the pod network of a cluster, never "everyone"
        assert network.is_private, network
        assert network.prefixlen >= 8, network


def test_development_serves_plaintext_with_a_frontend_dev_server_allowed(
    objects: dict[str, list[Manifest]],
) -> None:
    config = _api_config(objects["development"])
    assert config["DOCKYARD_MODE"] == "development"
    assert "DOCKYARD_TLS_CERT_FILE" not in config
    assert "http://localhost:3000" in yaml.safe_load(config["DOCKYARD_CORS_ORIGINS"])
    api = _container(objects["development"], "dockyard-api", "api")
    assert api["readinessProbe"]["httpGet"]["scheme"] == "HTTP"


def test_the_overlays_differ_in_size_logs_and_hsts_as_documented(
    objects: dict[str, list[Manifest]],
) -> None:
    replicas = {
        overlay: _one(objects[overlay], "Deployment", "dockyard-api")["spec"]["replicas"]
        for overlay in OVERLAYS
    }
    assert replicas == {"development": 1, "staging": 2, "production": 3}
    levels = {
        overlay: _configmap(objects[overlay], "dockyard-config")["DOCKYARD_LOG_LEVEL"]
        for overlay in OVERLAYS
    }
    assert levels == {"development": "DEBUG", "staging": "INFO", "production": "INFO"}
    hsts = {
        overlay: int(_api_config(objects[overlay])["DOCKYARD_HSTS_MAX_AGE"])
        for overlay in ("staging", "production")
    }
    assert hsts == {"staging": 300, "production": 31_536_000}
    memory = [
        _quantity(
            _container(objects[overlay], "dockyard-api", "api")["resources"]["requests"]["memory"]
        )
        for overlay in OVERLAYS
    ]
    assert memory == sorted(memory)
    assert memory[0] < memory[-1]
    tags = {
        overlay: _container(objects[overlay], "dockyard-api", "api")["image"]
        for overlay in ("development", "staging")
    }
    assert tags == {"development": f"{IMAGE}:dev", "staging": f"{IMAGE}:0.1.0"}


def test_only_development_runs_its_own_postgres_and_redis(
    objects: dict[str, list[Manifest]],
) -> None:
    for overlay in OVERLAYS:
        dev_only = [
            o["metadata"]["name"]
            for o in objects[overlay]
            if o["metadata"].get("labels", {}).get("dockyard.io/dev-only") == "true"
        ]
        if overlay == "development":
            assert set(dev_only) == {"dockyard-dev-postgres", "dockyard-dev-redis"}
            postgres = _one(objects[overlay], "StatefulSet", "dockyard-dev-postgres")
            image = postgres["spec"]["template"]["spec"]["containers"][0]["image"]
            # The image's pg_dump is postgresql-client-15: the dev server has that major.
            assert re.search(r":15(-|$)", image), image
        else:
            assert dev_only == []


def test_only_the_api_reaches_the_development_redis(objects: dict[str, list[Manifest]]) -> None:
    """Tenants' pods share the cluster: none may connect to the API's Redis."""
    development = objects["development"]
    policy = _one(development, "NetworkPolicy", "dockyard-dev-redis")
    redis = _one(development, "Deployment", "dockyard-dev-redis")
    api = _one(development, "Deployment", "dockyard-api")
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected.items() <= redis["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    [source] = rule["from"]
    assert set(source) == {"podSelector"}  # this namespace's pods only
    assert source["podSelector"]["matchLabels"].items() <= (
        api["spec"]["template"]["metadata"]["labels"].items()
    )
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]


# -- the repository's kustomizations and the kind script -------------------------------------


def _kustomization_resources(directory: Path) -> set[str]:
    document = yaml.safe_load((directory / "Kustomization").read_text())
    return set(document["resources"])


def test_the_crd_base_lists_every_generated_crd() -> None:
    assert _kustomization_resources(ROOT / "crds") == set(crds.render_all())


def test_the_manifests_base_lists_every_manifest_but_the_runner_template() -> None:
    shipped = {path.name for path in (ROOT / "manifests").glob("*.yaml")}
    assert _kustomization_resources(ROOT / "manifests") == shipped - TEMPLATE_MANIFESTS


def test_the_secrets_to_create_are_documented(objects: dict[str, list[Manifest]]) -> None:
    guide = (ROOT / "docs" / "deployment.md").read_text()
    referenced: set[str] = set()
    for overlay in ("staging", "production"):
        for _, pod in _pod_specs(objects[overlay]):
            referenced |= {
                v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v
            }
            for container in _containers(pod):
                for var in container.get("env", []):
                    if "secretKeyRef" in var.get("valueFrom", {}):
                        ref = var["valueFrom"]["secretKeyRef"]
                        referenced.add(ref["name"])
                        assert f"`{ref['key']}`" in guide, ref
    for name in referenced:
        assert f"`{name}`" in guide, name


def test_kind_up_without_docker_says_so_in_one_line_and_exits_2(tmp_path: Path) -> None:
    # A PATH with what the script needs to start, but neither docker nor kind.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    result = subprocess.run(
        [str(bin_dir / "bash"), str(ROOT / "scripts" / "kind-up.sh")],
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "docker" in line
    assert "kind" in line
