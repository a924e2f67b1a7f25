"""What a RestoreDrill's runs record: the run in progress, the last run in full, the history.

A run restores one backup, measures its recovery time (RTO) and point (RPO), and fails
with one reason per failed check. These shapes are the drill's status parts; the
catalog and the REST API's run history use them too.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Final

from pydantic import Field

from dockyard.core.models.common import CRModel
from dockyard.core.models.references import ObjectName

# One reason per failed check; a drill with more failures reports the first ones.
FAILED_CHECKS_MAX: Final = 64
# PostgreSQL's identifier length.
DATABASE_NAME_MAX_LENGTH: Final = 63
# The names the objectives fail as.
RTO_CHECK: Final = "rto"
RPO_CHECK: Final = "rpo"


class DrillResult(StrEnum):
    """The outcome of one drill run."""

    PASSED = "Passed"
    FAILED = "Failed"


class FailedCheck(CRModel):
    """One check a drill run failed, with its reason."""

    check: str = Field(min_length=1, max_length=256)
    """The check: restore (the backup could not be restored, such as a checksum mismatch), run
    (the drill could not be carried out, such as its database server or storage unavailable:
    nothing about the backup), rowCount/<schema.table>, sql/<name>, rto or rpo."""
    reason: str = Field(max_length=1024)
    """Why it failed, for example expected 42, got 41."""


class _RunFacts(CRModel):
    """What a finished or finishing drill run measured, in full or in the history."""

    backup: str = Field(max_length=253)
    """Name of the Backup restored."""
    backup_size: int | None = Field(default=None, ge=0)
    """Its size in bytes."""
    started_at: datetime
    """When the run started."""
    finished_at: datetime | None = None
    """When the run finished."""
    restore_seconds: float | None = Field(default=None, ge=0)
    """How long the restore took, in seconds: the measured recovery time (RTO)."""
    backup_age_seconds: float | None = Field(default=None, ge=0)
    """How old the backup was when the run started, in seconds: the measured recovery point (RPO).
    """
    result: DrillResult
    """Passed when every check passed, else Failed."""
    scratch_database: str | None = Field(default=None, max_length=DATABASE_NAME_MAX_LENGTH)
    """The run's scratch database while it is kept; cleared once dropped."""


class DrillRun(_RunFacts):
    """One drill run in full: what it restored, how long it took and what failed."""

    backup: ObjectName
    """Name of the Backup restored."""
    failed_checks: list[FailedCheck] = Field(
        default_factory=list,
        max_length=FAILED_CHECKS_MAX,
        json_schema_extra={"x-kubernetes-list-type": "atomic"},
    )
    """One entry per failed check, with its reason."""

    def summary(self) -> DrillRunSummary:
        """The run as status.history keeps it."""
        facts = self.model_dump(exclude={"failed_checks"})
        return DrillRunSummary(**facts, failed_check_count=len(self.failed_checks))


class DrillRunSummary(_RunFacts):
    """One past drill run, without the reasons (they stay in the catalog)."""

    failed_check_count: int = Field(default=0, ge=0)
    """How many checks failed."""


class DrillCurrentRun(CRModel):
    """The run in progress, recorded so an interrupted one is resumed or retried."""

    backup: ObjectName
    """Name of the Backup being restored."""
    backup_uid: str | None = Field(default=None, max_length=64)
    """UID of that Backup: one made under its name meanwhile is another, and is not the one
    the run verifies. Unset only in runs started before Dockyard recorded it."""
    started_at: datetime
    """When the run started."""
    scratch_database: str | None = Field(default=None, max_length=DATABASE_NAME_MAX_LENGTH)
    """The scratch database being restored into."""
    attempts: int = Field(default=1, ge=1)
    """Attempts of this run so far; an interrupted attempt is counted and retried, up to a limit,
    after which the run fails."""


__all__ = [
    "DATABASE_NAME_MAX_LENGTH",
    "FAILED_CHECKS_MAX",
    "RPO_CHECK",
    "RTO_CHECK",
    "DrillCurrentRun",
    "DrillResult",
    "DrillRun",
    "DrillRunSummary",
    "FailedCheck",
]
