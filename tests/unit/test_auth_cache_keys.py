"""Cached authorization decisions belong to one exact identity: user, groups, uid, extra.

An authorizer (a webhook, say) may decide on a caller's uid or extra, so two callers who
differ only there must each get their own SubjectAccessReview.
"""

from __future__ import annotations

from typing import Any, cast

from dockyard.api.auth import Authenticator, Authorizer, Permission, Principal
from dockyard.core.kube import KubeClient, KubeTimeouts


class _Reviews:
    """A stand-in apiserver: allows only the uid ``good``, and counts the reviews."""

    timeouts = KubeTimeouts()

    def __init__(self, status: dict[str, Any] | None = None) -> None:
        self.specs: list[dict[str, Any]] = []
        self.status = status

    async def create(self, path: str, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.specs.append(body["spec"])
        if self.status is not None:
            return {"status": self.status}
        return {"status": {"allowed": body["spec"]["uid"] == "good"}}


def _authorizer(reviews: _Reviews) -> Authorizer:
    return Authorizer(cast(KubeClient, reviews), ttl=60)


READ = Permission("get", "environments")


async def test_callers_differing_only_in_uid_do_not_share_a_decision() -> None:
    reviews = _Reviews()
    authorizer = _authorizer(reviews)
    good = Principal("alice", ("dev",), uid="good")
    other = Principal("alice", ("dev",), uid="other")
    assert (await authorizer.check(good, READ, namespace="shop")).allowed
    assert not (await authorizer.check(other, READ, namespace="shop")).allowed
    assert (await authorizer.check(good, READ, namespace="shop")).allowed
    assert len(reviews.specs) == 2  # the third answer came from the cache


async def test_callers_differing_only_in_extra_do_not_share_a_decision() -> None:
    reviews = _Reviews()
    authorizer = _authorizer(reviews)
    scoped = Principal("alice", uid="good", extra={"scopes": ("read",)})
    wider = Principal("alice", uid="good", extra={"scopes": ("read", "write")})
    await authorizer.check(scoped, READ, namespace="shop")
    await authorizer.check(wider, READ, namespace="shop")
    assert [spec["extra"] for spec in reviews.specs] == [
        {"scopes": ["read"]},
        {"scopes": ["read", "write"]},
    ]


async def test_the_matrix_is_cached_per_exact_identity() -> None:
    reviews = _Reviews()
    authorizer = _authorizer(reviews)
    pairs = [("environments", "get")]
    good = await authorizer.matrix(Principal("alice", uid="good"), pairs, namespace="shop")
    other = await authorizer.matrix(Principal("alice", uid="other"), pairs, namespace="shop")
    assert good.allowed == {("environments", "get"): True}
    assert other.allowed == {("environments", "get"): False}
    # Asked again, each caller gets its own cached entry: no review is spent.
    asked = len(reviews.specs)
    again = await authorizer.matrix(Principal("alice", uid="other"), pairs, namespace="shop")
    assert again is other
    assert len(reviews.specs) == asked


async def test_a_token_not_valid_for_the_configured_audience_is_not_authenticated() -> None:
    status = {"authenticated": True, "user": {"username": "alice"}, "audiences": ["elsewhere"]}
    reviews = _Reviews(status)
    authenticator = Authenticator(cast(KubeClient, reviews), ttl=60, audiences=["dockyard-api"])
    assert await authenticator.authenticate("t0ken") is None
    assert reviews.specs == [{"token": "t0ken", "audiences": ["dockyard-api"]}]
    status["audiences"] = ["dockyard-api"]
    fresh = Authenticator(cast(KubeClient, reviews), ttl=60, audiences=["dockyard-api"])
    principal = await fresh.authenticate("t0ken")
    assert principal is not None
    assert principal.user == "alice"


async def test_a_ttl_of_zero_caches_nothing_rather_than_for_ever() -> None:
    """aiocache keeps an entry set with ttl 0 for good: a token revoked after its first
    review would stay accepted, and every made-up token would stay in memory."""
    authenticated = {"authenticated": True, "user": {"username": "alice"}}
    tokens = _Reviews(authenticated)
    authenticator = Authenticator(cast(KubeClient, tokens), ttl=0)
    assert await authenticator.authenticate("t0ken") is not None
    tokens.status = {"authenticated": False}  # revoked

    assert await authenticator.authenticate("t0ken") is None
    assert not await authenticator.knows("t0ken")
    reviews = _Reviews()
    authorizer = Authorizer(cast(KubeClient, reviews), ttl=0)
    good = Principal("alice", uid="good")
    await authorizer.check(good, READ, namespace="shop")
    await authorizer.matrix(good, [("environments", "get")], namespace="shop")
    assert len(reviews.specs) == 2  # asked each time
    assert list(await authorizer.cache.raw("keys")) == []  # type: ignore[attr-defined]
