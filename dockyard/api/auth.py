"""Who is calling, and may they: Kubernetes decides, so REST and kubectl agree.

A bearer token is checked with a TokenReview; each request's verb, resource, namespace
and name with a SubjectAccessReview. Both answers are cached briefly (aiocache, in
memory): the token under its SHA-256, never the token itself.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiocache import SimpleMemoryCache
from aiohttp import web
from pydantic import SecretStr

from dockyard.core.kube import KubeClient

logger = logging.getLogger(__name__)

GROUP = "dockyard.io"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller, as the apiserver knows them."""

    user: str
    groups: tuple[str, ...] = ()
    uid: str | None = None
    extra: Mapping[str, Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Permission:
    """What an operation needs: a verb on a resource of the ``dockyard.io`` group.

    The namespace and name come from the request's path parameters of the same names.
    """

    verb: str
    resource: str
    subresource: str = ""
    group: str = GROUP


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


async def _remember(cache: SimpleMemoryCache, key: str, value: object, ttl: float) -> None:
    """Cache ``value`` for ``ttl`` seconds; with a ttl of 0, not at all (aiocache would
    keep it for ever: a revoked token would stay accepted)."""
    if ttl > 0:
        await cache.set(key, value, ttl=ttl)


# A bearer token is visible ASCII (RFC 6750's b64token, and every token Kubernetes or an
# OIDC provider issues): anything else is refused without a review. aiohttp hands header
# bytes that are not UTF-8 over as surrogates, which no review could carry.
_WELL_FORMED: Final = re.compile(r"[\x21-\x7e]+")
# How long a token found valid stays vouched for: reviewing it again (once its cached
# answer expired) is not charged to its address's review cap. It is still reviewed, so
# a revoked token is refused as soon as its cached answer expires.
VOUCHED_SECONDS: Final = 900.0
# Where a request keeps the review of its token, so the rate limiter and authentication
# review it once between them (``memo``: the aiohttp request).
_REVIEWED: Final = web.RequestKey("token_review", tuple)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


class Authenticator:
    """TokenReview with a short cache keyed by the token's hash."""

    def __init__(self, kube: KubeClient, *, ttl: float, audiences: Sequence[str] = ()) -> None:
        self.kube = kube
        self.ttl = ttl
        self.audiences = list(audiences)
        # In-memory: no I/O to time out, and aiocache's default timeout costs a task per call.
        self.cache = SimpleMemoryCache(timeout=None)
        self.vouched = SimpleMemoryCache(timeout=None)

    async def knows(self, token: str, memo: MutableMapping[Any, Any] | None = None) -> bool:
        """Whether authenticating ``token`` costs its address nothing of its review cap:
        it is malformed (refused with no review), this request reviewed it already
        (``memo``), its answer is cached, or it was found valid within the last
        ``VOUCHED_SECONDS`` (made-up tokens from its address must not lock it out)."""
        if not _WELL_FORMED.fullmatch(token):
            return True
        key = _digest(token)
        if memo is not None and memo.get(_REVIEWED, (None,))[0] == key:
            return True
        return bool(await self.cache.exists(key) or await self.vouched.exists(key))

    async def authenticate(
        self, token: str, memo: MutableMapping[Any, Any] | None = None
    ) -> Principal | None:
        """The caller ``token`` authenticates, or None. With ``memo`` (the request), a
        second call for the same token answers as the first did, failure included."""
        if not _WELL_FORMED.fullmatch(token):
            return None
        key = _digest(token)
        if memo is not None:
            reviewed, answer = memo.get(_REVIEWED, (None, None))
            if reviewed == key:
                if isinstance(answer, BaseException):
                    raise answer
                return answer if isinstance(answer, Principal) else None
        try:
            principal = await self._review(key, token)
        except Exception as exc:
            if memo is not None:
                memo[_REVIEWED] = (key, exc)
            raise
        if memo is not None:
            memo[_REVIEWED] = (key, principal)
        return principal

    async def _review(self, key: str, token: str) -> Principal | None:
        cached = await self.cache.get(key)
        if cached is not None:
            return cached if isinstance(cached, Principal) else None
        spec: dict[str, Any] = {"token": token}
        if self.audiences:
            spec["audiences"] = self.audiences
        review = await self.kube.create(
            "/apis/authentication.k8s.io/v1/tokenreviews",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec},
            deadline=self.kube.timeouts.review,
        )
        status = review.get("status") or {}
        principal: Principal | None = None
        if status.get("authenticated") and self._for_us(status):
            user = status.get("user") or {}
            principal = Principal(
                user=str(user.get("username", "")),
                groups=tuple(user.get("groups") or ()),
                uid=user.get("uid"),
                extra={k: tuple(v) for k, v in (user.get("extra") or {}).items()},
            )
        # Failures are cached too (as False), so a flood of bad tokens costs one review each.
        await _remember(self.cache, key, principal if principal is not None else False, self.ttl)
        if principal is not None:
            await self.vouched.set(key, True, ttl=VOUCHED_SECONDS)
        else:
            await self.vouched.delete(key)
        return principal

    def _for_us(self, status: Mapping[str, Any]) -> bool:
        """With audiences configured, the token must be valid for one of them.

        The apiserver answers with the audiences it found the token valid for; an
        authenticator that ignores audiences answers with none, which is not enough.
        """
        if not self.audiences:
            return True
        return bool(set(status.get("audiences") or ()) & set(self.audiences))


class Authorizer:
    """SubjectAccessReview with a short cache keyed by who asks for what."""

    def __init__(self, kube: KubeClient, *, ttl: float) -> None:
        self.kube = kube
        self.ttl = ttl
        self.cache = SimpleMemoryCache(timeout=None)

    async def check(
        self,
        principal: Principal,
        permission: Permission,
        *,
        namespace: str | None = None,
        name: str | None = None,
    ) -> Decision:
        attributes: dict[str, Any] = {
            "group": permission.group,
            "resource": permission.resource,
            "verb": permission.verb,
        }
        if permission.subresource:
            attributes["subresource"] = permission.subresource
        if namespace:
            attributes["namespace"] = namespace
        if name:
            attributes["name"] = name
        key = json.dumps([*_identity(principal), attributes], sort_keys=True)
        cached = await self.cache.get(key)
        if isinstance(cached, Decision):
            return cached
        review = await self.kube.create(
            "/apis/authorization.k8s.io/v1/subjectaccessreviews",
            {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {
                    "user": principal.user,
                    "groups": list(principal.groups),
                    "uid": principal.uid,
                    "extra": {k: list(v) for k, v in principal.extra.items()},
                    "resourceAttributes": attributes,
                },
            },
            deadline=self.kube.timeouts.review,
        )
        status = review.get("status") or {}
        decision = Decision(bool(status.get("allowed")), str(status.get("reason") or ""))
        await _remember(self.cache, key, decision, self.ttl)
        return decision

    async def matrix(
        self,
        principal: Principal,
        pairs: Sequence[tuple[str, str]],
        *,
        namespace: str,
        concurrency: int = 8,
    ) -> Matrix:
        """Many (resource, verb) decisions, ``concurrency`` reviews at a time, cached as one
        entry per caller and namespace (see :class:`Matrix`)."""
        key = json.dumps(["matrix", *_identity(principal), namespace, _pairs_key(tuple(pairs))])
        cached = await self.cache.get(key)
        if isinstance(cached, Matrix):
            return cached
        semaphore = asyncio.Semaphore(concurrency)

        async def one(resource: str, verb: str) -> Decision:
            async with semaphore:
                permission = Permission(verb=verb, resource=resource)
                return await self.check(principal, permission, namespace=namespace)

        decisions = await asyncio.gather(*(one(resource, verb) for resource, verb in pairs))
        result = Matrix({pair: d.allowed for pair, d in zip(pairs, decisions, strict=True)})
        await _remember(self.cache, key, result, self.ttl)
        return result


@dataclass(slots=True)
class Matrix:
    """A caller's decisions for many (resource, verb) pairs in one namespace.

    Cached as one entry; ``rendered`` keeps what a route made of it (``/me``'s body), so
    the rendering is done once per entry and expires with the decisions it shows.
    """

    allowed: dict[tuple[str, str], bool]
    rendered: dict[str, bytes] = field(default_factory=dict)


@functools.lru_cache(maxsize=64)
def _pairs_key(pairs: tuple[tuple[str, str], ...]) -> str:
    """A short, stable name for a set of pairs (a route asks the same set every time)."""
    return hashlib.sha256(json.dumps(pairs).encode()).hexdigest()[:32]


def _identity(principal: Principal) -> list[Any]:
    """Everything a SubjectAccessReview is asked about the caller, as a cache key part.

    The uid and extra are part of it: an authorizer (a webhook, say) may decide on them,
    so two callers differing only there must not share a cached decision.
    """
    extra = {k: sorted(v) for k, v in principal.extra.items()}
    return [principal.user, sorted(principal.groups), principal.uid, extra]


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header, or None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


# The kube-apiserver's audit webhook posts here (dockyard.api.routes.kubernetes_audit).
AUDIT_SINK_PATH = "/api/v1/audit/kubernetes"


def holds_sink_token(authorization: str | None, expected: SecretStr | None) -> bool:
    """Whether an ``Authorization`` header carries the audit sink's token (compared in
    constant time); never with the sink off."""
    if expected is None:
        return False
    token = bearer_token(authorization) or ""
    presented = token.encode("utf-8", "surrogateescape")
    return hmac.compare_digest(presented, expected.get_secret_value().encode())
