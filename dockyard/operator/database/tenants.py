"""Each environment's own database and login role: ensured, asked about, dropped.

The Environment reconciler makes sure an environment's database and role exist with
the password held in its Secret (``ensure``), asks whether clients are still at work
(``active_connections``) and removes both (``drop``). Only the environment's role (and
the server's administrators) may connect to its database, and nobody else may create
objects in its ``public`` schema.

A database and its role are named for their namespace and environment, and may outlive
both (``deletionPolicy: Retain``). The role's comment records the uid of the namespace
they were made for (``dockyard.io/namespace-uid=<uid>``): a namespace made again under
the same name, for another team, is not given the earlier namespace's data
(``DatabaseTaken``), nor may it drop it. The role's, not the database's: the tenant owns
its database (and could rewrite its comment), a restore replaces the database, and only
a role with CREATEROLE may comment on a role. A role with no such mark (made before the
mark was kept) is taken by the first namespace that ensures it.

A role that another tenant granted something to in its own database (a privilege, a
default privilege, a row security policy naming it) cannot be dropped, and the admin
never runs SQL in that database to revoke it. ``drop`` retires such a role instead: it
may no longer log in, has no password, and is renamed ``retired_<oid>_<name>``
(:func:`retired_role_name`), so its name is free for a later environment's fresh role.
An administrator may drop it once the grants are gone. The restore and drill databases
a role still owns (``DROP OWNED`` spares databases) go with it: a run cut short between
its switch-over and its clean-up may leave one no clean-up will come for. A role that
still owns anything else is not retired: ``drop`` fails, and a later try drops the role
once that is gone.
"""

from __future__ import annotations

import logging
import re
from contextlib import suppress
from typing import Final

import asyncpg

from dockyard.operator.database import sessions
from dockyard.operator.database.credentials import (
    DatabaseCredentials,
    TenantLogin,
    scram_sha256_verifier,
    sql_literal,
)
from dockyard.operator.database.errors import ManagedDatabaseError
from dockyard.operator.database.names import database_identity, quoted, retired_role_name
from dockyard.operator.database.sessions import AdminSessions

logger = logging.getLogger(__name__)

ENSURE_VERSION = 4
"""Changes whenever what ``ensure`` does changes, so every environment is ensured anew."""

NAMESPACE_MARK: Final = "dockyard.io/namespace-uid="
"""How a database's comment begins when it names the namespace it was made for."""
DATABASE_TAKEN: Final = "DatabaseTaken"
# The ``pg_shdepend.deptype``s of a role that is only named in another tenant's database,
# in what that tenant alone may undo there: a privilege or default privilege granted to
# it ("a"), a row security policy that applies to it ("r"), an extension's initial
# privilege ("i", PostgreSQL 17+). Anything else ("o": it owns something) is not.
_NAMED_IN: Final = frozenset({"a", "r", "i"})
# A restore's staging or replaced database, a drill's scratch one (names.staging_database_name).
_RUN_DATABASE: Final = re.compile(r"dk[rd]_[0-9a-f]{16}(_[0-9]{1,6})?(_old)?")


class EnvironmentDatabases(AdminSessions):
    """What the managed server does for environments (``ManagedPostgres`` is one)."""

    async def ensure(
        self, *, namespace: str, namespace_uid: str, environment: str, password: str
    ) -> DatabaseCredentials:
        """Create or repair the environment's role and database; its password becomes ``password``.

        Safe to repeat and to race: an existing role gets the new password (so the
        Secret always holds the one that works), an existing database keeps its data.
        A database made for an earlier namespace of this name is refused
        (``DatabaseTaken``), its role left as it was.
        """
        verifier = scram_sha256_verifier(password)
        database, role = database_identity(namespace, environment)
        async with self._session(hide=(password,)) as conn:
            await sessions.lock(conn, database)
            made_for = await _made_for(conn, role)
            if not namespace_uid or made_for not in (None, namespace_uid):
                raise ManagedDatabaseError(DATABASE_TAKEN, _taken(database, namespace))
            await _ensure_role(conn, role, verifier)
            mark = sql_literal(NAMESPACE_MARK + namespace_uid)
            await conn.execute(f"COMMENT ON ROLE {quoted(role)} IS {mark}")
            created = await _ensure_database(conn, database, role)
            if created:
                # Still under the lock, so a concurrent drop cannot remove it meanwhile.
                await self.close_public_schema(database, TenantLogin(role, password))
        return self.credentials(namespace=namespace, environment=environment, password=password)

    async def reassert(self, login: TenantLogin) -> None:
        """Undo what code running as ``login``'s role may have done to the role itself:
        its password (a role may change its own), its settings (``ALTER ROLE
        CURRENT_USER SET``, in a database or everywhere), and the roles it was granted
        to (before PostgreSQL 16 a role may grant itself). Another environment's dump,
        restored as this role, runs its constraints, defaults and policies as it. Run
        from the maintenance database, so none of that code runs here."""
        rl = quoted(login.user)
        verifier = scram_sha256_verifier(login.password)
        async with self._session(hide=(login.password,)) as conn:
            oid = await conn.fetchval(
                "SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1", login.user
            )
            if oid is None:
                return
            await conn.execute(f"ALTER ROLE {rl} WITH PASSWORD {sql_literal(verifier)}")
            await conn.execute(f"ALTER ROLE {rl} RESET ALL")
            for row in await conn.fetch(
                "SELECT d.datname FROM pg_catalog.pg_db_role_setting s"
                " JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase WHERE s.setrole = $1",
                oid,
            ):
                await conn.execute(f"ALTER ROLE {rl} IN DATABASE {quoted(row[0])} RESET ALL")
            # The admin's own membership (how a non-superuser admin manages the role) stays.
            for row in await conn.fetch(
                "SELECT m.rolname FROM pg_catalog.pg_auth_members a"
                " JOIN pg_catalog.pg_roles m ON m.oid = a.member"
                " WHERE a.roleid = $1 AND m.rolname <> CURRENT_USER",
                oid,
            ):
                await conn.execute(f"REVOKE {rl} FROM {quoted(row[0])}")

    async def lock_out(self, *, namespace: str, namespace_uid: str, environment: str) -> bool:
        """The environment's role may no longer log in, has no password and no session:
        its database was disabled, and the data is kept. Safe to repeat; ``ensure`` lets
        it in again. A role made for another namespace of this name is left as it is; an
        unmarked one (made before roles carried their namespace's uid) is taken as this
        namespace's, as ``ensure`` takes it, and marked so. Whether this environment's
        role was found."""
        database, role = database_identity(namespace, environment)
        async with self._session() as conn:
            await sessions.lock(conn, database)
            if not namespace_uid or await _made_for(conn, role) not in (None, namespace_uid):
                return False
            oid = await conn.fetchval(
                "SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1", role
            )
            if oid is None:
                return False
            mark = sql_literal(NAMESPACE_MARK + namespace_uid)
            await conn.execute(f"COMMENT ON ROLE {quoted(role)} IS {mark}")
            await conn.execute(f"ALTER ROLE {quoted(role)} WITH NOLOGIN PASSWORD NULL")
            await _end_sessions(conn, int(oid))
        return True

    async def made_elsewhere(self, *, namespace: str, namespace_uid: str, environment: str) -> bool:
        """Whether the environment's database was made for another namespace of this name:
        it is not this environment's to snapshot or drop."""
        _, role = database_identity(namespace, environment)
        async with self._session() as conn:
            return await _made_for(conn, role) not in (None, namespace_uid)

    def credentials(
        self, *, namespace: str, environment: str, password: str
    ) -> DatabaseCredentials:
        """What a workload needs to log in to the environment's database with ``password``."""
        database, role = database_identity(namespace, environment)
        return DatabaseCredentials(
            host=self._public_host,
            port=self._port,
            database=database,
            user=role,
            password=password,
            sslmode=self._sslmode,
        )

    async def intact(self, *, namespace: str, environment: str) -> bool:
        """Whether the role and database are still as ``ensure`` left them.

        The role may log in and owns the database, which accepts connections (with no
        limit), is no template and grants PUBLIC nothing. One catalog query on a pooled
        connection: what a pass asks instead of ``ensure`` when nothing that ``ensure``
        depends on has changed.
        """
        database, role = database_identity(namespace, environment)
        async with self._session() as conn:
            found = await conn.fetchval(
                "SELECT true FROM pg_catalog.pg_database d"
                " JOIN pg_catalog.pg_roles r ON r.oid = d.datdba"
                " WHERE d.datname = $1 AND r.rolname = $2 AND r.rolcanlogin AND d.datallowconn"
                " AND d.datconnlimit = -1 AND NOT d.datistemplate"
                " AND d.datacl IS NOT NULL AND NOT EXISTS ("
                "  SELECT 1 FROM pg_catalog.aclexplode(d.datacl) a WHERE a.grantee = 0)",
                database,
                role,
                timeout=self._connect_timeout,
            )
        return bool(found)

    async def exists(self, *, namespace: str, environment: str) -> bool:
        """Whether the environment's database exists (its data is what deletion is about)."""
        database, _ = database_identity(namespace, environment)
        async with self._session() as conn:
            return await sessions.database_exists(conn, database)

    async def active_connections(self, *, namespace: str, environment: str) -> int:
        """Client sessions open on the environment's database right now."""
        database, _ = database_identity(namespace, environment)
        async with self._session() as conn:
            count = await conn.fetchval(
                "SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity WHERE datname = $1"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                database,
            )
        return int(count)

    async def drop(self, *, namespace: str, environment: str) -> None:
        """Remove the environment's database and role, ending their sessions; safe to repeat.

        The restore and drill databases the role still owns are dropped with it. A role
        that is then still only granted privileges (or named in policies) in other
        tenants' databases is retired, not dropped; one that still owns something else is
        neither: the drop fails with ``DatabaseOperationFailed`` (SQLSTATE 2BP01), to be
        tried again later.
        """
        database, role = database_identity(namespace, environment)
        rl = quoted(role)
        async with self._session() as conn:
            await sessions.lock(conn, database)
            await sessions.drop_database(conn, database, role=role)
            if await conn.fetchval("SELECT true FROM pg_catalog.pg_roles WHERE rolname = $1", role):
                # What the role owns or was granted in the admin database would block
                # DROP ROLE; it belongs to the environment being removed.
                await conn.execute(f"DROP OWNED BY {rl}")
                try:
                    await conn.execute(f"DROP ROLE IF EXISTS {rl}")
                except asyncpg.DependentObjectsStillExistError:
                    owned, named_in = await _dependents(conn, role)
                    if owned and await _drop_leftovers(conn, role, owned):
                        # Only its own restore and drill databases held it: gone now.
                        try:
                            await conn.execute(f"DROP ROLE IF EXISTS {rl}")
                            return
                        except asyncpg.DependentObjectsStillExistError:
                            owned, named_in = await _dependents(conn, role)
                    if owned or not named_in:
                        # Something no run of ours made: whoever made it drops it, and a
                        # later try the role (as one does when nothing is left at all).
                        if owned:
                            logger.info(
                                "role %s still owns %s: dropped on a later try, once they are gone",
                                role,
                                ", ".join(owned),
                            )
                        raise
                    # Only named in other tenants' databases, by them: theirs to revoke,
                    # never the admin's, who runs no SQL in there.
                    retired = await _retire_role(conn, role)
                    logger.warning(
                        "role %s is still granted privileges, or named in row security "
                        "policies, in database(s) %s, which only their owners may revoke: "
                        "retired as %s (no login, no password) instead of dropped",
                        role,
                        ", ".join(named_in),
                        retired,
                    )


async def _made_for(conn: asyncpg.Connection, role: str) -> str | None:
    """The uid of the namespace ``role`` (and its database) was made for; None if
    unmarked or absent."""
    comment = await conn.fetchval(
        "SELECT pg_catalog.shobj_description(oid, 'pg_authid')"
        " FROM pg_catalog.pg_roles WHERE rolname = $1",
        role,
    )
    if not isinstance(comment, str) or not comment.startswith(NAMESPACE_MARK):
        return None
    return comment.removeprefix(NAMESPACE_MARK)


def _taken(database: str, namespace: str) -> str:
    return (
        f"Database {database} was made for an earlier namespace named {namespace}, and kept "
        "(deletionPolicy Retain): it is not given to this one. An administrator may drop "
        "it and its role, or hand them over by setting the role's comment to "
        f"'{NAMESPACE_MARK}<this namespace's uid>'."
    )


async def _ensure_role(conn: asyncpg.Connection, role: str, verifier: str) -> None:
    """The role exists, may log in, and answers to the password behind ``verifier``."""
    rl = quoted(role)
    # Already there, or made this instant by a caller that does not take the lock.
    with suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
        await conn.execute(f"CREATE ROLE {rl} LOGIN")
    await conn.execute(f"ALTER ROLE {rl} WITH LOGIN PASSWORD {sql_literal(verifier)}")
    if not await conn.fetchval(
        "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = CURRENT_USER"
    ):
        # A managed service's admin is rarely a superuser: it must be a member of the
        # role to give it a database, hand it schema public and drop it later.
        await conn.execute(f"GRANT {rl} TO CURRENT_USER")


async def _drop_leftovers(conn: asyncpg.Connection, role: str, owned: list[str]) -> bool:
    """Drop what ``role`` still owns when it is nothing but restore and drill databases
    (``dkr_...``, ``dkd_...``, owned by the environment they restore into): left by a
    run cut short between its switch-over and its clean-up, no clean-up will come for
    them, and the environment they served is going. Dropping a database is no SQL run
    inside it. Whether they were all such databases (and are gone)."""
    names = [entry.removeprefix("database ") for entry in owned]
    if not all(entry.startswith("database ") for entry in owned) or not all(
        _RUN_DATABASE.fullmatch(name) for name in names
    ):
        return False
    for name in names:
        await sessions.drop_database(conn, name, role=role)
    logger.info("role %s owned only run databases, dropped with it: %s", role, ", ".join(names))
    return True


async def _dependents(conn: asyncpg.Connection, role: str) -> tuple[list[str], list[str]]:
    """What still keeps ``role`` from being dropped, from the shared catalog
    ``pg_shdepend`` (so asked from the maintenance database): what it owns ("database
    dkd_...", "objects in database ..."), and the databases where it is only named in
    privileges or policies (:data:`_NAMED_IN`)."""
    rows = await conn.fetch(
        "SELECT s.deptype::text AS deptype, d.datname AS database, o.datname AS owned"
        " FROM pg_catalog.pg_shdepend s"
        " JOIN pg_catalog.pg_roles r ON r.oid = s.refobjid"
        " LEFT JOIN pg_catalog.pg_database d ON d.oid = s.dbid"
        " LEFT JOIN pg_catalog.pg_database o"
        "  ON s.classid = 'pg_catalog.pg_database'::pg_catalog.regclass AND o.oid = s.objid"
        " WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass"
        " AND r.rolname = $1",
        role,
    )
    databases: set[str] = set()
    objects_in: set[str] = set()
    named_in: set[str] = set()
    for row in rows:
        if row["deptype"] in _NAMED_IN:
            named_in.add(row["database"] or "(shared objects)")
        elif row["owned"] is not None:
            databases.add(row["owned"])
        else:
            objects_in.add(row["database"] or "(shared objects)")
    # What it owns inside a database it owns goes with that database: not named again.
    owned = [f"database {name}" for name in sorted(databases)]
    owned += [f"objects in database {name}" for name in sorted(objects_in - databases)]
    return owned, sorted(named_in)


async def _retire_role(conn: asyncpg.Connection, role: str) -> str:
    """``role`` may no longer log in, has no password and no session, and is renamed out
    of the way (:func:`retired_role_name`); its new name."""
    oid = await conn.fetchval("SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1", role)
    retired = retired_role_name(role, int(oid))
    rl = quoted(role)
    async with conn.transaction():
        await conn.execute(f"ALTER ROLE {rl} WITH NOLOGIN PASSWORD NULL")
        await conn.execute(f"ALTER ROLE {rl} RENAME TO {quoted(retired)}")
    # Sessions it opened since its database was dropped (in a database whose owner
    # granted it CONNECT) outlive NOLOGIN: end them.
    await _end_sessions(conn, int(oid))
    return retired


async def _end_sessions(conn: asyncpg.Connection, oid: int) -> None:
    """End the sessions of the role ``oid``: NOLOGIN stops only new ones."""
    await conn.execute(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity"
        " WHERE usesysid = $1 AND pid <> pg_catalog.pg_backend_pid()",
        oid,
    )


async def _ensure_database(conn: asyncpg.Connection, database: str, role: str) -> bool:
    """The database exists, belongs to ``role``, and nobody else may connect to it;
    whether this call created it."""
    db, rl = quoted(database), quoted(role)
    created = False
    if not await sessions.database_exists(conn, database):
        # A concurrent creator may win; the ALTER below still sets the owner.
        with suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            await conn.execute(f"CREATE DATABASE {db} OWNER {rl}")
            created = True
    await conn.execute(f"ALTER DATABASE {db} OWNER TO {rl}")
    await sessions.close_to_public(conn, database, role)
    # A switch-over that died between refusing connections and allowing them again, for
    # a restore since deleted, would leave the environment locked out for good. Under
    # the lock the switch-over also takes, so never in the middle of one. Its owner may
    # lock its clients out too (CONNECTION LIMIT 0), or mark it a template, which
    # DROP DATABASE refuses: both are set back.
    await conn.execute(
        f"ALTER DATABASE {db} WITH ALLOW_CONNECTIONS true CONNECTION LIMIT -1 IS_TEMPLATE false"
    )
    return created
