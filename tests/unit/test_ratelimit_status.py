"""What a RateLimitPolicy's status says, and when it needs writing at all."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dockyard.api.ratelimit.rules import PolicyIndex, PolicyReport
from dockyard.api.ratelimit.status import MemoryTally, ThrottleLedger, status_patch, window_of

NOW = datetime(2025, 5, 1, 10, 30, tzinfo=UTC)
WINDOW = window_of(NOW.timestamp())
OBJ: dict[str, Any] = {
    "metadata": {"namespace": "shop", "name": "p", "uid": "u1", "generation": 2},
    "spec": {"rules": [{"name": "a"}, {"name": "b"}, {"name": "c"}]},
}


def report(accepted: bool = True) -> PolicyReport:
    return PolicyReport(
        namespace="shop",
        name="p",
        uid="u1",
        generation=2,
        accepted=accepted,
        reason="RulesInForce" if accepted else "PathsNeverMatch",
        message="3 rule(s) in force (Enforce)" if accepted else "rule a: /x is not a route",
        rules=3,
    )


def test_a_new_policy_gets_accepted_its_generation_and_throttles_in_rule_order() -> None:
    tally = {"c": (4, NOW.timestamp() - 5), "a": (1, NOW.timestamp() - 60)}
    patch = status_patch(OBJ, report(), tally, window=WINDOW, now=NOW)
    assert patch is not None
    status = patch["status"]
    assert status["observedGeneration"] == 2
    assert status["rules"] == 3
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("Accepted", "True", "RulesInForce")
    ]
    assert [(t["rule"], t["count"]) for t in status["throttled"]] == [("a", 1), ("c", 4)]
    assert status["throttled"][0]["windowStart"] == "2025-05-01T10:00:00Z"
    assert status["throttled"][1]["lastThrottleTime"] == "2025-05-01T10:29:55Z"


def test_an_up_to_date_status_is_not_written_again() -> None:
    first = status_patch(OBJ, report(), {}, window=WINDOW, now=NOW)
    assert first is not None
    written = {**OBJ, "status": first["status"]}
    later = datetime(2025, 5, 1, 10, 45, tzinfo=UTC)
    assert status_patch(written, report(), {}, window=WINDOW, now=later) is None


def test_a_policy_that_can_never_match_is_not_accepted() -> None:
    patch = status_patch(OBJ, report(accepted=False), {}, window=WINDOW, now=NOW)
    assert patch is not None
    (condition,) = patch["status"]["conditions"]
    assert (condition["status"], condition["reason"]) == ("False", "PathsNeverMatch")
    assert "not a route" in condition["message"]


async def test_replicas_counts_add_up_per_policy_rule_and_hour() -> None:
    tally = MemoryTally()
    one, two = ThrottleLedger(), ThrottleLedger()
    at = NOW.timestamp()
    one.record("u1", "a", at)
    one.record("u1", "a", at + 1)
    two.record("u1", "a", at + 2)
    two.record("u1", "b", at - 3600)  # the previous hour
    await tally.add(one.drain())
    await tally.add(two.drain())
    assert await tally.read(WINDOW, "u1") == {"a": (3, at + 2)}
    assert one.drain() == {}


def test_a_policy_beyond_its_namespaces_rule_cap_says_it_is_not_in_force() -> None:
    objects = [
        {
            "metadata": {
                "namespace": "shop",
                "name": name,
                "uid": f"uid-{name}",
                "generation": 1,
                "creationTimestamp": f"2025-05-0{day}T00:00:00Z",
            },
            "spec": {
                "rules": [
                    {"name": f"r{n}", "limit": {"requests": 10, "period": "minute"}}
                    for n in range(32)
                ]
            },
        }
        for day, name in enumerate(("first", "second", "third"), 1)
    ]
    index = PolicyIndex("dockyard-system")
    index.rebuild(objects)
    patch = status_patch(objects[2], index.reports[("shop", "third")], {}, window=WINDOW, now=NOW)
    assert patch is not None
    assert patch["status"]["rules"] == 0
    (condition,) = patch["status"]["conditions"]
    assert (condition["status"], condition["reason"]) == ("False", "TooManyRules")
    assert condition["message"].startswith("not in force: namespace shop may have 64 rules")
