"""A RestoreDrill as the operator reads and writes it, and what a finished run leaves.

``DrillRecords`` holds the drill's ``KindStore`` (an invalid drill is skipped with a
warning: the API server's schema makes one unreachable) and the Backups' one, the
lock that keeps passes over one drill and its run's record from interleaving, and
``finish``, which records a run in this order: the ``drill_runs`` row (its failure is
logged; the status stays authoritative), the verdict on the Backup
(``verification``), the scratch databases of runs that fell off the bounded history,
then the drill's status (``lastRun``, ``history``, Passing, ``currentRun`` cleared), so
whoever sees the run in the status finds the row and the verdict written; then Events
and metrics.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any

import asyncpg

from dockyard.core.conditions import find
from dockyard.core.metrics import DrillMetrics
from dockyard.core.models.backup import Backup
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.drill_runs import DrillResult, DrillRun
from dockyard.core.models.restore_drill import (
    RestoreDrill,
    RestoreDrillConditionType,
    RestoreDrillStatus,
)
from dockyard.operator.drills import log as drill_log
from dockyard.operator.drills.judging import passing_condition
from dockyard.operator.drills.plan import described
from dockyard.operator.drills.scratch import ScratchDatabases, recorded_scratch
from dockyard.operator.drills.verification import record_verdict
from dockyard.operator.runs.context import RunContext
from dockyard.operator.store import KindStore, Loaded, ObjectLocks, OnInvalid, post

logger = logging.getLogger(__name__)


class LoadedDrill(Loaded[RestoreDrill]):
    """A RestoreDrill as read (for Events) and as validated."""

    __slots__ = ()

    @property
    def drill(self) -> RestoreDrill:
        return self.resource


class DrillRecords:
    """Reads RestoreDrills and the Backups they restore; records their runs."""

    def __init__(
        self, context: RunContext, metrics: DrillMetrics, scratch: ScratchDatabases
    ) -> None:
        self.context = context
        self.metrics = metrics
        self.scratch = scratch
        self.drills = KindStore(context.kube, RestoreDrill)
        self.backups = KindStore(context.kube, Backup)
        self._locks: ObjectLocks[tuple[str, str]] = ObjectLocks()

    def lock(self, namespace: str, name: str) -> AbstractAsyncContextManager[None]:
        """The lock of one drill: its passes and its run's record never interleave."""
        return self._locks.lock((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        self.metrics.forget(namespace=namespace, drill=name)

    # -- reading ---------------------------------------------------------------------------

    async def load(self, namespace: str, name: str) -> LoadedDrill | None:
        """The drill, read afresh; None when it is gone, being deleted or invalid."""
        found = await self.drills.load(namespace, name, on_invalid=OnInvalid.SKIP)
        return None if found is None else LoadedDrill(found.raw, found.resource)

    # -- writing ---------------------------------------------------------------------------

    async def write(self, loaded: LoadedDrill, status: RestoreDrillStatus) -> None:
        """Write ``status`` unless it is what the drill holds already."""
        body = status.body()
        if body == loaded.drill.status.body():
            return
        await self.drills.write_status(loaded.namespace, loaded.name, body, uid=loaded.uid)

    async def patch(self, loaded: LoadedDrill, body: dict[str, Any]) -> None:
        await self.drills.patch(loaded.namespace, loaded.name, body, uid=loaded.uid)

    def announce_ready(self, loaded: LoadedDrill, status: RestoreDrillStatus) -> None:
        """An Event when the Ready condition's reason changed."""
        before = find(loaded.drill.status.conditions, RestoreDrillConditionType.READY)
        after = find(status.conditions, RestoreDrillConditionType.READY)
        if after is not None and (before is None or before.reason != after.reason):
            post(
                loaded.raw,
                reason=after.reason,
                message=after.message,
                warning=after.status is ConditionStatus.FALSE,
            )

    # -- a finished run --------------------------------------------------------------------

    async def finish(
        self,
        loaded: LoadedDrill,
        status: RestoreDrillStatus,
        run: DrillRun,
        *,
        backup: Backup | None,
        now: datetime | None = None,
    ) -> None:
        """Record ``run``: the run log and the backup's verdict, then the drill's status
        (so a status showing the run means both are written), events and metrics."""
        spec = loaded.drill.spec
        after = status.with_run(run, spec.history_limit)
        after = described(
            passing_condition(after, run, loaded.generation, now or datetime.now(UTC))
        )
        await self._log_run(loaded, run)
        if backup is not None:
            await record_verdict(self.context, drill=loaded.name, chosen=backup, run=run)
        # Runs that fell off the bounded history take their kept databases with them.
        await self.scratch.drop(recorded_scratch(status) - recorded_scratch(after), raw=loaded.raw)
        await self.write(loaded, after)
        summary = (
            f"Backup {run.backup}: restored in {run.restore_seconds:.1f} s"
            if run.restore_seconds is not None
            else f"Backup {run.backup}: not restored"
        )
        if run.result is DrillResult.PASSED:
            post(loaded.raw, reason="Passed", message=f"{summary}; every check passed")
        else:
            reasons = "; ".join(f"{c.check}: {c.reason}" for c in run.failed_checks)
            post(loaded.raw, reason="Failed", message=f"{summary}; {reasons}", warning=True)
        self.metrics.observe(namespace=loaded.namespace, drill=loaded.name, result=run.result)

    async def _log_run(self, loaded: LoadedDrill, run: DrillRun) -> None:
        catalog = self.context.catalog
        if catalog is None:
            return
        try:
            await drill_log.append_run(
                catalog.pool, namespace=loaded.namespace, drill=loaded.name, run=run
            )
        except (OSError, asyncpg.PostgresError) as exc:
            logger.warning(
                "drill run not logged in the platform database; it is in the status",
                extra={"namespace": loaded.namespace, "drill": loaded.name, "error": str(exc)},
            )


__all__ = ["DrillRecords", "LoadedDrill"]
