"""An operator started while namespaces it watches are being deleted still serves the
namespaces that come after.

Why this is worth a test: with ``kopf.index`` on ScalingPolicies, Kopf held back every
handler until each indexed resource had been listed in every watched namespace (and
each listed policy processed); a namespace deleted in that window left the gate closed
for good, and CI saw whole operator test modules fail with a log showing only
"Unprocessed streams left". The operator no longer uses an index. This test exercises
the churn; the exact window is narrow, so it does not reproduce the old failure every
time.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import Kubectl, get_json, start_operator, stop_operator, wait_for

pytestmark = pytest.mark.usefixtures("crds_installed")

IMAGE = "registry.example.com/shop/api:1.4.2"


def _objects(namespace: str) -> str:
    def doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }

    env = {"tier": "development", "image": IMAGE, "database": {"enabled": False}}
    return yaml.safe_dump_all(
        [
            doc("Environment", "shop", env),
            doc(
                "ScalingPolicy",
                "shop",
                {"targetRef": {"name": "shop"}, "minReplicas": 1, "maxReplicas": 3},
            ),
        ]
    )


def test_an_operator_started_among_terminating_namespaces_serves_new_ones(
    kubectl: Kubectl, testbed_env: dict[str, str], tmp_path: Path
) -> None:
    pattern = f"churn-{uuid.uuid4().hex[:6]}"
    doomed = [f"{pattern}-old-{i}" for i in range(16)]
    for name in doomed:
        kubectl("create", "namespace", name)
        kubectl("apply", "-f", "-", input=_objects(name))
    log = tmp_path / "operator.log"
    operator = start_operator(
        f"{pattern}-*", {**testbed_env, "DOCKYARD_SCALING_INTERVAL": "2"}, log
    )
    fresh = f"{pattern}-new"
    try:
        # Deleted one by one while the operator starts, discovers and lists them, so
        # some go before it sees them, some while it lists them, some after.
        for name in doomed:
            kubectl("delete", "namespace", name, "--wait=false")
            time.sleep(0.15)
        kubectl("create", "namespace", fresh)
        kubectl("apply", "-f", "-", input=_objects(fresh))

        def served() -> bool:
            env = get_json(kubectl, "environment", "shop", "-n", fresh)
            policy = get_json(kubectl, "scalingpolicy", "shop", "-n", fresh)
            env_status: dict[str, Any] = dict(env.get("status") or {})  # type: ignore[call-overload]
            policy_status: dict[str, Any] = dict(policy.get("status") or {})  # type: ignore[call-overload]
            return env_status.get("observedGeneration") == 1 and bool(
                policy_status.get("conditions")
            )

        try:
            wait_for(served, timeout=90)
        except AssertionError:
            raise AssertionError(f"operator log:\n{log.read_text()[-4000:]}") from None
    finally:
        kubectl("delete", "environments,scalingpolicies", "--all", "-n", fresh, check=False)
        kubectl("delete", "namespace", fresh, "--wait=false", check=False)
        stop_operator(operator)
