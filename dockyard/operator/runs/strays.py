"""The databases of Restores and RestoreDrills that are gone: found on the server, dropped.

A restore's databases (``dkr_<uid>_<n>``, ``dkr_<uid>_old``) and a drill's scratch ones
(``dkd_<uid>_<n>``) are dropped by their object's own passes, its deletion included
(``restores.leftovers``, ``drills.scratch``). None of those sees a Restore deleted
while no operator ran (it has no finalizer, and a watch that starts afresh delivers no
DELETED event for it), a drop at the DELETED event that failed (the server
restarting), or a RestoreDrill whose finalizer was removed by hand. Such a database
would stay until its environment went.

The same pass opens again an environment's database that a switch-over cut short left
refusing connections, when its Restore was deleted before recovery (``_reopen_closed``).

A pass (at start-up, then every ``DOCKYARD_STRAY_DATABASE_INTERVAL``):

1. lists the restore and drill databases on the managed server, with their owners;
2. then lists the Environments, Restores and RestoreDrills the operator watches;
3. drops each database owned by the role of one of those Environments whose uid (the
   16 hex digits of it in its name) is no listed Restore's or drill's (by its kind's
   prefix), nor the uid of a run this process executes: a deleted Restore's inline run
   drops its own databases (``restores.running``).

The order makes it safe: an object's databases are made after the object exists and a
uid is never reused, so a database listed in step 1 whose object step 2 does not list
belongs to an object that is gone. Only databases owned by an environment the operator
watches are candidates, since several namespace-scoped operators may share one server:
each leaves the others' alone. A list that fails skips the pass; a kind that is not
installed counts as a failed list, not as "there are none". Each drop is in the audit
trail (``DROP database (stray)``).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from kopf._cogs.structs.references import (
    NamespaceName,
    match_namespace,
    select_specific_namespaces,
)

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.resources import ENVIRONMENTS, RESTORE_DRILLS, RESTORES, Manifest, ResourceType
from dockyard.operator.apply import paged
from dockyard.operator.database import (
    ManagedDatabaseError,
    database_identity,
    staging_database_name,
)
from dockyard.operator.runs.context import RunContext
from dockyard.operator.runs.restoring import drop_database
from dockyard.runner import BackupError

logger = logging.getLogger(__name__)

DROPPED: Final = "DROP database (stray)"
"""The audit trail's action for a stray database dropped."""

_RUN_DATABASE = re.compile(r"(dk([rd])_[0-9a-f]{16})(?:_[0-9]{1,6}|_old)?")
_KINDS: Final = {"r": "Restore", "d": "RestoreDrill"}


@dataclass(frozen=True, slots=True)
class Stray:
    """A database whose Restore or RestoreDrill is gone, and the environment that owns it."""

    database: str
    kind: str
    namespace: str
    environment: str


def strays(
    databases: Iterable[tuple[str, str]],
    *,
    owners: Mapping[str, tuple[str, str]],
    alive: Iterable[str],
) -> list[Stray]:
    """Of ``databases`` (name, owning role), those owned by a role of ``owners`` (role:
    its environment's namespace and name) whose object prefix is not ``alive``."""
    kept = set(alive)
    found = []
    for name, owner in databases:
        match = _RUN_DATABASE.fullmatch(name)
        if match is None or match.group(1) in kept or owner not in owners:
            continue
        namespace, environment = owners[owner]
        found.append(Stray(name, _KINDS[match.group(2)], namespace, environment))
    return found


@dataclass(frozen=True, slots=True)
class Scope:
    """The namespaces the operator watches: names or Kopf's patterns (none: all)."""

    patterns: tuple[str, ...] = ()

    def covers(self, namespace: str) -> bool:
        """Whether the operator watches ``namespace``, as Kopf decides it."""
        return not self.patterns or any(
            match_namespace(NamespaceName(namespace), pattern) for pattern in self.patterns
        )

    async def objects(self, kube: KubeClient, rtype: ResourceType) -> AsyncIterator[Manifest]:
        """The objects of ``rtype`` in the watched namespaces: listed in each when every
        pattern is a name (which a namespace-scoped Role allows), else across the
        cluster and filtered."""
        names = select_specific_namespaces(self.patterns)
        if self.patterns and set(names) == set(self.patterns):
            for namespace in sorted(names):
                async for item in paged(kube, rtype, namespace, absent_is_empty=False):
                    yield item
            return
        async for item in paged(kube, rtype, None, absent_is_empty=False):
            if self.covers(str((item.get("metadata") or {}).get("namespace") or "")):
                yield item


async def sweep_strays(context: RunContext, scope: Scope) -> list[Stray]:
    """One pass: drop the stray databases of ``scope``; those dropped."""
    if context.postgres is None:
        return []
    try:
        on_server = await context.postgres.run_databases()
    except ManagedDatabaseError as exc:
        logger.warning("stray databases not looked for", extra={"error": exc.message})
        return []
    try:
        owners, alive = await _watched(context.kube, scope)
    except KubeError as exc:
        logger.warning("stray databases not looked for", extra={"error": str(exc)})
        return []
    await _reopen_closed(context, owners)
    # A run of this process may belong to an object deleted since: it drops its own.
    alive |= {
        staging_database_name(kind, uid) for uid in context.inline_runs.running() for kind in "rd"
    }
    dropped = []
    for stray in strays(on_server, owners=owners, alive=alive):
        try:
            await drop_database(context, stray.database)
        except BackupError as exc:
            logger.warning(
                "stray database not dropped",
                extra={"database": stray.database, "error": exc.message},
            )
            continue
        logger.info(
            "stray database dropped",
            extra={"database": stray.database, "namespace": stray.namespace,
                   "environment": stray.environment, "kind": stray.kind},
        )  # fmt: skip
        await context.audited(
            DROPPED,
            "environments",
            stray.namespace,
            stray.environment,
            f"the {stray.kind} that made database {stray.database} is gone",
            database=stray.database,
            kind=stray.kind,
        )
        dropped.append(stray)
    return dropped


async def _reopen_closed(context: RunContext, owners: Mapping[str, tuple[str, str]]) -> None:
    """Let clients connect again to the watched environments' databases that a switch-over
    cut short left refusing them: the operator killed mid-way, and its Restore deleted
    before the next one recovered it (``switch_over.recover`` reopens them), leaves no
    pass of that Restore to do it. A switch-over in progress holds the lock
    ``reopen`` takes, and allows connections itself when it ends."""
    postgres = context.postgres
    if postgres is None or not owners:
        return
    try:
        # An environment's database has its role's name (``database_identity``).
        for name in await postgres.closed_databases(sorted(owners)):
            await postgres.reopen(name)
            namespace, environment = owners[name]
            logger.warning(
                "database refusing connections after a switch-over cut short: opened again",
                extra={"database": name, "namespace": namespace, "environment": environment},
            )
    except ManagedDatabaseError as exc:
        logger.warning("closed databases not looked for", extra={"error": exc.message})


async def _watched(kube: KubeClient, scope: Scope) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """The roles of the watched Environments, then the prefixes of the watched Restores'
    and drills' databases (listed after the databases, see the module's docstring)."""
    owners = {}
    async for env in scope.objects(kube, ENVIRONMENTS):
        meta = env.get("metadata") or {}
        namespace, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        owners[database_identity(namespace, name)[1]] = (namespace, name)
    alive = set()
    for kind, rtype in (("r", RESTORES), ("d", RESTORE_DRILLS)):
        async for item in scope.objects(kube, rtype):
            alive.add(
                staging_database_name(kind, str((item.get("metadata") or {}).get("uid") or ""))
            )
    return owners, alive


async def sweep_periodically(context: RunContext, scope: Scope, interval: float) -> None:
    """A pass at once, then every ``interval`` seconds, until cancelled; a pass that fails
    unexpectedly is logged with its traceback and the next one comes as usual."""
    while True:
        try:
            await sweep_strays(context, scope)
        except Exception:
            logger.exception("stray database pass failed unexpectedly")
        await asyncio.sleep(interval)


__all__ = ["DROPPED", "Scope", "Stray", "strays", "sweep_periodically", "sweep_strays"]
