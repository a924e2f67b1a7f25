"""Which SubjectAccessReviews an event stream spends: a caller who may watch a kind
cluster-wide is asked once for it, not once per namespace the log holds events of; the
others once per namespace and kind, within a budget per re-check interval.

The authorizer here is a stand-in that answers from a table and counts the questions
(the real one asks the apiserver; tests/integration/test_event_stream.py covers it)."""

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
