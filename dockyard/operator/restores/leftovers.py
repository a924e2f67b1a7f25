"""A restore's own databases that nothing uses any more, found by its uid and dropped.

A restore makes one staging database per attempt (``dkr_<uid>_<n>``) and, at its
switch-over, retires the target's old database as ``dkr_<uid>_old``. Each is dropped
once it is done with, and its name then leaves the status; but a drop can fail (the
server restarting), the operator can die between writing Completed and dropping the
retired one, and a deleted Restore has no status left to name them. Like a drill's
scratch databases (``drills.lifecycle``), they are found on the server by the uid in
their names and dropped (``sweep``): at the end of each attempt, on the passes of a
restore that is not in an attempt (a Completed or Failed one's included, until none
is left), and when the Restore is deleted. Those of a Restore deleted while no operator
ran, or whose drop then failed, are found by ``runs.strays``.

Only a Restoring or Verifying restore uses any: its recorded staging database, and the
retired one, which until Completed is written is what tells recovery that the
switch-over happened (``switch_over.switched_over``). The environment's live database
is never among them: the switch-over renames the staging database to the
environment's own name (``env_...``), and only this restore's ``dkr_`` names match.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from dockyard.core.models.restore import RestorePhase, RestoreStatus
from dockyard.operator.database import (
    ManagedDatabaseError,
    retired_database_name,
    staging_database_name,
)
from dockyard.operator.runs.context import RunContext
from dockyard.operator.runs.restoring import drop_database
from dockyard.runner import BackupError

logger = logging.getLogger(__name__)

_IN_AN_ATTEMPT = (RestorePhase.RESTORING, RestorePhase.VERIFYING)


def own_databases(uid: str, names: Iterable[str]) -> set[str]:
    """Of ``names``, the databases the restore ``uid`` makes: its staging ones
    (``dkr_<uid>_<n>``) and its retired one (``dkr_<uid>_old``)."""
    mine = re.compile(re.escape(staging_database_name("r", uid)) + r"_(?:[0-9]{1,6}|old)")
    return {name for name in names if mine.fullmatch(name)}


def in_use(uid: str, status: RestoreStatus | None) -> set[str]:
    """The databases of restore ``uid`` that its attempt still needs; none once it is
    not in an attempt, or gone (``status`` None)."""
    if status is None or status.phase not in _IN_AN_ATTEMPT:
        return set()
    used = {retired_database_name(uid)}
    if status.staging_database:
        used.add(status.staging_database)
    return used


def leftovers(uid: str, status: RestoreStatus | None, on_server: Iterable[str]) -> set[str]:
    """The databases of restore ``uid`` among ``on_server`` that nothing uses."""
    return own_databases(uid, on_server) - in_use(uid, status)


async def sweep(context: RunContext, uid: str, status: RestoreStatus | None = None) -> str | None:
    """Drop the unused databases of restore ``uid`` (``status`` None: it is gone). None
    when none is left; else why some may be (logged, for the caller's next pass)."""
    postgres = context.postgres
    if postgres is None or (status is not None and status.attempts == 0):
        return None  # no attempt made a database yet (each is recorded before it is made)
    try:
        on_server = await postgres.databases_named_like(staging_database_name("r", uid))
    except ManagedDatabaseError as exc:
        logger.warning("restore databases not listed", extra={"uid": uid, "error": exc.message})
        return f"the restore's databases could not be listed: {exc.message}"
    undropped = []
    for name in sorted(leftovers(uid, status, on_server)):
        try:
            await drop_database(context, name)
        except BackupError as exc:
            undropped.append(name)
            logger.warning(
                "restore database not dropped", extra={"database": name, "error": exc.message}
            )
        else:
            logger.info("restore database dropped", extra={"database": name, "uid": uid})
    if undropped:
        return f"database {', '.join(undropped)} not dropped yet"
    return None


__all__ = ["in_use", "leftovers", "own_databases", "sweep"]
