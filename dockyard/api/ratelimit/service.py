"""Judging one request: who is calling, which buckets it is counted in, and the verdict.

``RateLimiting`` is what the middleware calls. It learns who is calling only when a
rule in play needs it (a ``subjects``/``groups`` match or a ``Subject`` key): rules
keyed by address or header cost no TokenReview. The caller is resolved through the
API's ``Authenticator``, whose cache ``authenticate_and_authorize`` then hits, so a
request is reviewed once whichever layer asks first.

A bearer token the API has not verified yet is a caller that may not exist: before a
TokenReview is spent on it, the address's review cap (``reviews``) is charged, so a
flood of made-up tokens from one address is turned away without reaching the
apiserver. The anonymous budget is never consulted for a token: it counts requests
that turned out to have no valid credentials, and spending it must not lock out a
valid token arriving from the same address (every client behind one ingress).

It also owns what a decision leaves behind: metrics, the throttle counts that become
``status.throttled``, and security log events, sampled so that a flood of rejections
writes a line per rule and key every few seconds rather than one per request.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import aiohttp
from prometheus_client import Counter

from dockyard.api.auth import Authenticator, bearer_token
from dockyard.api.ratelimit import metrics
from dockyard.api.ratelimit.addresses import Network, address_group
from dockyard.api.ratelimit.backends import Bucket, Limiter, LimiterUnavailable, MemoryLimiter
from dockyard.api.ratelimit.decisions import RuleDecision, Verdict
from dockyard.api.ratelimit.reviews import ReviewCap
from dockyard.api.ratelimit.rules import (
    ANONYMOUS,
    AUTHENTICATED_GROUP,
    Caller,
    CompiledRule,
    PolicyIndex,
)
from dockyard.api.ratelimit.status import ThrottleLedger
from dockyard.core import logs
from dockyard.core.breakers import DependencyUnavailable
from dockyard.core.kube import KubeError

logger = logging.getLogger(__name__)


class FailureMode(StrEnum):
    """What happens to requests when the shared counters cannot be reached."""

    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Request:
    """What the service needs of an HTTP request."""

    address: str
    headers: Mapping[str, str]
    authorization: str | None
    path: str
    memo: MutableMapping[Any, Any] | None = None
    """Where the token's review is kept for authentication (the aiohttp request)."""


class RateLimiting:
    """The rate limiter of one API process."""

    def __init__(
        self,
        *,
        index: PolicyIndex,
        limiter: Limiter,
        instruments: metrics.RateLimitMetrics,
        ledger: ThrottleLedger,
        failure_mode: FailureMode = FailureMode.OPEN,
        reviews: ReviewCap | None = None,
        client_networks: Sequence[Network] = (),
        fallback: MemoryLimiter | None = None,
    ) -> None:
        self.index = index
        self.client_networks = tuple(client_networks)
        self.reviews = reviews
        self.limiter = limiter
        self.instruments = instruments
        self.ledger = ledger
        self.failure_mode = failure_mode
        # Closed mode's stand-in while the shared counters are down: this replica's own.
        self._fallback = fallback if fallback is not None else MemoryLimiter()
        self._sampler = logs.EventSampler()
        # By (rule ident, outcome): the child, and its label values to remove it by.
        self._counters: dict[tuple[str, str], tuple[Counter, tuple[str, str, str]]] = {}
        self._check_duration = instruments.check_duration.labels(limiter.name)

    async def judge(
        self,
        request: Request,
        rules: Sequence[CompiledRule],
        authenticator: Authenticator | None,
    ) -> Verdict | None:
        """The verdict for a request that ``rules`` (already in scope and matching its
        method and path) may count; None when none applies, or when the shared counters
        are down and the failure mode is open. When it is closed, this replica's own
        memory counts instead until they are back (``_check``): never a 503 for Redis's
        sake."""
        caller = ANONYMOUS
        if any(rule.needs_caller for rule in rules):
            identified = await self._identify(request, authenticator)
            if identified is None:
                # Who calls is unknown: the rules that need no caller still count.
                rules = [rule for rule in rules if not rule.needs_caller]
            else:
                caller = identified
        applicable = [rule for rule in rules if rule.matches_caller(caller)]
        if not applicable:
            return None
        verdict = await self._check(request, caller, applicable, charge=True)
        if verdict is not None:
            self._record(verdict, caller, request)
        return verdict

    async def _identify(
        self, request: Request, authenticator: Authenticator | None
    ) -> Caller | None:
        """Who is calling; None when the apiserver could not say (the request is then
        answered 503 by ``authenticate_and_authorize``, without a second review, and
        counted only by the rules that need no caller)."""
        token = bearer_token(request.authorization)
        if token is None or authenticator is None:
            return ANONYMOUS
        if self.reviews is not None and not await authenticator.knows(token, request.memo):
            await self.reviews.admit(request.address)
        try:
            principal = await authenticator.authenticate(token, request.memo)
        except (KubeError, DependencyUnavailable, aiohttp.ClientError, TimeoutError):
            return None
        if principal is None:
            return ANONYMOUS
        return Caller(principal.user, frozenset({*principal.groups, AUTHENTICATED_GROUP}), True)

    async def _check(
        self, request: Request, caller: Caller, rules: Sequence[CompiledRule], *, charge: bool
    ) -> Verdict | None:
        # A client as per-address limits count it: an IPv6 one by its /64, outside the
        # cluster's own networks.
        address = address_group(request.address, self.client_networks)
        buckets = [
            Bucket(
                key=rule.bucket(caller, address, request.headers),
                quota=rule.quota,
                cost=rule.cost,
                enforced=rule.enforced,
            )
            for rule in rules
        ]
        started = time.perf_counter()
        try:
            results = await self.limiter.check(buckets, charge=charge)
        except LimiterUnavailable as exc:
            self._backend_failed(request, str(exc))
            if self.failure_mode is FailureMode.OPEN:
                return None
            results = self._fallback.check_now(buckets, charge=charge)
        finally:
            self._check_duration.observe(time.perf_counter() - started)
        return Verdict(
            tuple(
                RuleDecision(rule, result, bucket.key)
                for rule, result, bucket in zip(rules, results, buckets, strict=True)
            )
        )

    def _backend_failed(self, request: Request, reason: str) -> None:
        mode = self.failure_mode.value
        self.instruments.backend_errors.labels(self.limiter.name, mode).inc()
        if self._sampler.due(f"backend:{self.limiter.name}"):
            logs.security_event(
                logger,
                "ratelimit.backend_unavailable",
                backend=self.limiter.name,
                failure_mode=mode,
                reason=reason,
                source_ip=request.address,
                path=request.path,
            )

    def _record(self, verdict: Verdict, caller: Caller, request: Request) -> None:
        now = time.time()
        for decision in verdict.decisions:
            rule = decision.rule
            if not decision.throttled:
                outcome = metrics.ALLOWED
            elif rule.enforced:
                outcome = metrics.THROTTLED
            else:
                outcome = metrics.SHADOW
            self._counter(rule, outcome).inc()
            if outcome == metrics.ALLOWED:
                continue
            self.ledger.record(rule.policy.uid, rule.name, now)
            if self._sampler.due(f"{outcome}:{decision.bucket}"):
                logs.security_event(
                    logger,
                    "ratelimit.throttled" if rule.enforced else "ratelimit.shadow_throttled",
                    policy=rule.policy.label,
                    rule=rule.name,
                    actor=caller.user,
                    source_ip=request.address,
                    path=request.path,
                    retry_after=round(decision.result.retry_after, 3),
                )

    def _counter(self, rule: CompiledRule, outcome: str) -> Counter:
        # Children are cached: .labels() takes a lock and builds a tuple on every call.
        key = (rule.ident, outcome)
        cached = self._counters.get(key)
        if cached is None:
            labels = (rule.policy.label, rule.name, outcome)
            cached = (self.instruments.decisions.labels(*labels), labels)
            self._counters[key] = cached
        return cached[0]

    def forget_removed_rules(self) -> None:
        """Drop the decision series of rules no longer in force (after each rebuild of
        the index): tenants make, rename and delete policies, and each rule's series
        would otherwise stay for good."""
        index = self.index
        live = {rule.ident for rule in index.everywhere}
        live.update(rule.ident for rules in index.by_namespace.values() for rule in rules)
        for key in [key for key in self._counters if key[0] not in live]:
            _, labels = self._counters.pop(key)
            with contextlib.suppress(KeyError):
                self.instruments.decisions.remove(*labels)
