"""The RateLimitPolicy CRD: the apiserver refuses what can never work, in its own words."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.conftest import Kubectl
from tests.integration.ratelimits import rule

pytestmark = pytest.mark.usefixtures("crds_installed")


def _policy(*rules: dict[str, Any], **spec: Any) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "RateLimitPolicy",
            "metadata": {"name": "p"},
            "spec": {"rules": list(rules), **spec},
        }
    )


INVALID = [
    pytest.param(
        [rule("h", 10, key="Header")],
        "spec.rules[0].header: Invalid value: header is required when key is Header",
        id="header-key-without-header",
    ),
    pytest.param(
        [rule("h", 10, header="X-Api-Key")],
        "spec.rules[0].header: Invalid value: header is required when key is Header, and "
        "allowed only then",
        id="header-without-header-key",
    ),
    pytest.param(
        [rule("c", 10, burst=5, cost=16)],
        "spec.rules[0].cost: Invalid value: cost must not exceed limit.requests + burst",
        id="cost-above-capacity",
    ),
    pytest.param(
        [rule("same", 10), rule("same", 20)],
        'spec.rules[1]: Duplicate value: {"name":"same"}',
        id="duplicate-rule-names",
    ),
    pytest.param(
        [rule("zero", 0)],
        "spec.rules[0].limit.requests: Invalid value: 0",
        id="zero-requests",
    ),
    pytest.param(
        [rule("week", 10, "week")],
        'spec.rules[0].limit.period: Unsupported value: "week"',
        id="unknown-period",
    ),
    pytest.param(
        [rule("neg", 10, burst=-1)],
        "spec.rules[0].burst: Invalid value: -1",
        id="negative-burst",
    ),
    pytest.param(
        [rule("path", 10, match={"paths": ["api/v1/*"]})],
        'spec.rules[0].match.paths[0]: Invalid value: "api/v1/*"',
        id="relative-path",
    ),
    pytest.param(
        [rule("m", 10, match={"methods": ["FETCH"]})],
        'spec.rules[0].match.methods[0]: Unsupported value: "FETCH"',
        id="unknown-method",
    ),
    pytest.param(
        [rule("Bad_Name", 10)],
        'spec.rules[0].name: Invalid value: "Bad_Name"',
        id="rule-name-not-a-label",
    ),
    pytest.param([], "spec.rules: Invalid value: 0", id="no-rules"),
]


@pytest.mark.parametrize(("rules", "message"), INVALID)
def test_invalid_policies_are_rejected_with_their_field_path(
    kubectl: Kubectl, namespace: str, rules: list[dict[str, Any]], message: str
) -> None:
    result = kubectl("apply", "-n", namespace, "-f", "-", input=_policy(*rules), check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert kubectl("get", "rlp", "-n", namespace, "-o", "name").stdout == ""


def test_an_unknown_mode_is_rejected(kubectl: Kubectl, namespace: str) -> None:
    result = kubectl(
        "apply", "-n", namespace, "-f", "-", input=_policy(rule("r", 1), mode="DryRun"),
        check=False,
    )  # fmt: skip
    assert 'spec.mode: Unsupported value: "DryRun"' in result.stderr


def test_a_valid_policy_gets_its_defaults_and_is_explained(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=_policy(rule("r", 5)))
    stored = yaml.safe_load(kubectl("get", "rlp", "p", "-n", namespace, "-o", "yaml").stdout)
    assert stored["spec"]["mode"] == "Enforce"
    assert stored["spec"]["rules"][0] | {"limit": None} == {
        "name": "r",
        "limit": None,
        "burst": 0,
        "key": "Subject",
        "cost": 1,
    }
    explained = kubectl("explain", "ratelimitpolicy.spec.rules.key").stdout
    assert "ClientIP" in explained
