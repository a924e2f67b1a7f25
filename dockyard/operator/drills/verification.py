"""A drill's verdict on the Backup it restored: ``status.verified``, Verified, the catalog.

A run that passed marks the backup verified (``status.verified``: which drill, when),
sets its Verified condition True and records the same in ``backup_catalog``; retention
never deletes an environment's newest verified backup, and a Restore with ``latestVerified``
picks it. A run whose restore or data checks failed sets Verified False with the first
reason, and leaves ``status.verified`` (an earlier pass) alone. A run that only missed
an objective (RTO, RPO) says nothing about the backup: it restored and held its data;
nor does one that could not be carried out (``run``: a server or the storage out).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any, Final

import asyncpg

from dockyard.core.models.backup import Backup, BackupConditionType
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.drill_runs import RPO_CHECK, RTO_CHECK, DrillResult, DrillRun
from dockyard.core.resources import BACKUPS
from dockyard.operator.apply import get, patch_status
from dockyard.operator.drills.judging import RUN_CHECK
from dockyard.operator.runs.context import RunContext
from dockyard.operator.store import post

logger = logging.getLogger(__name__)

# Checks whose failure says nothing about the backup itself: the objectives, and a run
# that could not be carried out (``judging.restore_failure``).
_NOT_THE_BACKUPS: Final = frozenset({RTO_CHECK, RPO_CHECK, RUN_CHECK})


def verdict(drill: str, run: DrillRun) -> tuple[ConditionStatus, str, str] | None:
    """The Verified condition ``run`` sets on its backup (status, reason, message), if any."""
    if run.result is DrillResult.PASSED:
        return ConditionStatus.TRUE, "DrillPassed", f"RestoreDrill {drill} passed"
    data_failures = [c for c in run.failed_checks if c.check not in _NOT_THE_BACKUPS]
    if not data_failures:
        return None  # an objective missed, or no restore at all: nothing about the backup
    first = data_failures[0]
    return (
        ConditionStatus.FALSE,
        "DrillFailed",
        f"RestoreDrill {drill} failed: {first.check}: {first.reason}",
    )


async def record_verdict(context: RunContext, *, drill: str, chosen: Backup, run: DrillRun) -> None:
    """Write the verdict of ``drill``'s ``run`` on the backup ``chosen`` (if still there)."""
    judged = verdict(drill, run)
    namespace = chosen.metadata.namespace or ""
    if judged is None:
        return
    raw = await get(context.kube, BACKUPS.path(namespace, run.backup))
    if raw is None or (raw.get("metadata") or {}).get("uid") != chosen.metadata.uid:
        return  # deleted, or another backup under the same name
    backup = Backup.model_validate(raw)
    at = run.finished_at or datetime.now(UTC)
    status, reason, message = judged
    verified = backup.status.with_condition(
        BackupConditionType.VERIFIED,
        status,
        reason,
        message[:1024],
        generation=backup.metadata.generation,
        now=at,
    )
    body: dict[str, Any] = {
        "conditions": [c.model_dump(mode="json", exclude_none=True) for c in verified.conditions]
    }
    passed = run.result is DrillResult.PASSED
    if passed:
        body["verified"] = {"drill": drill, "at": at.isoformat()}
    if not await patch_status(
        context.kube, BACKUPS, namespace, run.backup, body, uid=chosen.metadata.uid
    ):
        return  # deleted meanwhile
    if not passed:
        return
    post(raw, reason="Verified", message=f"RestoreDrill {drill} restored and checked it")
    if context.catalog is None or not backup.metadata.uid:
        return
    try:
        await context.catalog.mark_verified(backup.metadata.uid, drill=drill, at=at)
    except (OSError, asyncpg.PostgresError) as exc:
        # The status is authoritative; the catalog catches up from it at start-up.
        logger.warning(
            "backup verification not catalogued", extra={"backup": run.backup, "error": str(exc)}
        )


__all__ = ["record_verdict", "verdict"]
