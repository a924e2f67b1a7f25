"""Bearer tokens on the way into the rate limiter and authentication.

A token is reviewed once per request between the two, a malformed one never, a failed
review leaves the rules that need no caller counting, and a token found valid lately is
not charged to its address's review cap, which made-up tokens may have spent.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from dockyard.api.auth import Authenticator, holds_sink_token
from dockyard.api.errors import Problem
from dockyard.api.ratelimit.backends import MemoryLimiter
from dockyard.api.ratelimit.metrics import RateLimitMetrics
from dockyard.api.ratelimit.reviews import ReviewCap
from dockyard.api.ratelimit.rules import PolicyIndex, Target
from dockyard.api.ratelimit.service import RateLimiting, Request
from dockyard.api.ratelimit.status import ThrottleLedger
from dockyard.core.kube import KubeClient, KubeTimeouts

ADDRESS = "192.0.2.7"
VALID = "valid-token"


class _Apiserver:
    """TokenReviews: ``VALID`` is alice's unless revoked; ``down`` times every review out."""

    timeouts = KubeTimeouts()

    def __init__(self) -> None:
        self.reviewed: list[str] = []
        self.revoked = False
        self.down = False

    async def create(self, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        if self.down:
            raise TimeoutError
        token = body["spec"]["token"]
        self.reviewed.append(token)
        if token == VALID and not self.revoked:
            return {"status": {"authenticated": True, "user": {"username": "alice"}}}
        return {"status": {"authenticated": False}}


def _limiting(*rules: dict[str, Any], reviews: ReviewCap | None = None) -> RateLimiting:
    index = PolicyIndex("dockyard-system", frozenset({"/x"}))
    index.rebuild(
        [
            {
                "apiVersion": "dockyard.io/v1alpha1",
                "kind": "RateLimitPolicy",
                "metadata": {"namespace": "dockyard-system", "name": "p", "uid": "u"},
                "spec": {"mode": "Enforce", "rules": list(rules)},
            }
        ]
    )
    return RateLimiting(
        index=index,
        limiter=MemoryLimiter(),
        instruments=RateLimitMetrics(CollectorRegistry()),
        ledger=ThrottleLedger(),
        reviews=reviews,
    )


def _rule(name: str, requests: int, **fields: Any) -> dict[str, Any]:
    return {"name": name, "limit": {"requests": requests, "period": "minute"}, **fields}


ANONYMOUS_PER_ADDRESS = _rule(
    "anonymous", 1, match={"groups": ["system:unauthenticated"]}, key="ClientIP"
)
PER_ADDRESS = _rule("per-address", 1, key="ClientIP")
PER_SUBJECT = _rule("per-subject", 100)


async def _judge(
    limiting: RateLimiting, authenticator: Authenticator, authorization: str
) -> tuple[bool | None, dict[Any, Any]]:
    memo: dict[Any, Any] = {}
    request = Request(ADDRESS, {}, authorization, "/x", memo=memo)
    rules = limiting.index.candidates(Target("GET", "/x", "/x", None))
    verdict = await limiting.judge(request, rules, authenticator)
    return (None if verdict is None else verdict.allowed), memo


@pytest.mark.parametrize(
    "token",
    [
        "\udcff\udcfe",  # bytes that are not UTF-8, as aiohttp hands them over
        "caf\u00e9",
        "two words",
    ],
)
async def test_a_malformed_token_is_anonymous_without_a_review_or_a_500(token: str) -> None:
    apiserver = _Apiserver()
    authenticator = Authenticator(cast(KubeClient, apiserver), ttl=10)
    limiting = _limiting(ANONYMOUS_PER_ADDRESS)
    assert (await _judge(limiting, authenticator, f"Bearer {token}"))[0] is True
    assert (await _judge(limiting, authenticator, f"Bearer {token}"))[0] is False
    assert apiserver.reviewed == []
    assert await authenticator.knows(token)  # costs its address no review


async def test_a_token_is_reviewed_once_per_request_with_no_cache() -> None:
    apiserver = _Apiserver()
    authenticator = Authenticator(cast(KubeClient, apiserver), ttl=0)
    limiting = _limiting(PER_SUBJECT)
    allowed, memo = await _judge(limiting, authenticator, f"Bearer {VALID}")
    assert allowed is True
    # Authentication, later in the same request, asks nothing more of the apiserver.
    assert await authenticator.knows(VALID, memo)
    principal = await authenticator.authenticate(VALID, memo)
    assert principal is not None
    assert principal.user == "alice"
    assert apiserver.reviewed == [VALID]
    # The next request reviews it again (no cache): a revoked token is refused at once.
    apiserver.revoked = True
    assert await authenticator.authenticate(VALID, {}) is None
    assert apiserver.reviewed == [VALID, VALID]


async def test_a_failed_review_is_not_tried_again_in_the_same_request() -> None:
    apiserver = _Apiserver()
    apiserver.down = True
    authenticator = Authenticator(cast(KubeClient, apiserver), ttl=10)
    memo: dict[Any, Any] = {}
    with pytest.raises(TimeoutError):
        await authenticator.authenticate(VALID, memo)
    apiserver.down = False
    assert await authenticator.knows(VALID, memo)
    with pytest.raises(TimeoutError):
        await authenticator.authenticate(VALID, memo)
    assert apiserver.reviewed == []


async def test_when_the_caller_cannot_be_known_the_rules_that_need_none_still_count() -> None:
    apiserver = _Apiserver()
    apiserver.down = True
    authenticator = Authenticator(cast(KubeClient, apiserver), ttl=10)
    limiting = _limiting(PER_ADDRESS, PER_SUBJECT)
    assert (await _judge(limiting, authenticator, f"Bearer {VALID}"))[0] is True
    assert (await _judge(limiting, authenticator, f"Bearer {VALID}"))[0] is False


async def test_made_up_tokens_do_not_lock_out_a_token_found_valid_lately() -> None:
    apiserver = _Apiserver()
    authenticator = Authenticator(cast(KubeClient, apiserver), ttl=0)
    cap = ReviewCap(MemoryLimiter(), per_minute=2, scope="t")
    limiting = _limiting(PER_SUBJECT, reviews=cap)
    assert (await _judge(limiting, authenticator, f"Bearer {VALID}"))[0] is True
    # Someone at the same address spends its review cap with made-up tokens ...
    assert (await _judge(limiting, authenticator, "Bearer made-up-1"))[0] is True
    with pytest.raises(Problem) as refused:
        await _judge(limiting, authenticator, "Bearer made-up-2")
    assert refused.value.status == 429
    # ... and alice's token, reviewed again (no cache), is not charged to it.
    for _ in range(3):
        assert (await _judge(limiting, authenticator, f"Bearer {VALID}"))[0] is True
    assert apiserver.reviewed.count(VALID) == 4
    # Once revoked, it is charged like any other token again.
    apiserver.revoked = True
    assert (await _judge(limiting, authenticator, f"Bearer {VALID}"))[0] is True
    assert not await authenticator.knows(VALID)
    with pytest.raises(Problem):
        await _judge(limiting, authenticator, f"Bearer {VALID}")


def test_the_audit_sinks_token_check_takes_bytes_that_are_not_utf8() -> None:
    expected = SecretStr("sink-token")
    assert not holds_sink_token("Bearer \udcff\udcfe", expected)
    assert holds_sink_token("Bearer sink-token", expected)
