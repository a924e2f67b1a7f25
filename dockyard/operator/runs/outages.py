"""Whether an environment's database server is out, and saying so once.

Backups, restores and drills need the managed PostgreSQL server. While it is out their
work waits rather than fails: failing would use up a Backup's attempts, fail a Restore
that could have gone through a minute later, and mark a drill failed over an outage
that says nothing about its backups. Each kind asks :func:`database_outage` before it
starts a run (a Backup also after a failed attempt), sets the ``DatabaseUnavailable``
condition (``Status.database_out``) while the answer is an outage, and asks again every
``DATABASE_POLL_SECONDS``, all through :func:`pause_while_out`, which also posts one
warning Event per outage.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from dockyard.core.models.environment import EnvironmentConditionType
from dockyard.core.models.status import DATABASE_UNAVAILABLE, Status
from dockyard.core.resources import ENVIRONMENTS
from dockyard.operator.apply import get
from dockyard.operator.database import DatabaseUnavailable, UnavailableReason
from dockyard.operator.outcomes import Outcome
from dockyard.operator.runs.context import RunContext
from dockyard.operator.store import Loaded, post

logger = logging.getLogger(__name__)

_S = TypeVar("_S", bound=Status)

# How often paused work asks whether the database server answers again.
DATABASE_POLL_SECONDS: Final = 10.0
# The reasons of an environment's DatabaseReady condition that mean a passing outage.
_OUTAGES: Final = frozenset(
    {
        UnavailableReason.SERVER_UNREACHABLE,
        UnavailableReason.SERVER_NOT_READY,
        UnavailableReason.TOO_MANY_CONNECTIONS,
    }
)
_DATABASE_READY: Final = EnvironmentConditionType.DATABASE_READY.value


async def database_outage(
    context: RunContext, namespace: str, environment: str
) -> tuple[str, str] | None:
    """Why ``environment``'s database is out (a condition reason and a message), if it
    is: the server does not answer the admin, or the environment last saw it out and
    has not ensured its database since. None without a managed server to ask."""
    postgres = context.postgres
    if postgres is None:
        return None
    try:
        await postgres.ping()
    except DatabaseUnavailable as exc:
        return exc.reason, exc.message
    env = await get(context.kube, ENVIRONMENTS.path(namespace, environment))
    conditions = ((env or {}).get("status") or {}).get("conditions") or []
    database: dict[str, Any] = next((c for c in conditions if c.get("type") == _DATABASE_READY), {})
    if database.get("status") == "False" and database.get("reason") in _OUTAGES:
        return database["reason"], f"Environment {environment}: {database.get('message')}"
    return None


async def pause_while_out(
    context: RunContext,
    loaded: Loaded[Any],
    environment: str,
    status: _S,
    write: Callable[[_S], Awaitable[None]],
    paused: Callable[[str, str], _S] | None = None,
) -> Outcome | None:
    """While ``environment``'s database is out: write the waiting status (``paused(reason,
    message)``, else ``status`` with ``DatabaseUnavailable`` True) when it changes
    ``status``, post one warning Event per outage, and ask again in
    ``DATABASE_POLL_SECONDS``. None while the database answers: the work goes on."""
    namespace, raw = loaded.namespace, loaded.raw
    outage = await database_outage(context, namespace, environment)
    if outage is None:
        return None
    reason, message = outage
    if paused is None:
        waiting = status.database_out(reason, message, generation=loaded.generation)
    else:
        waiting = paused(reason, message)
    if waiting != status:
        await write(waiting)
    if not status.is_true(DATABASE_UNAVAILABLE):
        post(raw, reason=DATABASE_UNAVAILABLE, message=message, warning=True)
        logger.info(
            "%s %s/%s waits until the database server answers: %s",
            raw.get("kind"),
            namespace,
            loaded.name,
            message,
        )
    return Outcome.again("waiting for the database server", delay=DATABASE_POLL_SECONDS)


__all__ = ["DATABASE_POLL_SECONDS", "database_outage", "pause_while_out"]
