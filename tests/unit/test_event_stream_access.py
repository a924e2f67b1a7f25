"""Which SubjectAccessReviews an event stream spends: a caller who may watch a kind
cluster-wide is asked once for it, not once per namespace the log holds events of; the
others once per namespace and kind, within a budget per re-check interval. And whose
groups the re-check asks with: the token's now, not those it had when the stream opened.

The authorizers here are stand-ins that answer from a table (counting the questions) or
by group (the real one asks the apiserver; tests/integration/test_event_stream.py covers
it)."""

from __future__ import annotations

from collections import Counter

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from dockyard.api import keys
from dockyard.api.auth import Decision, Permission, Principal
from dockyard.api.routes.events import _Access
from dockyard.core.settings import Settings


class TableAuthorizer:
    def __init__(self, cluster_wide: set[str], namespaced: set[tuple[str, str]]) -> None:
        self.cluster_wide = cluster_wide
        self.namespaced = namespaced
        self.asked: Counter[tuple[str, str | None]] = Counter()

    async def check(
        self, principal: Principal, permission: Permission, *, namespace: str | None = None
    ) -> Decision:
        self.asked[(permission.resource, namespace)] += 1
        allowed = permission.resource in self.cluster_wide or (
            namespace is not None and (permission.resource, namespace) in self.namespaced
        )
        return Decision(allowed, "")


def _access(authorizer: TableAuthorizer, **settings: object) -> _Access:
    app = web.Application()
    app[keys.AUTHORIZER] = authorizer  # type: ignore[misc]
    app[keys.SETTINGS] = Settings.model_validate(settings)
    request = make_mocked_request("GET", "/api/v1/events", app=app)
    request[keys.PRINCIPAL] = Principal("ops")
    return _Access(request, only=None)


async def test_a_cluster_wide_watcher_is_asked_once_per_kind() -> None:
    authorizer = TableAuthorizer(cluster_wide={"backups"}, namespaced=set())
    access = _access(authorizer)
    shown = [await access.may_watch("backups", f"team-{i}") for i in range(50)]
    assert all(shown)
    assert authorizer.asked == Counter({("backups", None): 1})


async def test_a_namespaced_watcher_is_asked_per_namespace_and_sees_only_its_own() -> None:
    authorizer = TableAuthorizer(cluster_wide=set(), namespaced={("restores", "team-1")})
    access = _access(authorizer)
    shown = {ns: await access.may_watch("restores", ns) for ns in ("team-1", "team-2")}
    assert shown == {"team-1": True, "team-2": False}
    assert authorizer.asked == Counter(
        {("restores", None): 1, ("restores", "team-1"): 1, ("restores", "team-2"): 1}
    )


async def test_a_decision_is_asked_once_per_interval() -> None:
    authorizer = TableAuthorizer(cluster_wide=set(), namespaced={("backups", "team-1")})
    access = _access(authorizer)
    for _ in range(3):
        assert await access.may_watch("backups", "team-1")
        assert not await access.may_watch("backups", "team-2")
        assert await access.allows("team-1") is False  # environments: not granted
    assert authorizer.asked == Counter(
        {
            ("backups", None): 1,
            ("backups", "team-1"): 1,
            ("backups", "team-2"): 1,
            ("environments", "team-1"): 1,
        }
    )


async def test_the_replay_stops_asking_once_its_budget_is_spent() -> None:
    authorizer = TableAuthorizer(cluster_wide=set(), namespaced=set())
    access = _access(authorizer, stream_reviews=2)
    for ns in ("team-1", "team-2"):
        assert access.may_decide("backups", ns)
        await access.may_watch("backups", ns)
    assert not access.may_decide("backups", "team-3")
    # What is known is still answered, and a kind watched cluster-wide needs no budget.
    assert access.may_decide("backups", "team-1")
    access.kinds_everywhere["restores"] = True
    assert access.may_decide("restores", "team-3")


class GroupAuthorizer:
    """Grants ``watch`` on environments in a namespace to the group of that name."""

    async def check(
        self, principal: Principal, permission: Permission, *, namespace: str | None = None
    ) -> Decision:
        return Decision(namespace is not None and namespace in principal.groups, "")


class Reviews:
    """A TokenReview whose answer for the same valid token changes: ``groups`` now."""

    def __init__(self, groups: tuple[str, ...]) -> None:
        self.groups = groups

    async def authenticate(self, token: str) -> Principal | None:
        return Principal("ops", self.groups)


class Environments:
    def namespaces(self) -> set[str]:
        return {"team-a", "team-b"}


async def test_a_caller_taken_out_of_the_group_that_granted_the_namespace_loses_it() -> None:
    """The re-check judges the namespaces shown with the groups the token has now, not
    those it had when the stream opened: the last one gone, the stream ends with 403."""
    reviews = Reviews(("team-a", "team-b"))
    app = web.Application()
    app[keys.AUTHORIZER] = GroupAuthorizer()  # type: ignore[misc]
    app[keys.AUTHENTICATOR] = reviews  # type: ignore[misc]
    app[keys.ENVIRONMENT_CACHE] = Environments()  # type: ignore[misc]
    app[keys.SETTINGS] = Settings.model_validate({})
    request = make_mocked_request("GET", "/api/v1/events", app=app)
    request[keys.PRINCIPAL] = Principal("ops", ("team-a", "team-b"))
    access = _Access(request, only=None)
    await access.start()
    assert access.showing == {"team-a", "team-b"}

    reviews.groups = ("team-b",)
    assert await access.recheck() is None
    assert access.showing == {"team-b"}

    reviews.groups = ()
    problem = await access.recheck()
    assert problem is not None
    assert problem.status == 403
    assert access.showing == set()
