"""The Lease's name and the election's timing rules."""

from __future__ import annotations

import pytest

from dockyard.core.kube import KubeClient
from dockyard.operator.leadership import LEASE_NAME, Leadership, lease_name


def test_a_whole_cluster_operator_has_the_platform_lease_and_a_scoped_one_its_own() -> None:
    assert lease_name([]) == LEASE_NAME
    scoped = lease_name(["shop", "team-*"])
    assert scoped.startswith(f"{LEASE_NAME}-")
    assert scoped == lease_name(["team-*", "shop"])  # the order does not matter
    assert scoped != lease_name(["shop"])
    assert len(scoped) <= 63


@pytest.mark.parametrize(("retry", "deadline", "duration"), [(2, 10, 10), (5, 4, 15), (2, 16, 15)])
def test_the_leader_must_stop_renewing_before_a_standby_may_take_over(
    retry: float, deadline: float, duration: float
) -> None:
    kube = KubeClient.__new__(KubeClient)  # never connected: the check comes first
    with pytest.raises(ValueError, match="RETRY < _RENEW_DEADLINE < _DURATION"):
        Leadership(
            kube, namespace="n", name="l", identity="me",
            duration=duration, renew_deadline=deadline, retry=retry,
        )  # fmt: skip
