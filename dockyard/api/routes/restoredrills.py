"""RestoreDrills over REST: the objects kubectl sees, their run history, and running one now.

The contract of every kind (``kinds``), the paged lists of the backup kinds
(``recovery``, filtered by ``?environment=``), ``POST .../{name}/run`` (the
``dockyard.io/run-now`` annotation), and ``GET .../{name}/runs``: the drill's finished
runs, newest first, each with its measured recovery time (``restoreSeconds``, the RTO)
and recovery point (``backupAgeSeconds``, the RPO) beside the objectives they were held
to. The runs come from the platform database's ``drill_runs`` (every run the operator
recorded), or from ``status.history`` (bounded by ``spec.historyLimit``) for a drill
with no rows there (the database not migrated yet, or runs from before). Either way they
are paged by start time, so a cursor stays valid while new runs arrive; the cursor says
which source it came from, so a listing never switches sources halfway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from dockyard.api import cursors, keys
from dockyard.api.drill_runs import DrillRunLog, RunKey
from dockyard.api.openapi import OperationRegistry
from dockyard.api.routes.models import create_body, list_body
from dockyard.api.routes.pages import page_cursor, page_size, parse_query, query_parameter
from dockyard.api.routes.recovery import MetadataInput, RecoveryKindRoutes
from dockyard.core.models.common import ObjectMeta
from dockyard.core.models.drill_runs import DrillRun, DrillRunSummary
from dockyard.core.models.restore_drill import DrillObjectives, RestoreDrill, RestoreDrillStatus

RUNS_LIMIT_MAX = 100


RestoreDrillCreate = create_body(
    RestoreDrill,
    MetadataInput,
    doc="The body of ``POST .../restoredrills``.",
    spec="when to drill, on which backup, what to check",
)
RestoreDrillList = list_body(
    RestoreDrill,
    doc="A page of the restore drills of a namespace, ordered by name.",
    items="the drills on this page",
)


class DrillRunList(BaseModel):
    """A page of a drill's finished runs, newest first, with the objectives they met or not."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    drill: str = Field(description="the drill's name")
    objectives: DrillObjectives = Field(
        description="the RTO (rtoSeconds) and RPO (rpoSeconds) the runs are held to"
    )
    last_run: DrillRun | None = Field(
        default=None,
        alias="lastRun",
        description="the last finished run in full, with one reason per failed check",
    )
    items: list[DrillRunSummary] = Field(
        description="runs on this page: restoreSeconds is the measured RTO, "
        "backupAgeSeconds the measured RPO"
    )
    next_cursor: str | None = Field(
        default=None, alias="nextCursor", description="pass as ?cursor= for the next page"
    )


class RunsQuery(BaseModel):
    """Query parameters of a drill's run history."""

    model_config = ConfigDict(extra="forbid")

    limit: int = page_size(20, RUNS_LIMIT_MAX)
    cursor: str | None = page_cursor(300)


ROUTES = RecoveryKindRoutes(
    RestoreDrill, RestoreDrillCreate, RestoreDrillList, keys.RESTORE_DRILL_CACHE, runnable=True
)


DATABASE = "db"
STATUS = "status"


@dataclass(frozen=True, slots=True)
class RunsCursor:
    """Where a page of runs ended, and which source it was read from."""

    source: str
    started_at: datetime
    id: int | None = None

    def encode(self) -> str:
        return cursors.encode([self.source, self.started_at.isoformat(), self.id])

    @classmethod
    def decode(cls, cursor: str) -> RunsCursor:
        """The cursor ``encode`` made; 422 for any other (``cursors.refused``)."""
        return cursors.read(cursor, cls._from_position)

    @classmethod
    def _from_position(cls, position: Any) -> RunsCursor:
        """A position ``encode`` can have made: its id a bigint row id (``drill_runs.id``),
        its start time one PostgreSQL takes, in UTC too (a time whose offset carries it
        outside Python's years 1 to 9999 raises ``OverflowError`` here, where it is
        refused, rather than in the database, where it would be a 500)."""
        source, started, ident = position
        started_at = datetime.fromisoformat(started)
        # bool is an int to Python; a cursor never holds one.
        row = type(ident) is int and 1 <= ident < 2**63
        valid = (source == DATABASE and row) or (source == STATUS and ident is None)
        if not valid or started_at.tzinfo is None:
            raise ValueError("not a run cursor")
        try:
            started_at.astimezone(UTC)
        except OverflowError:
            raise ValueError("not a run cursor") from None
        return cls(source, started_at, ident)


async def _from_database(
    request: web.Request,
    namespace: str,
    name: str,
    since: datetime,
    cursor: RunsCursor | None,
    limit: int,
) -> tuple[list[DrillRunSummary], RunsCursor | None] | None:
    """A page from ``drill_runs`` (runs started ``since``); None when the drill has no
    rows there to page through."""
    after = RunKey(cursor.started_at, cursor.id) if cursor and cursor.id is not None else None
    try:
        page = await DrillRunLog(request.app[keys.DB_POOL]).page(
            namespace=namespace, drill=name, since=since, after=after, limit=limit
        )
    except asyncpg.UndefinedTableError:
        return None  # a database not migrated to 0002 yet: status is all there is
    if not page.runs and cursor is None:
        return None
    following = RunsCursor(DATABASE, page.next.started_at, page.next.id) if page.next else None
    return page.runs, following


def _from_status(
    status: RestoreDrillStatus, cursor: RunsCursor | None, limit: int
) -> tuple[list[DrillRunSummary], RunsCursor | None]:
    runs = sorted(status.history, key=lambda r: r.started_at, reverse=True)
    if cursor is not None:
        runs = [r for r in runs if r.started_at < cursor.started_at]
    page = runs[:limit]
    more = len(runs) > limit
    return page, RunsCursor(STATUS, page[-1].started_at) if more else None


async def list_runs(request: web.Request) -> web.Response:
    namespace, name = request.match_info["namespace"], request.match_info["name"]
    query = parse_query(request, RunsQuery)
    cursor = RunsCursor.decode(query.cursor) if query.cursor else None
    obj = await ROUTES.cached(request)
    # The operator wrote it, and the CRD's schema held it to these models.
    status = RestoreDrillStatus.model_validate(obj.get("status") or {})
    objectives = DrillObjectives.model_validate((obj.get("spec") or {}).get("objectives") or {})
    created = ObjectMeta.model_validate(obj.get("metadata") or {}).creation_timestamp
    page = None
    if cursor is None or cursor.source == DATABASE:
        since = created or datetime.now(UTC)
        page = await _from_database(request, namespace, name, since, cursor, query.limit)
    if page is None:
        page = _from_status(status, cursor, query.limit)
    runs, following = page
    body = DrillRunList(
        drill=name,
        objectives=objectives,
        last_run=status.last_run,
        items=runs,
        next_cursor=following.encode() if following else None,
    )
    return web.json_response(body.model_dump(mode="json", by_alias=True, exclude_none=True))


def register(registry: OperationRegistry) -> None:
    ROUTES.register(registry)
    limit = {"type": "integer", "minimum": 1, "maximum": RUNS_LIMIT_MAX, "default": 20}
    registry.add(
        ROUTES.object_operation(
            "GET",
            "runs",
            "listRestoreDrillRuns",
            "A restore drill's run history, with RTO and RPO per run",
            list_runs,
            "get",
            response_model=DrillRunList,
            description="Newest first. restoreSeconds is the measured recovery time (RTO), "
            "backupAgeSeconds the measured recovery point (RPO).",
            parameters=(
                query_parameter("limit", limit),
                query_parameter("cursor", {"type": "string", "maxLength": 300}),
            ),
        )
    )
