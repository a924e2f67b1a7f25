"""Which rules count a request: scope by namespace, match, keys, and how rules combine."""

from __future__ import annotations

from ipaddress import ip_network
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from dockyard.api.errors import Problem
from dockyard.api.ratelimit.addresses import address_group
from dockyard.api.ratelimit.backends import Bucket, MemoryLimiter
from dockyard.api.ratelimit.decisions import RuleDecision, Verdict
from dockyard.api.ratelimit.metrics import RateLimitMetrics
from dockyard.api.ratelimit.reviews import ReviewCap
from dockyard.api.ratelimit.rules import ANONYMOUS, Caller, PolicyIndex, Target, sf_string
from dockyard.api.ratelimit.service import RateLimiting, Request
from dockyard.api.ratelimit.status import ThrottleLedger
from dockyard.core.settings import Settings

PLATFORM = "dockyard-system"
ENVIRONMENTS = "/api/v1/namespaces/{namespace}/environments"
ROUTES = frozenset({ENVIRONMENTS, "/api/v1/me", "/api/v1/environments"})
ALICE = Caller("alice", frozenset({"dev", "system:authenticated"}), authenticated=True)


def policy(
    namespace: str, name: str, *rules: dict[str, Any], mode: str = "Enforce"
) -> dict[str, Any]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "RateLimitPolicy",
        "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{name}", "generation": 1},
        "spec": {"mode": mode, "rules": list(rules)},
    }


def rule(name: str, requests: int = 10, **fields: Any) -> dict[str, Any]:
    return {"name": name, "limit": {"requests": requests, "period": "minute"}, **fields}


def index(*objects: dict[str, Any]) -> PolicyIndex:
    built = PolicyIndex(PLATFORM, ROUTES)
    built.rebuild(objects)
    return built


def names(idx: PolicyIndex, target: Target) -> list[str]:
    return [r.ident for r in idx.candidates(target)]


def envs(namespace: str, method: str = "GET") -> Target:
    return Target(method, f"/api/v1/namespaces/{namespace}/environments", ENVIRONMENTS, namespace)


def test_platform_policies_apply_everywhere_and_tenant_policies_to_their_namespace() -> None:
    idx = index(policy(PLATFORM, "global", rule("all")), policy("shop", "mine", rule("shop")))
    assert names(idx, envs("shop")) == [f"{PLATFORM}/global/all", "shop/mine/shop"]
    assert names(idx, envs("search")) == [f"{PLATFORM}/global/all"]
    # A route without {namespace} is about no tenant's objects.
    assert names(idx, Target("GET", "/api/v1/me", "/api/v1/me")) == [f"{PLATFORM}/global/all"]


def test_methods_and_paths_narrow_a_rule() -> None:
    idx = index(
        policy(
            PLATFORM,
            "p",
            rule("writes", match={"methods": ["POST", "PATCH"]}),
            rule("template", match={"paths": [ENVIRONMENTS]}),
            rule("prefix", match={"paths": ["/api/v1/namespaces/shop/*"]}),
            rule("template-prefix", match={"paths": ["/api/v1/namespaces/{namespace}/*"]}),
        )
    )
    assert names(idx, envs("shop", "POST")) == [
        f"{PLATFORM}/p/{n}" for n in ("writes", "template", "prefix", "template-prefix")
    ]
    assert names(idx, envs("search")) == [
        f"{PLATFORM}/p/{n}" for n in ("template", "template-prefix")
    ]
    assert names(idx, Target("GET", "/api/v1/me", "/api/v1/me")) == []


def test_subjects_and_groups_say_who_is_counted() -> None:
    idx = index(
        policy(
            PLATFORM,
            "p",
            rule("everyone"),
            rule("alice", match={"subjects": ["alice"]}),
            rule("devs", match={"groups": ["dev"]}),
            rule("anonymous", match={"groups": ["system:unauthenticated"]}),
        )
    )
    rules = idx.candidates(envs("shop"))
    assert [r.name for r in rules if r.matches_caller(ALICE)] == ["everyone", "alice", "devs"]
    assert [r.name for r in rules if r.matches_caller(ANONYMOUS)] == ["everyone", "anonymous"]


def test_keys_count_per_subject_address_or_header_and_fall_back_to_the_address() -> None:
    idx = index(
        policy(
            PLATFORM,
            "p",
            rule("subject"),
            rule("ip", key="ClientIP"),
            rule("header", key="Header", header="X-Api-Key"),
        )
    )
    subject, ip, header = idx.candidates(envs("shop"))
    assert subject.bucket(ALICE, "10.0.0.1", {}) == subject.bucket(ALICE, "10.0.0.2", {})
    assert subject.bucket(ANONYMOUS, "10.0.0.1", {}) != subject.bucket(ANONYMOUS, "10.0.0.2", {})
    assert ip.bucket(ALICE, "10.0.0.1", {}) != ip.bucket(ALICE, "10.0.0.2", {})
    with_key = header.bucket(ANONYMOUS, "10.0.0.1", {"X-Api-Key": "k1"})
    assert with_key == header.bucket(ANONYMOUS, "10.0.0.2", {"X-Api-Key": "k1"})
    assert with_key != header.bucket(ANONYMOUS, "10.0.0.1", {"X-Api-Key": "k2"})
    assert "k1" not in with_key  # header values may be credentials: only a hash is stored


def test_an_internet_ipv6_client_counts_by_its_64_and_a_pod_by_its_address() -> None:
    cluster = Settings().client_networks

    assert address_group("2001:db8:1:2:aaaa:bbbb:cccc:dddd", cluster) == "2001:db8:1:2::/64"
    assert address_group("2001:db8:1:2::1", cluster) == address_group("2001:db8:1:2::9", cluster)
    assert address_group("2001:db8:1:3::1", cluster) != address_group("2001:db8:1:2::1", cluster)
    # Pods of one node share its /64 of the (private) pod range: each is its own client.
    assert address_group("fd00:10:244:1::5", cluster) == "fd00:10:244:1::5"
    assert address_group("::ffff:10.0.0.1", cluster) == "10.0.0.1"
    assert address_group("not an address", cluster) == "not an address"
    # A cluster whose pods have global addresses names its range.
    assert address_group("2001:db8:1:2::1", [ip_network("2001:db8:1::/48")]) == "2001:db8:1:2::1"


async def test_a_client_rotating_through_its_64_shares_one_client_ip_bucket() -> None:
    idx = index(policy(PLATFORM, "p", rule("ip", requests=3, key="ClientIP")))
    limiting = RateLimiting(
        index=idx,
        limiter=MemoryLimiter(),
        instruments=RateLimitMetrics(CollectorRegistry()),
        ledger=ThrottleLedger(),
        client_networks=Settings().client_networks,
    )
    rules = idx.candidates(envs("shop"))

    async def allowed(address: str) -> bool:
        request = Request(address=address, headers={}, authorization=None, path="/x")
        verdict = await limiting.judge(request, rules, None)
        assert verdict is not None
        return verdict.allowed

    assert [await allowed(f"2001:db8:5:6::{n:x}") for n in range(1, 5)] == [True] * 3 + [False]
    assert await allowed("2001:db8:5:7::1")  # the next /64
    assert [await allowed(f"fd00:10:244:1::{n:x}") for n in range(1, 5)] == [True] * 4  # pods


async def test_the_token_review_cap_counts_an_internet_ipv6_network_as_one_address() -> None:
    cap = ReviewCap(
        MemoryLimiter(), per_minute=3, scope="test", client_networks=Settings().client_networks
    )
    for n in range(1, 4):
        await cap.admit(f"2001:db8::{n}")

    with pytest.raises(Problem) as refused:
        await cap.admit("2001:db8::ffff:4")  # another address, the same /64
    assert refused.value.status == 429
    await cap.admit("2001:db8:0:1::1")  # the next /64 has its own budget
    for n in range(1, 5):
        await cap.admit(f"fd00:10:244:1::{n}")  # pods of one node: one budget each


def test_only_rules_that_match_or_key_on_the_caller_need_a_token_review() -> None:
    idx = index(policy(PLATFORM, "p", rule("ip", key="ClientIP"), rule("subject")))
    ip, subject = idx.candidates(envs("shop"))
    assert not ip.needs_caller
    assert subject.needs_caller


def test_a_policy_that_can_never_match_is_reported_not_accepted() -> None:
    idx = index(
        policy(PLATFORM, "typo", rule("r", match={"paths": ["/api/v1/environment"]})),
        policy("shop", "global-route", rule("r", match={"paths": ["/api/v1/environments"]})),
        policy("shop", "fine", rule("r", match={"paths": [ENVIRONMENTS, "/api/*"]})),
    )
    reports = idx.reports
    assert not reports[(PLATFORM, "typo")].accepted
    assert "/api/v1/environment is not a route" in reports[(PLATFORM, "typo")].message
    assert not reports[("shop", "global-route")].accepted
    assert "has no {namespace}" in reports[("shop", "global-route")].message
    assert reports[("shop", "fine")].accepted
    assert reports[("shop", "fine")].reason == "RulesInForce"


def made(namespace: str, name: str, rules: int, day: int) -> dict[str, Any]:
    made = policy(namespace, name, *(rule(f"r{n}") for n in range(rules)))
    made["metadata"]["creationTimestamp"] = f"2025-05-{day:02}T00:00:00Z"
    return made


def test_a_namespace_has_at_most_64_rules_in_force_its_oldest_policies_first() -> None:
    idx = index(
        made("shop", "c-newer", 32, day=3),
        made("shop", "b-oldest", 32, day=1),
        made("shop", "a-older", 20, day=2),
        made("shop", "d-newest", 12, day=4),
        made("cafe", "own-budget", 32, day=5),
    )
    # Whole policies, oldest first, each while it fits: 32 + 20, not 32 more, then 12.
    in_force = {r.policy.name for r in idx.by_namespace["shop"]}
    assert in_force == {"b-oldest", "a-older", "d-newest"}
    assert len(idx.candidates(envs("shop"))) == 64
    assert len(idx.candidates(envs("cafe"))) == 32
    report = idx.reports[("shop", "c-newer")]
    assert (report.accepted, report.reason, report.rules) == (False, "TooManyRules", 0)
    assert report.message == (
        "not in force: namespace shop may have 64 rules in force, its older policies have "
        "52, and this policy's 32 would exceed that; remove rules or merge policies"
    )
    assert idx.reports[("shop", "d-newest")].reason == "RulesInForce"


def test_the_platforms_rules_are_not_capped() -> None:
    idx = index(*(made(PLATFORM, f"p{n}", 32, day=n) for n in range(1, 4)))
    assert len(idx.candidates(envs("shop"))) == 96
    assert all(report.accepted for report in idx.reports.values())


def test_an_invalid_object_is_ignored_and_says_why() -> None:
    bad = policy(PLATFORM, "bad", rule("r", requests=0))
    idx = index(bad, policy(PLATFORM, "good", rule("r")))
    assert names(idx, envs("shop")) == [f"{PLATFORM}/good/r"]
    report = idx.reports[(PLATFORM, "bad")]
    assert (report.accepted, report.reason) == (False, "Invalid")
    assert "requests" in report.message


def test_a_rebuild_replaces_every_rule() -> None:
    idx = index(policy(PLATFORM, "p", rule("a")))
    idx.rebuild([policy(PLATFORM, "p", rule("b"))])
    assert names(idx, envs("shop")) == [f"{PLATFORM}/p/b"]


# -- combination --------------------------------------------------------------------------


def judge(limiter: MemoryLimiter, idx: PolicyIndex, target: Target) -> Verdict:
    rules = idx.candidates(target)
    buckets = [Bucket(r.bucket(ALICE, "-", {}), r.quota, r.cost, r.enforced) for r in rules]
    results = limiter.check_now(buckets)
    return Verdict(
        tuple(
            RuleDecision(r, res, b.key) for r, res, b in zip(rules, results, buckets, strict=True)
        )
    )


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_overlapping_rules_must_all_pass_and_a_refusal_charges_none_of_them() -> None:
    idx = index(
        policy(PLATFORM, "global", rule("wide", requests=5)),
        policy("shop", "tenant", rule("narrow", requests=2, match={"methods": ["POST"]})),
    )
    limiter = MemoryLimiter(Clock())
    posts = [judge(limiter, idx, envs("shop", "POST")) for _ in range(3)]
    assert [v.allowed for v in posts] == [True, True, False]
    assert [d.rule.name for d in posts[2].refusals] == ["narrow"]
    # The refused POST took nothing from the wide rule: three GETs still fit in it.
    gets = [judge(limiter, idx, envs("shop")) for _ in range(4)]
    assert [v.allowed for v in gets] == [True, True, True, False]


def test_headers_report_every_enforced_rule_most_restrictive_first() -> None:
    idx = index(
        policy(PLATFORM, "global", rule("wide", requests=100)),
        policy("shop", "tenant", rule("narrow", requests=3)),
        policy("shop", "trial", rule("shadowed", requests=1), mode="Shadow"),
    )
    limiter = MemoryLimiter(Clock())
    verdict = judge(limiter, idx, envs("shop"))
    headers = verdict.headers()
    assert headers["RateLimit-Policy"] == (
        '"shop/tenant/narrow";q=3;w=60, "dockyard-system/global/wide";q=100;w=60'
    )
    assert headers["RateLimit"] == (
        '"shop/tenant/narrow";r=2;t=20, "dockyard-system/global/wide";r=99;t=1'
    )
    # To a caller not authorized in "shop", its rules are numbered; the platform's are not.
    hidden = verdict.headers(named=False)
    assert hidden["RateLimit-Policy"] == (
        '"shop/limit-1";q=3;w=60, "dockyard-system/global/wide";q=100;w=60'
    )
    assert hidden["RateLimit"] == '"shop/limit-1";r=2;t=20, "dockyard-system/global/wide";r=99;t=1'


def test_a_tenants_rules_are_numbered_across_its_policies() -> None:
    idx = index(
        policy("shop", "a", rule("one", requests=3), rule("two", requests=4)),
        policy("shop", "b", rule("three", requests=5)),
        policy("cafe", "c", rule("four", requests=6)),
    )
    aliases = {ns: [r.alias for r in rules] for ns, rules in idx.by_namespace.items()}
    assert aliases == {
        "shop": ["shop/limit-1", "shop/limit-2", "shop/limit-3"],
        "cafe": ["cafe/limit-1"],
    }


def test_shadow_rules_never_reject_but_say_they_would_have() -> None:
    idx = index(policy(PLATFORM, "trial", rule("tight", requests=1), mode="Shadow"))
    limiter = MemoryLimiter(Clock())
    verdicts = [judge(limiter, idx, envs("shop")) for _ in range(3)]
    assert all(v.allowed for v in verdicts)
    assert [len(v.shadow_refusals) for v in verdicts] == [0, 1, 1]
    assert verdicts[0].headers() == {}


async def test_refused_requests_with_fresh_header_values_leave_no_shadow_buckets() -> None:
    """A request an Enforce rule refuses charges no Shadow bucket: a flood of refused
    requests, each with a new value of a shadow rule's header, stores nothing."""
    idx = index(
        policy(PLATFORM, "per-ip", rule("ip", requests=1, key="ClientIP")),
        policy("shop", "trial", rule("per-key", key="Header", header="X-Key"), mode="Shadow"),
    )
    limiter = MemoryLimiter(Clock())
    limiting = RateLimiting(
        index=idx,
        limiter=limiter,
        instruments=RateLimitMetrics(CollectorRegistry()),
        ledger=ThrottleLedger(),
    )
    rules = idx.candidates(envs("shop"))

    async def allowed(value: str) -> bool:
        request = Request(
            address="192.0.2.7", headers={"X-Key": value}, authorization=None, path="/x"
        )
        verdict = await limiting.judge(request, rules, None)
        assert verdict is not None
        return verdict.allowed

    assert await allowed("first")
    refused = [await allowed(f"key-{n}") for n in range(10_000)]
    assert not any(refused)
    assert len(limiter) == 2  # the address's bucket and the first request's shadow one


def test_retry_after_is_the_longest_wait_among_refusals() -> None:
    idx = index(
        policy(
            PLATFORM, "a", rule("per-second", requests=1, limit={"requests": 1, "period": "second"})
        ),
        policy(PLATFORM, "b", rule("per-minute", requests=1)),
    )
    limiter = MemoryLimiter(Clock())
    judge(limiter, idx, envs("shop"))
    refused = judge(limiter, idx, envs("shop"))
    assert not refused.allowed
    assert refused.retry_after == 60


@pytest.mark.parametrize(
    ("text", "quoted"), [("a/b", '"a/b"'), ('say "hi"', '"say \\"hi\\""'), ("é", '"?"')]
)
def test_names_are_written_as_structured_field_strings(text: str, quoted: str) -> None:
    assert sf_string(text) == quoted
