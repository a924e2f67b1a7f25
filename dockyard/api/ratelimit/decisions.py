"""One request's verdict from the answers of every rule it matched, and its headers.

Combination, as ``docs/ratelimits.md`` states it:

- every matching rule of every policy in scope is evaluated;
- the request is rejected when any rule of an **Enforce** policy refuses it, and then
  no bucket is charged, enforced or shadow (``gcra.commits``);
- rules of **Shadow** policies never reject; each is counted on its own, and charged on
  its own for a request the enforced rules let through;
- the response reports every enforced rule, most restrictive first: in
  ``RateLimit-Policy`` (``q`` requests per ``w`` seconds) and ``RateLimit`` (``r``
  units remaining, ``t`` seconds until the bucket is full again), in the structured
  field form of draft-ietf-httpapi-ratelimit-headers; a rejection adds
  ``Retry-After``, the longest wait among the rules that refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dockyard.api.ratelimit.backends import BucketResult, ceil_seconds
from dockyard.api.ratelimit.rules import CompiledRule

POLICY_HEADER = "RateLimit-Policy"
STATE_HEADER = "RateLimit"


@dataclass(frozen=True, slots=True)
class RuleDecision:
    """One rule's answer for one request."""

    rule: CompiledRule
    result: BucketResult
    bucket: str

    @property
    def throttled(self) -> bool:
        return not self.result.allowed

    def restrictiveness(self) -> tuple[bool, int, float]:
        """Sort key: refusals first, then the fewest units left, then the longest reset."""
        return (self.result.allowed, self.result.remaining, -self.result.reset)


@dataclass(frozen=True, slots=True)
class Verdict:
    """Every matching rule's answer, and what they mean together."""

    decisions: tuple[RuleDecision, ...]

    @property
    def enforced(self) -> list[RuleDecision]:
        """The enforced rules' answers, most restrictive first."""
        return sorted(
            (d for d in self.decisions if d.rule.enforced), key=RuleDecision.restrictiveness
        )

    @property
    def allowed(self) -> bool:
        return not any(d.throttled for d in self.decisions if d.rule.enforced)

    @property
    def refusals(self) -> list[RuleDecision]:
        return [d for d in self.enforced if d.throttled]

    @property
    def shadow_refusals(self) -> list[RuleDecision]:
        return [d for d in self.decisions if not d.rule.enforced and d.throttled]

    @property
    def retry_after(self) -> int:
        """Whole seconds until every refusing rule would let the request through."""
        return max((ceil_seconds(d.result.retry_after) for d in self.refusals), default=0)

    def headers(self, *, named: bool = True) -> dict[str, str]:
        """``RateLimit-Policy`` and ``RateLimit`` for the enforced rules; none without.

        Unless ``named`` (the caller was authorized in the request's namespace), a
        tenant's rules go by their aliases."""
        enforced = self.enforced
        if not enforced:
            return {}
        return {
            POLICY_HEADER: ", ".join(policy_item(d.rule, named=named) for d in enforced),
            STATE_HEADER: ", ".join(state_item(d, named=named) for d in enforced),
        }


def policy_item(rule: CompiledRule, *, named: bool = True) -> str:
    """``"name";q=<requests>;w=<period seconds>`` (made once, when the rule is compiled)."""
    return rule.policy_item if named else rule.alias_item


def state_item(decision: RuleDecision, *, named: bool = True) -> str:
    """``"name";r=<remaining>;t=<seconds until full>``."""
    result = decision.result
    name = decision.rule.shown(named=named)
    return f"{name};r={result.remaining};t={ceil_seconds(result.reset)}"


def describe(refusals: Sequence[RuleDecision]) -> str:
    """The 429's detail: which limit was hit, in words.

    It is written before authentication, so a tenant's rule goes by its alias, with
    where to look it up; the platform's rules are named."""
    first = refusals[0].rule
    quota = first.quota
    unit = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}.get(
        int(quota.period), f"{quota.period:g} s"
    )
    more = f" (and {len(refusals) - 1} more rule(s))" if len(refusals) > 1 else ""
    if first.alias is None:
        which = f"rule {first.name} of RateLimitPolicy {first.policy.label}"
    else:
        which = (
            f"limit {first.alias} (the namespace's RateLimitPolicies name it: kubectl get "
            f"ratelimitpolicies -n {first.policy.namespace})"
        )
    return (
        f"Rate limit exceeded: {which} allows {quota.requests} requests per {unit} with a "
        f"burst of {quota.burst}{more}."
    )
