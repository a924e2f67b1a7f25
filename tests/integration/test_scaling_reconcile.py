"""The operator reconciles ScalingPolicies into HPAs on the real control plane, whose
kube-controller-manager runs the HPA controller (without a metrics server, so the HPAs
cannot read utilization, but they do hold their floor and their pin)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from dockyard.operator.scaling.targets import HANDOVER_MANAGER
from tests.conftest import Kubectl, wait_for

pytestmark = pytest.mark.usefixtures("operator_process")

IMAGE = "registry.example.com/shop/api:1.4.2"


def _apply(kubectl: Kubectl, namespace: str, kind: str, name: str, spec: dict[str, Any]) -> None:
    manifest = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def _environment(kubectl: Kubectl, namespace: str, name: str = "shop", replicas: int = 1) -> None:
    spec = {"tier": "staging", "image": IMAGE, "replicas": replicas, "database": {"enabled": False}}
    _apply(kubectl, namespace, "Environment", name, spec)


def _policy(
    kubectl: Kubectl, namespace: str, name: str = "shop", target: str = "shop", **spec: Any
) -> None:
    body = {"targetRef": {"name": target}, "minReplicas": 1, "maxReplicas": 5, **spec}
    _apply(kubectl, namespace, "ScalingPolicy", name, body)


def _get(kubectl: Kubectl, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    result = kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        assert "NotFound" in result.stderr, result.stderr
        return None
    return dict(json.loads(result.stdout))


def _status(kubectl: Kubectl, namespace: str, name: str = "shop") -> dict[str, Any]:
    return dict((_get(kubectl, namespace, "scalingpolicy", name) or {}).get("status") or {})


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", ()) if c["type"] == kind), {})


def _hpa_range(kubectl: Kubectl, namespace: str, name: str = "shop") -> tuple[int, int] | None:
    hpa = _get(kubectl, namespace, "hpa", name)
    if hpa is None:
        return None
    return hpa["spec"].get("minReplicas"), hpa["spec"]["maxReplicas"]


def _deployment_replicas(kubectl: Kubectl, namespace: str, name: str = "shop") -> int | None:
    deployment = _get(kubectl, namespace, "deployment", name)
    return None if deployment is None else deployment["spec"].get("replicas")


def _wait_accepted(kubectl: Kubectl, namespace: str, name: str = "shop") -> dict[str, Any]:
    def accepted() -> dict[str, Any] | None:
        status = _status(kubectl, namespace, name)
        return status if _condition(status, "Accepted").get("status") == "True" else None

    found = wait_for(accepted, timeout=60)
    assert isinstance(found, dict)
    return found


def _wait_deployment(kubectl: Kubectl, namespace: str, replicas: int, timeout: float = 60) -> None:
    wait_for(lambda: _deployment_replicas(kubectl, namespace) == replicas, timeout=timeout)


def _environment_desired(kubectl: Kubectl, namespace: str, name: str = "shop") -> int | None:
    env = _get(kubectl, namespace, "environment", name) or {}
    return ((env.get("status") or {}).get("replicas") or {}).get("desired")


def _event_messages(kubectl: Kubectl, namespace: str, reason: str) -> list[str]:
    events = json.loads(
        kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"reason={reason}", "-o", "json"
        ).stdout
    )
    return [str(event.get("message", "")) for event in events["items"]]


def test_the_hpa_is_created_with_the_spec_it_should_have(kubectl: Kubectl, namespace: str) -> None:
    _environment(kubectl, namespace)
    behavior = {
        "scaleUp": {
            "stabilizationWindowSeconds": 30,
            "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 2, "periodSeconds": 30}],
        },
        "scaleDown": {
            "stabilizationWindowSeconds": 600,
            "selectPolicy": "Min",
            "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}],
        },
    }
    _policy(
        kubectl,
        namespace,
        minReplicas=2,
        maxReplicas=7,
        metrics={"cpuUtilization": 65, "memoryUtilization": 75},
        behavior=behavior,
    )
    status = _wait_accepted(kubectl, namespace)
    policy = _get(kubectl, namespace, "scalingpolicy", "shop")
    hpa = _get(kubectl, namespace, "hpa", "shop")
    assert policy is not None
    assert hpa is not None
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "shop",
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 7)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": name, "target": {"type": "Utilization", "averageUtilization": u}},
        }
        for name, u in (("cpu", 65), ("memory", 75))
    ]
    assert hpa["spec"]["behavior"] == behavior
    [owner] = hpa["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "ScalingPolicy",
        "shop",
        policy["metadata"]["uid"],
        True,
    )
    assert hpa["metadata"]["labels"]["dockyard.io/scaling-policy"] == "shop"
    # Nothing to clean up but the HPA, which goes by owner reference: deleting a policy
    # never waits for the operator.
    assert not policy["metadata"].get("finalizers")
    assert status["observedGeneration"] == policy["metadata"]["generation"]
    assert status["effectiveMinReplicas"] == 2
    assert _condition(status, "Paused")["status"] == "False"
    # The HPA holds its floor without metrics: the Deployment is raised to 2.
    _wait_deployment(kubectl, namespace, 2)

    # Status follows the HPA's: its counts, and why it cannot compute from metrics.
    def reported() -> dict[str, Any] | None:
        current = _status(kubectl, namespace)
        active = _condition(current, "Active")
        if current.get("currentReplicas") == 2 and active.get("reason") not in (None, "Pending"):
            return current
        return None

    final = wait_for(reported, timeout=60)
    assert isinstance(final, dict)
    assert _condition(final, "Active")["status"] == "False"  # no metrics server here
    accepted = _event_messages(kubectl, namespace, "Accepted")
    assert any("HorizontalPodAutoscaler shop" in m for m in accepted)

    # A spec change reaches the HPA.
    _policy(kubectl, namespace, minReplicas=3, maxReplicas=9, metrics={"cpuUtilization": 50})
    wait_for(lambda: _hpa_range(kubectl, namespace) == (3, 9), timeout=30)


def test_a_schedule_window_raises_the_floor_which_returns_afterwards(
    kubectl: Kubectl, namespace: str
) -> None:
    _environment(kubectl, namespace)
    # The window is [:00, :30) of every minute and the HPA controller acts every 15 s:
    # starting in the window's last 20 s might see it close before the HPA acts on it.
    second = datetime.now(UTC).second
    if 10 <= second < 30:
        time.sleep(30 - second)
    burst = {"name": "burst", "schedule": "* * * * *", "duration": "30s", "minReplicas": 3}
    _policy(kubectl, namespace, minReplicas=1, maxReplicas=5, schedules=[burst])
    _wait_accepted(kubectl, namespace)

    # Opens at the next whole minute at the latest (sooner when created inside a window).
    def raised() -> dict[str, Any] | None:
        status = _status(kubectl, namespace)
        open_now = (status.get("activeSchedule") or {}).get("name") == "burst"
        return status if open_now and _hpa_range(kubectl, namespace) == (3, 5) else None

    during = wait_for(raised, timeout=70, interval=0.5)
    assert isinstance(during, dict)
    assert during["effectiveMinReplicas"] == 3
    # Fired on a whole minute, open for 30 s.
    assert datetime.fromisoformat(during["activeSchedule"]["until"]).second == 30

    def returned() -> dict[str, Any] | None:
        status = _status(kubectl, namespace)
        closed = "activeSchedule" not in status
        return status if closed and _hpa_range(kubectl, namespace) == (1, 5) else None

    after = wait_for(returned, timeout=45, interval=0.5)
    assert isinstance(after, dict)
    assert after["effectiveMinReplicas"] == 1
    # During the window the HPA raised the Deployment to the floor; without metrics it
    # has no reason to scale down afterwards, so the count is still there to see.
    _wait_deployment(kubectl, namespace, 3, timeout=20)
    assert any("burst" in m for m in _event_messages(kubectl, namespace, "ScheduleStarted"))
    assert any("burst" in m for m in _event_messages(kubectl, namespace, "ScheduleEnded"))


def _restore(kubectl: Kubectl, namespace: str, name: str, environment: str = "shop") -> None:
    # The test plays the restore operator's part (it sets the phases), so the operator is
    # told to leave these Restores alone.
    manifest = {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Restore",
        "metadata": {"name": name, "annotations": {"dockyard.io/skip-reconcile": "true"}},
        "spec": {"source": {"environmentRef": {"name": environment}, "select": "latest"}},
    }
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(manifest))


def _set_restore_phase(kubectl: Kubectl, namespace: str, name: str, phase: str) -> None:
    kubectl(
        "patch",
        "restore",
        name,
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"phase": phase}}),
    )


def test_a_restore_into_the_environment_pauses_the_policy_until_it_ends(
    kubectl: Kubectl, namespace: str
) -> None:
    _environment(kubectl, namespace, replicas=2)
    _environment(kubectl, namespace, name="billing")
    _policy(kubectl, namespace, minReplicas=1, maxReplicas=5)
    _wait_accepted(kubectl, namespace)
    _wait_deployment(kubectl, namespace, 2)

    # A restore into another environment changes nothing.
    _restore(kubectl, namespace, "billing-restore", environment="billing")
    _set_restore_phase(kubectl, namespace, "billing-restore", "Restoring")

    _restore(kubectl, namespace, "nightly-fix")
    _set_restore_phase(kubectl, namespace, "nightly-fix", "Restoring")

    def paused(restore: str = "nightly-fix", phase: str = "Restoring") -> dict[str, Any] | None:
        # A planned Pending restore pauses too; wait until the status names this one.
        status = _status(kubectl, namespace)
        condition = _condition(status, "Paused")
        message = str(condition.get("message", ""))
        named = f"Restore {restore}" in message and f"phase {phase}" in message
        return status if condition.get("status") == "True" and named else None

    status = wait_for(paused, timeout=30)
    assert isinstance(status, dict)
    condition = _condition(status, "Paused")
    assert condition["reason"] == "RestoreInProgress"
    assert "Restore nightly-fix" in condition["message"]
    assert "billing-restore" not in condition["message"]
    assert "phase Restoring" in condition["message"]
    # Pinned where the Deployment was: the HPA can move it neither way.
    wait_for(lambda: _hpa_range(kubectl, namespace) == (2, 2), timeout=15)
    assert status["effectiveMinReplicas"] == 2
    assert _condition(status, "Active")["reason"] == "Paused"

    _set_restore_phase(kubectl, namespace, "nightly-fix", "Completed")

    def resumed() -> dict[str, Any] | None:
        current = _status(kubectl, namespace)
        return current if _condition(current, "Paused").get("status") == "False" else None

    wait_for(resumed, timeout=30)
    wait_for(lambda: _hpa_range(kubectl, namespace) == (1, 5), timeout=15)

    # A second restore pauses again once it is under way (not before its plan: a
    # Restore that cannot be planned must not pin the count); deleting it resumes.
    _restore(kubectl, namespace, "second-try")
    _set_restore_phase(kubectl, namespace, "second-try", "BackingUp")
    wait_for(lambda: paused("second-try", "BackingUp"), timeout=30)
    wait_for(lambda: _hpa_range(kubectl, namespace) == (2, 2), timeout=15)
    kubectl("delete", "restore", "second-try", "-n", namespace)
    wait_for(resumed, timeout=30)
    wait_for(lambda: _hpa_range(kubectl, namespace) == (1, 5), timeout=15)
    assert _deployment_replicas(kubectl, namespace) == 2
    assert any("nightly-fix" in m for m in _event_messages(kubectl, namespace, "Paused"))
    assert _event_messages(kubectl, namespace, "Resumed")


def test_the_spec_pauses_and_resumes_the_policy(kubectl: Kubectl, namespace: str) -> None:
    _environment(kubectl, namespace, replicas=3)
    _policy(kubectl, namespace, minReplicas=1, maxReplicas=5, paused=True)
    status = _wait_accepted(kubectl, namespace)
    assert _condition(status, "Paused")["reason"] == "PausedBySpec"
    wait_for(lambda: _hpa_range(kubectl, namespace) == (3, 3), timeout=30)
    _policy(kubectl, namespace, minReplicas=1, maxReplicas=5, paused=False)
    wait_for(lambda: _hpa_range(kubectl, namespace) == (1, 5), timeout=30)


def test_a_second_policy_for_the_environment_is_refused(kubectl: Kubectl, namespace: str) -> None:
    _environment(kubectl, namespace)
    _policy(kubectl, namespace, name="first")
    _wait_accepted(kubectl, namespace, "first")
    _policy(kubectl, namespace, name="second", minReplicas=2, maxReplicas=3)

    def refused() -> dict[str, Any] | None:
        status = _status(kubectl, namespace, "second")
        return status if _condition(status, "Accepted").get("status") == "False" else None

    status = wait_for(refused, timeout=30)
    assert isinstance(status, dict)
    accepted = _condition(status, "Accepted")
    assert accepted["reason"] == "Conflict"
    assert "ScalingPolicy first" in accepted["message"]
    assert _get(kubectl, namespace, "hpa", "second") is None
    assert _hpa_range(kubectl, namespace, "first") == (1, 5)
    assert any("first" in m for m in _event_messages(kubectl, namespace, "Conflict"))

    # When the first goes, the second takes the environment over.
    kubectl("delete", "scalingpolicy", "first", "-n", namespace)
    _wait_accepted(kubectl, namespace, "second")
    wait_for(lambda: _hpa_range(kubectl, namespace, "second") == (2, 3), timeout=30)
    wait_for(lambda: _get(kubectl, namespace, "hpa", "first") is None, timeout=60)


def test_a_policy_without_its_environment_waits_for_it(kubectl: Kubectl, namespace: str) -> None:
    _policy(kubectl, namespace)

    def waiting() -> dict[str, Any] | None:
        status = _status(kubectl, namespace)
        return status if _condition(status, "Accepted").get("reason") == "TargetNotFound" else None

    wait_for(waiting, timeout=30)
    assert _get(kubectl, namespace, "hpa", "shop") is None
    _environment(kubectl, namespace)
    _wait_accepted(kubectl, namespace)
    assert _hpa_range(kubectl, namespace) == (1, 5)


def test_the_environment_leaves_replicas_to_the_hpa(kubectl: Kubectl, namespace: str) -> None:
    _environment(kubectl, namespace, replicas=3)
    _wait_deployment(kubectl, namespace, 3)
    _policy(kubectl, namespace, minReplicas=1, maxReplicas=6)
    _wait_accepted(kubectl, namespace)

    def managers() -> set[str]:
        deployment = json.loads(
            kubectl(
                "get", "deployment", "shop", "-n", namespace, "-o", "json", "--show-managed-fields"
            ).stdout
        )
        return {entry["manager"] for entry in deployment["metadata"]["managedFields"]}

    # spec.replicas was handed over to a second field manager, not reset to 1.
    wait_for(lambda: HANDOVER_MANAGER in managers(), timeout=30)
    assert _deployment_replicas(kubectl, namespace) == 3

    # A scale through the scale subresource (what the HPA does; here by hand) stands: the
    # drift-repair passes (every 3 s) no longer put the environment's count back, and the
    # environment reports the count it runs.
    kubectl("scale", "deployment", "shop", "-n", namespace, "--replicas=4")
    wait_for(lambda: _environment_desired(kubectl, namespace) == 4, timeout=30)
    time.sleep(7)
    assert _deployment_replicas(kubectl, namespace) == 4

    # Without a policy the environment's own count comes back.
    kubectl("delete", "scalingpolicy", "shop", "-n", namespace)
    _wait_deployment(kubectl, namespace, 3, timeout=60)


def test_an_hpa_the_api_server_rejects_is_removed_not_left_to_fight(
    kubectl: Kubectl, namespace: str
) -> None:
    """A cluster's own admission policy refuses the policy's next HPA: the policy is not
    accepted, the environment applies its own count again, and the HPA of the earlier
    pass must go rather than go on scaling the same Deployment."""
    _environment(kubectl, namespace, replicas=2)
    _policy(kubectl, namespace, minReplicas=1, maxReplicas=3)
    _wait_accepted(kubectl, namespace)
    wait_for(lambda: _hpa_range(kubectl, namespace) == (1, 3), timeout=30)
    name = f"hpa-ceiling-{namespace}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["autoscaling"],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": ["horizontalpodautoscalers"],
                    }
                ]
            },
            "validations": [
                {
                    "expression": "object.spec.maxReplicas <= 3",
                    "message": "this cluster runs at most 3 replicas",
                    "reason": "Forbidden",  # 403, as such policies often answer
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {
            "policyName": name,
            "validationActions": ["Deny"],
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
            },
        },
    }
    for manifest in (policy, binding):
        kubectl("apply", "-f", "-", input=json.dumps(manifest))
    try:
        # The policy's type checking and binding take a moment to be in force.
        def refused() -> bool:
            raise_it = ["--type=merge", "-p", '{"spec":{"maxReplicas":4}}']
            probe = kubectl(
                "patch", "hpa", "shop", "-n", namespace, "--dry-run=server", *raise_it, check=False
            )
            return probe.returncode != 0 and "at most 3 replicas" in probe.stderr

        wait_for(refused, timeout=30)
        _policy(kubectl, namespace, minReplicas=1, maxReplicas=5)

        def rejected() -> dict[str, Any] | None:
            condition = _condition(_status(kubectl, namespace), "Accepted")
            ok = condition.get("reason") == "HorizontalPodAutoscalerRejected"
            return condition if ok else None

        condition = wait_for(rejected, timeout=60)
        assert isinstance(condition, dict)
        assert condition["status"] == "False"
        assert "at most 3 replicas" in condition["message"]
        wait_for(lambda: _hpa_range(kubectl, namespace) is None, timeout=30)
        # The environment's own count is the Deployment's again.
        _wait_deployment(kubectl, namespace, 2)
    finally:
        kubectl("delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", name,
                "--ignore-not-found")  # fmt: skip
