"""The scratch databases drill runs restore into: kept for inspection, then dropped.

A run's scratch database (``dkd_<uid>_<n>``, owned by the environment's role) is kept
for ``spec.scratch.keepFor`` after the run and dropped by a later pass (``expire``);
a run that leaves the bounded history takes its database with it. All kept ones go at
once when the drill's Environment is gone or being deleted (``release``): the
environment's deletion drops its role, which PostgreSQL refuses while the role owns a
database. A database that cannot be dropped (the server is down) stays recorded, with
an Event, and is tried again at the next pass.

Scratch databases are named ``dkd_<uid>_<n>`` (``staging_database_name``), with the
smallest ``n`` no kept database of the drill uses (``scratch_database``), so runs kept
for inspection never collide and an interrupted run finds its own again. Which ones a
status records, keeps and has let expire is decided by the pure functions here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from dockyard.core.durations import parse_duration
from dockyard.core.models.restore_drill import RestoreDrill, RestoreDrillStatus
from dockyard.core.resources import ENVIRONMENTS
from dockyard.operator.apply import get
from dockyard.operator.database import staging_database_name
from dockyard.operator.runs.context import RunContext
from dockyard.operator.runs.restoring import drop_database
from dockyard.operator.store import deleting, post
from dockyard.runner import BackupError

# staging_database_name allows up to six digits of run number.
_SCRATCH_NUMBER_MAX: Final = 999_999


def recorded_scratch(status: RestoreDrillStatus) -> set[str]:
    """Every scratch database the status says is kept or being restored into."""
    names = {run.scratch_database for run in status.history}
    if status.last_run is not None:
        names.add(status.last_run.scratch_database)
    if status.current_run is not None:
        names.add(status.current_run.scratch_database)
    return {name for name in names if name}


def scratch_database(uid: str, taken: Collection[str]) -> str:
    """The scratch database of a new run of the drill ``uid``: the first name not taken."""
    for number in range(1, _SCRATCH_NUMBER_MAX + 1):
        name = staging_database_name("d", uid, number)
        if name not in taken:
            return name
    raise ValueError("every scratch database name of the drill is taken")


def kept_scratch(status: RestoreDrillStatus) -> set[str]:
    """Scratch databases of finished runs, kept for inspection (not the run in progress's)."""
    current = status.current_run.scratch_database if status.current_run else None
    return recorded_scratch(status) - {current} if current else recorded_scratch(status)


def expired_scratch(status: RestoreDrillStatus, keep_for: str, now: datetime) -> set[str]:
    """Scratch databases of runs that finished at least ``keep_for`` before ``now``."""
    keep = parse_duration(keep_for)
    runs: list[tuple[str | None, datetime | None]] = [
        (run.scratch_database, run.finished_at) for run in status.history
    ]
    if status.last_run is not None:
        runs.append((status.last_run.scratch_database, status.last_run.finished_at))
    current = status.current_run.scratch_database if status.current_run else None
    return {
        name
        for name, finished in runs
        if name and name != current and _expired(finished, keep, now)
    }


def _expired(finished: datetime | None, keep: timedelta, now: datetime) -> bool:
    return finished is not None and finished + keep <= now


def without_scratch(status: RestoreDrillStatus, dropped: Collection[str]) -> RestoreDrillStatus:
    """``status`` with the databases ``dropped`` no longer recorded as kept."""
    if not dropped:
        return status
    history = [
        run.model_copy(update={"scratch_database": None})
        if run.scratch_database in dropped
        else run
        for run in status.history
    ]
    last = status.last_run
    if last is not None and last.scratch_database in dropped:
        last = last.model_copy(update={"scratch_database": None})
    return status.model_copy(update={"history": history, "last_run": last})


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
        if env is not None and not deleting(env):
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


__all__ = [
    "ScratchDatabases",
    "expired_scratch",
    "kept_scratch",
    "recorded_scratch",
    "scratch_database",
    "without_scratch",
]
