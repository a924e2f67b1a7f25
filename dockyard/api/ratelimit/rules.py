"""RateLimitPolicy objects compiled into rules, and which rules a request is counted by.

This module owns the scope and match semantics, as pure code over plain values:

- **Scope.** A policy in the platform's namespace (``settings.namespace``) applies to
  every request; a policy in any other namespace only to requests whose route has a
  ``{namespace}`` equal to it, so a tenant can limit calls about its own objects and
  never anyone else's.
- **Match.** Every field of a rule's ``match`` that is set must match: the method is
  listed, the path is listed (a route template matched exactly, or a prefix ending in
  ``*`` matched against the concrete path and the template), and the caller is listed
  (their user in ``subjects`` or one of their groups in ``groups``, RBAC-style).
- **Keys.** Each rule counts per subject, client address or header value; callers
  without valid credentials, and requests without the header, count per address.
- **Cap.** A namespace other than the platform's has at most
  ``TENANT_RULES_PER_NAMESPACE`` rules in force: every request about it evaluates each
  of them, in one Redis script. Its policies are taken oldest first (by creation time,
  then name), each whole if its rules fit under the cap with those taken before it; a
  policy that does not fit is not in force, and its report says so.

``PolicyIndex`` is rebuilt from the watch cache's objects on every change, and keeps
per policy the verdict the status reporter writes as the ``Accepted`` condition.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from dockyard.api.ratelimit.backends import ceil_seconds
from dockyard.api.ratelimit.gcra import Quota
from dockyard.core.models.ratelimit import (
    ANONYMOUS_USER,
    UNAUTHENTICATED_GROUP,
    KeyType,
    RateLimitMode,
    RateLimitPolicy,
    RateLimitRule,
)

logger = logging.getLogger(__name__)

AUTHENTICATED_GROUP = "system:authenticated"
# Rules of one tenant namespace in force at once: two full policies (32 rules each).
TENANT_RULES_PER_NAMESPACE = 64


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as far as limits are concerned."""

    user: str
    groups: frozenset[str]
    authenticated: bool


ANONYMOUS = Caller(ANONYMOUS_USER, frozenset({UNAUTHENTICATED_GROUP}), authenticated=False)


@dataclass(frozen=True, slots=True)
class Target:
    """What a request is: its method, path, route template and ``{namespace}``."""

    method: str
    path: str
    route: str | None = None
    namespace: str | None = None


@dataclass(frozen=True, slots=True)
class PolicyRef:
    """The policy a rule came from."""

    namespace: str
    name: str
    uid: str
    mode: RateLimitMode

    @property
    def label(self) -> str:
        """``namespace/name``, as metrics and logs name the policy."""
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """One rule of one policy, ready to be matched against requests."""

    policy: PolicyRef
    name: str
    quota: Quota
    cost: int
    key: KeyType
    header: str | None = None
    methods: frozenset[str] = frozenset()
    subjects: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    exact_paths: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    alias: str | None = None
    """What the rule is called to a caller not known to be allowed in its namespace
    (``namespace/limit-<n>`` for a tenant's rule); ``None``: its ident, always."""
    ident: str = field(init=False)
    """``namespace/policy/rule``: the rule's name in headers."""
    enforced: bool = field(init=False)
    quoted_ident: str = field(init=False)
    """``ident`` as an RFC 8941 sf-string, as both headers name the rule."""
    policy_item: str = field(init=False)
    """This rule's item of the ``RateLimit-Policy`` header (it never changes)."""
    quoted_alias: str = field(init=False)
    alias_item: str = field(init=False)
    """``quoted_ident`` and ``policy_item`` with the alias for the name."""

    def __post_init__(self) -> None:
        # Derived once here rather than per request (frozen: bypass __setattr__).
        ident = f"{self.policy.label}/{self.name}"
        quoted = sf_string(ident)
        quoted_alias = quoted if self.alias is None else sf_string(self.alias)
        limit = f"q={self.quota.requests};w={ceil_seconds(self.quota.period)}"
        object.__setattr__(self, "ident", ident)
        object.__setattr__(self, "enforced", self.policy.mode is RateLimitMode.ENFORCE)
        object.__setattr__(self, "quoted_ident", quoted)
        object.__setattr__(self, "policy_item", f"{quoted};{limit}")
        object.__setattr__(self, "quoted_alias", quoted_alias)
        object.__setattr__(self, "alias_item", f"{quoted_alias};{limit}")

    def shown(self, *, named: bool) -> str:
        """The rule's quoted name in headers: its ident, or its alias unless ``named``."""
        return self.quoted_ident if named else self.quoted_alias

    @property
    def needs_caller(self) -> bool:
        """Whether matching or keying needs to know who is calling (a TokenReview)."""
        return bool(self.subjects or self.groups) or self.key is KeyType.SUBJECT

    def matches_target(self, target: Target) -> bool:
        if self.methods and target.method not in self.methods:
            return False
        if not (self.exact_paths or self.prefixes):
            return True
        if target.route is not None and target.route in self.exact_paths:
            return True
        return any(
            target.path.startswith(prefix)
            or (target.route is not None and target.route.startswith(prefix))
            for prefix in self.prefixes
        )

    def matches_caller(self, caller: Caller) -> bool:
        if not (self.subjects or self.groups):
            return True
        return caller.user in self.subjects or not self.groups.isdisjoint(caller.groups)

    def bucket(self, caller: Caller, address: str, headers: Mapping[str, str]) -> str:
        """The storage key of this rule's bucket for this request (``address`` as
        per-address limits count it: ``addresses.address_group``).

        The key's value is hashed: header values may be credentials, and a hash keeps
        every key the same short length whatever the client sends.
        """
        if self.key is KeyType.HEADER and self.header and headers.get(self.header):
            # Not remembered: a header value may be a credential.
            digest = _digest("header:" + headers[self.header])
        elif self.key is KeyType.SUBJECT and caller.authenticated:
            digest = _remembered_digest("user:" + caller.user)
        else:
            digest = _remembered_digest("ip:" + address)
        return f"{self.policy.uid}:{self.name}:{digest}"


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]


# A busy API sees the same addresses and users again and again: their digests are
# remembered (bounded), so a request's key costs a dictionary lookup, not a hash.
_remembered_digest = functools.lru_cache(maxsize=16384)(_digest)


def sf_string(text: str) -> str:
    """An RFC 8941 sf-string: quoted, with ``\\`` and ``"`` escaped, printable ASCII only."""
    printable = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return '"' + printable.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class PolicyReport:
    """What the API made of one policy: the ``Accepted`` condition it should show."""

    namespace: str
    name: str
    uid: str
    generation: int | None
    accepted: bool
    reason: str
    message: str
    rules: int


def compile_rule(policy: PolicyRef, rule: RateLimitRule, alias: str | None = None) -> CompiledRule:
    paths = rule.match.paths
    return CompiledRule(
        alias=alias,
        policy=policy,
        name=rule.name,
        quota=Quota(rule.limit.requests, rule.limit.period.seconds, rule.burst),
        cost=rule.cost,
        key=rule.key,
        header=rule.header,
        methods=frozenset(m.value for m in rule.match.methods),
        subjects=frozenset(rule.match.subjects),
        groups=frozenset(rule.match.groups),
        exact_paths=frozenset(p for p in paths if not p.endswith("*")),
        prefixes=tuple(p[:-1] for p in paths if p.endswith("*")),
    )


def scope_problems(
    policy: RateLimitPolicy, *, platform_namespace: str, routes: Collection[str]
) -> list[str]:
    """What in an otherwise valid policy can never match, in words for its status."""
    if not routes:
        return []
    tenant = policy.metadata.namespace != platform_namespace
    problems: list[str] = []
    for rule in policy.spec.rules:
        for path in rule.match.paths:
            if path.endswith("*"):
                continue
            if path not in routes:
                problems.append(f"rule {rule.name}: {path} is not a route of the API")
            elif tenant and "{namespace}" not in path:
                problems.append(
                    f"rule {rule.name}: {path} has no {{namespace}}, so a policy outside "
                    f"{platform_namespace} never applies to it"
                )
    return problems


@dataclass
class PolicyIndex:
    """The rules in force, by scope, rebuilt from the RateLimitPolicy objects."""

    platform_namespace: str
    routes: Collection[str] = ()
    everywhere: tuple[CompiledRule, ...] = ()
    by_namespace: dict[str, tuple[CompiledRule, ...]] = field(default_factory=dict)
    reports: dict[tuple[str, str], PolicyReport] = field(default_factory=dict)
    generation: int = 0

    def rebuild(self, objects: Iterable[Mapping[str, Any]]) -> None:
        """Replace every rule with those of ``objects`` (the watch cache's list)."""
        everywhere: list[CompiledRule] = []
        by_namespace: dict[str, list[CompiledRule]] = {}
        reports: dict[tuple[str, str], PolicyReport] = {}
        policies: dict[tuple[str, str], RateLimitPolicy] = {}
        for obj in sorted(objects, key=_identity):
            parsed = _parse(obj)
            if isinstance(parsed, PolicyReport):
                reports[(parsed.namespace, parsed.name)] = parsed
            else:
                policies[_identity(obj)] = parsed
        beyond = _beyond_cap(policies, self.platform_namespace)
        for (namespace, name), policy in policies.items():
            ref = PolicyRef(namespace, name, policy.metadata.uid or name, policy.spec.mode)
            if (namespace, name) in beyond:
                message = beyond[(namespace, name)]
                reports[(namespace, name)] = _report(policy, ref, False, "TooManyRules", message, 0)
                continue
            if namespace == self.platform_namespace:
                compiled = [compile_rule(ref, rule) for rule in policy.spec.rules]
                everywhere += compiled
            else:
                # A tenant's rules are numbered, not named, to callers who may not be
                # allowed in the namespace (the limiter runs before authentication).
                known = by_namespace.setdefault(namespace, [])
                compiled = [
                    compile_rule(ref, rule, alias=f"{namespace}/limit-{len(known) + n}")
                    for n, rule in enumerate(policy.spec.rules, 1)
                ]
                known.extend(compiled)
            problems = scope_problems(
                policy, platform_namespace=self.platform_namespace, routes=self.routes
            )
            in_force = f"{len(compiled)} rule(s) in force ({policy.spec.mode.value})"
            reports[(namespace, name)] = (
                _report(policy, ref, False, "PathsNeverMatch", "; ".join(problems), len(compiled))
                if problems
                else _report(policy, ref, True, "RulesInForce", in_force, len(compiled))
            )
        self.everywhere = tuple(everywhere)
        self.by_namespace = {ns: tuple(rules) for ns, rules in by_namespace.items()}
        self.reports = reports
        self.generation += 1

    def candidates(self, target: Target) -> list[CompiledRule]:
        """Rules in scope for ``target`` whose method and path match, in a stable order
        (platform policies first, then the namespace's, each by name, rules as written)."""
        rules = [r for r in self.everywhere if r.matches_target(target)]
        if target.namespace is not None and target.namespace != self.platform_namespace:
            rules += [
                r for r in self.by_namespace.get(target.namespace, ()) if r.matches_target(target)
            ]
        return rules


def _parse(obj: Mapping[str, Any]) -> RateLimitPolicy | PolicyReport:
    """The policy ``obj`` holds, or the report of why it is ignored."""
    try:
        return RateLimitPolicy.model_validate(obj)
    except ValidationError as exc:
        # The CRD schema and CEL should have refused it; an object stored before a
        # stricter CRD, or written around it, is ignored and says why.
        namespace, name = _identity(obj)
        metadata = obj.get("metadata") or {}
        logger.warning("rate limit policy %s/%s ignored: invalid", namespace, name)
        return PolicyReport(
            namespace=namespace,
            name=name,
            uid=str(metadata.get("uid", "")),
            generation=metadata.get("generation"),
            accepted=False,
            reason="Invalid",
            message=f"ignored: {_first_error(exc)}",
            rules=0,
        )


def _beyond_cap(
    policies: Mapping[tuple[str, str], RateLimitPolicy], platform_namespace: str
) -> dict[tuple[str, str], str]:
    """The tenant policies the cap on a namespace's rules leaves out of force, each with
    the message its report gives.

    Oldest first, so that a policy made later never takes an older one out of force;
    each whole or not at all, as half a policy is a limit nobody wrote.
    """
    taken: dict[str, int] = {}
    beyond: dict[tuple[str, str], str] = {}
    for namespace, name in sorted(policies, key=lambda key: _age(key, policies[key])):
        if namespace == platform_namespace:
            continue
        held, wanted = taken.get(namespace, 0), len(policies[(namespace, name)].spec.rules)
        if held + wanted <= TENANT_RULES_PER_NAMESPACE:
            taken[namespace] = held + wanted
            continue
        beyond[(namespace, name)] = (
            f"not in force: namespace {namespace} may have {TENANT_RULES_PER_NAMESPACE} "
            f"rules in force, its older policies have {held}, and this policy's {wanted} "
            "would exceed that; remove rules or merge policies"
        )
    return beyond


def _age(key: tuple[str, str], policy: RateLimitPolicy) -> tuple[float, str]:
    """When the policy was made (then its name, for those made in the same second)."""
    created = policy.metadata.creation_timestamp
    return (created.timestamp() if created is not None else 0.0, key[1])


def _report(
    policy: RateLimitPolicy,
    ref: PolicyRef,
    accepted: bool,
    reason: str,
    message: str,
    rules: int,
) -> PolicyReport:
    return PolicyReport(
        namespace=ref.namespace,
        name=ref.name,
        uid=ref.uid,
        generation=policy.metadata.generation,
        accepted=accepted,
        reason=reason,
        message=message,
        rules=rules,
    )


def _identity(obj: Mapping[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("namespace", "")), str(metadata.get("name", ""))


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    return f"{where}: {error['msg']}"
