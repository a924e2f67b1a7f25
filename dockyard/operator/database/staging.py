"""The databases restores and drills restore into, and the switch-over of a restore.

A restore never writes into a live database: it restores into a new one (named by
``staging_database_name``) owned by the environment's role, and switches the names
over in one transaction once that succeeded (:meth:`StagingDatabases.switch_over`). A
drill restores into a scratch database the same way and drops it after its keep window.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg

from dockyard.operator import crash_points
from dockyard.operator.database import sessions
from dockyard.operator.database.credentials import TenantLogin
from dockyard.operator.database.errors import DatabaseOperationFailed
from dockyard.operator.database.names import quoted
from dockyard.operator.database.sessions import AdminSessions


class StagingDatabases(AdminSessions):
    """What the managed server does for restores and drills (``ManagedPostgres`` is one)."""

    async def database_exists(self, name: str) -> bool:
        """Whether the database ``name`` exists on the server."""
        async with self._session() as conn:
            return await sessions.database_exists(conn, name)

    async def database_oid(self, name: str) -> int | None:
        """The oid of the database ``name`` (it survives a rename); None when absent."""
        async with self._session() as conn:
            oid = await conn.fetchval(
                "SELECT oid FROM pg_catalog.pg_database WHERE datname = $1", name
            )
        return None if oid is None else int(oid)

    async def databases_named_like(self, prefix: str) -> list[str]:
        """The databases whose names start with ``prefix`` (a drill's scratch databases)."""
        async with self._session() as conn:
            rows = await conn.fetch(
                "SELECT datname FROM pg_catalog.pg_database"
                " WHERE pg_catalog.starts_with(datname, $1) ORDER BY 1",
                prefix,
            )
        return [str(row["datname"]) for row in rows]

    async def run_databases(self) -> list[tuple[str, str]]:
        """Every restore and drill database on the server (``dkr_...``, ``dkd_...``), with
        the role that owns it, by name."""
        async with self._session() as conn:
            rows = await conn.fetch(
                "SELECT datname, pg_catalog.pg_get_userbyid(datdba) AS owner"
                " FROM pg_catalog.pg_database WHERE datname ~ '^dk[rd]_[0-9a-f]{16}' ORDER BY 1"
            )
        return [(str(row["datname"]), str(row["owner"])) for row in rows]

    async def create_database(self, name: str, *, owner: TenantLogin) -> None:
        """A new, empty database ``name`` owned by the role ``owner`` logs in as, closed
        to PUBLIC.

        An existing one is dropped first: a half-restored database left by an
        interrupted run must not be restored into again.
        """
        await self.drop_database(name)
        db, rl = quoted(name), quoted(owner.user)
        async with self._session() as conn:
            await sessions.lock(conn, name)
            await conn.execute(f"CREATE DATABASE {db} OWNER {rl}")
            await sessions.close_to_public(conn, name, owner.user)
            await self.close_public_schema(name, owner)

    async def drop_database(self, name: str) -> None:
        """Drop the database ``name``, ending its sessions; nothing when it is absent."""
        quoted(name)  # checked before connecting
        async with self._session() as conn:
            await sessions.lock(conn, name)
            await sessions.drop_database(conn, name)

    async def switch_over(self, *, live: str, staging: str, retired: str) -> None:
        """Make ``staging`` the database called ``live``; the old one becomes ``retired``.

        Both renames run in one transaction, so clients find either the old data or the
        new under ``live``, never neither. Sessions on both databases are ended first
        (a database in use cannot be renamed) and connections to them are refused
        during the switch; applications reconnect to the same name and credentials.
        When ``staging`` is already gone and ``retired`` exists, an earlier call
        completed: nothing is done.
        """
        lv, st, rt = quoted(live), quoted(staging), quoted(retired)
        async with self._session() as conn:
            await sessions.lock(conn, live)
            present = {
                row["datname"]
                for row in await conn.fetch(
                    "SELECT datname FROM pg_catalog.pg_database WHERE datname = ANY($1::text[])",
                    [live, staging, retired],
                )
            }
            if staging not in present:
                if retired in present:
                    return  # switched over before: an interrupted run's second try
                raise DatabaseOperationFailed(
                    "StagingMissing", f"the restored database {staging} does not exist"
                )
            if retired in present:
                raise DatabaseOperationFailed(
                    "RetiredExists", f"database {retired} already exists; drop it first"
                )
            had_live = live in present
            # Refused first and committed, so nobody reconnects between the ending of
            # sessions and the renames; allowed again whatever happens.
            for name in (live, staging) if had_live else (staging,):
                await sessions.allow_connections(conn, name, False)
            crash_points.exit_here(crash_points.SWITCH_OVER_REFUSED)
            try:
                for attempt in range(1, sessions.RETRY_ATTEMPTS + 1):
                    await sessions.terminate(conn, live)
                    await sessions.terminate(conn, staging)
                    try:
                        async with conn.transaction():
                            if had_live:
                                await conn.execute(f"ALTER DATABASE {lv} RENAME TO {rt}")
                            await conn.execute(f"ALTER DATABASE {st} RENAME TO {lv}")
                        crash_points.exit_here(crash_points.SWITCH_OVER_RENAMED)
                        return
                    except asyncpg.ObjectInUseError:
                        # A terminated backend had not exited yet: try again shortly.
                        if attempt == sessions.RETRY_ATTEMPTS:
                            raise
                        await asyncio.sleep(sessions.RETRY_SECONDS)
            finally:
                # Under ``live`` now: the restored data, or the old data if the renames
                # failed. The retired database is not for connecting to; it is dropped.
                for name in (live, staging):
                    if await sessions.database_exists(conn, name):
                        await sessions.allow_connections(conn, name, True)

    async def closed_databases(self, names: Sequence[str]) -> list[str]:
        """Of ``names``, the databases that refuse connections. Only a switch-over refuses
        them, while it holds their lock: one found so outside it was cut short."""
        async with self._session() as conn:
            rows = await conn.fetch(
                "SELECT datname FROM pg_catalog.pg_database"
                " WHERE NOT datallowconn AND datname = ANY($1::text[]) ORDER BY 1",
                list(names),
            )
        return [str(row["datname"]) for row in rows]

    async def reopen(self, name: str) -> None:
        """Let clients connect to ``name`` again, if it exists.

        A switch-over interrupted after it refused connections (the process died before
        its ``finally``) leaves the live database refusing them; whoever recovers the
        interrupted restore calls this, under the same lock as the switch-over.
        """
        async with self._session() as conn:
            await sessions.lock(conn, name)
            if await sessions.database_exists(conn, name):
                await sessions.allow_connections(conn, name, True)
