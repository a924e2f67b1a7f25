"""The scratch databases drill runs restore into: kept for inspection, then dropped.

A run's scratch database (``dkd_<uid>_<n>``, owned by the environment's role) is kept
for ``spec.scratch.keepFor`` after the run and dropped by a later pass (``expire``);
a run that leaves the bounded history takes its database with it. All kept ones go at
once when the drill's Environment is gone or being deleted (``release``): the
environment's deletion drops its role, which PostgreSQL refuses while the role owns a
database. A database that cannot be dropped (the server is down) stays recorded, with
an Event, and is tried again at the next pass.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from dockyard.core.models.restore_drill import RestoreDrill, RestoreDrillStatus
from dockyard.core.resources import ENVIRONMENTS
from dockyard.operator.apply import get
from dockyard.operator.backups.lifecycle import post
from dockyard.operator.database import staging_database_name
from dockyard.operator.drills.plan import expired_scratch, kept_scratch, without_scratch
from dockyard.operator.runs.context import RunContext
from dockyard.operator.runs.restoring import drop_database
from dockyard.runner import BackupError


class ScratchDatabases:
    """Listing and dropping drills' scratch databases on the managed server."""

    def __init__(self, context: RunContext) -> None:
        self.context = context

    async def expire(
        self, drill: RestoreDrill, raw: Mapping[str, Any], now: datetime
    ) -> RestoreDrillStatus:
        """``drill``'s status without the databases whose keep window ended (dropped)."""
        status = drill.status
        expired = expired_scratch(status, drill.spec.scratch.keep_for, now)
        if not expired:
            return status
        undropped = await self.drop(expired, raw=raw)
        return without_scratch(status, expired - set(undropped))

    async def release(
        self, drill: RestoreDrill, raw: Mapping[str, Any], status: RestoreDrillStatus
    ) -> RestoreDrillStatus:
        """``status`` without its kept databases (dropped) once the environment is gone
        or going; as it was otherwise."""
        kept = kept_scratch(status)
        if not kept:
            return status
        namespace, environment = drill.metadata.namespace or "", drill.spec.environment_ref.name
        env = await get(self.context.kube, ENVIRONMENTS.path(namespace, environment))
        if env is not None and not (env.get("metadata") or {}).get("deletionTimestamp"):
            return status
        undropped = await self.drop(kept, raw=raw)
        dropped = kept - set(undropped)
        if dropped:
            post(
                raw,
                reason="ScratchDropped",
                message=f"Environment {environment} is gone or being deleted: dropped "
                f"{', '.join(sorted(dropped))} before the end of its keep window",
            )
        return without_scratch(status, dropped)

    async def on_server(self, uid: str) -> list[str]:
        """The scratch databases of drill ``uid`` on the server, recorded or not;
        ``ManagedDatabaseError`` when the server does not answer."""
        postgres = self.context.postgres
        if postgres is None:
            return []
        return await postgres.databases_named_like(staging_database_name("d", uid))

    async def drop(self, names: Iterable[str], *, raw: Mapping[str, Any]) -> list[str]:
        """Drop ``names``; the ones that could not be (kept, and tried again later)."""
        undropped = []
        for name in sorted(names):
            try:
                await drop_database(self.context, name)
            except BackupError as exc:
                undropped.append(name)
                post(raw, reason="ScratchNotDropped", message=exc.message, warning=True)
        return undropped


__all__ = ["ScratchDatabases"]
