"""Environment databases on the test bed's real PostgreSQL server.

Each test names its environments with a fresh uuid and drops them afterwards, so tests
neither see nor disturb one another's databases and roles.
"""

from __future__ import annotations

import asyncio
import dataclasses
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from dockyard.operator.database import (
    DatabaseCredentials,
    DatabaseUnavailable,
    ManagedDatabaseError,
    ManagedPostgres,
    TenantLogin,
    database_identity,
    generate_password,
    retired_database_name,
    sessions,
    staging_database_name,
)
from dockyard.testbed.cluster import State

pytestmark = pytest.mark.integration

Environment = tuple[str, str]  # (namespace, name)
# The namespace the databases are made for: only its uid is recorded, no such object.
NAMESPACE_UID = str(uuid.uuid4())
# The advisory-lock class id the operator's passes take a database's lock under ("dkyd").
LOCK_CLASS = 0x646B7964


def _with(
    dsn: str,
    *,
    user: str | None = None,
    password: str | None = None,
    port: int | None = None,
    database: str | None = None,
) -> str:
    parts = urlsplit(dsn)
    user = user if user is not None else parts.username
    password = password if password is not None else parts.password
    host = parts.hostname
    port = port if port is not None else parts.port
    path = f"/{database}" if database is not None else parts.path
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}:{port}", path=path))


def _everything_said(exc: BaseException) -> str:
    """The exception as a log line, a repr and a full traceback would show it."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


async def _admin_fetchval(
    dsn: str, query: str, *args: object, database: str | None = None
) -> object:
    conn = await asyncpg.connect(dsn, database=database)
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def _unmark(dsn: str, role: str) -> None:
    """Take the namespace mark off ``role``, as roles made before the mark were."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'COMMENT ON ROLE "{role}" IS NULL')
    finally:
        await conn.close()


async def _mark(dsn: str, role: str) -> object:
    """``role``'s comment: the namespace mark."""
    query = "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1"
    return await _admin_fetchval(dsn, query, role)


@pytest.fixture
def admin_dsn(testbed_state: State) -> str:
    return testbed_state.managed_postgres_url


@pytest.fixture
def server(admin_dsn: str) -> ManagedPostgres:
    return ManagedPostgres(admin_dsn)


@pytest.fixture
async def new_environment(server: ManagedPostgres) -> AsyncIterator[Callable[[], Environment]]:
    """Makes unique (namespace, name) pairs, all dropped when the test ends."""
    made: list[Environment] = []

    def make() -> Environment:
        env = (f"t-db-{uuid.uuid4().hex[:8]}", f"env-{uuid.uuid4().hex[:8]}")
        made.append(env)
        return env

    yield make
    for namespace, name in made:
        await server.drop(namespace=namespace, environment=name)


async def _ensure(
    server: ManagedPostgres, env: Environment, password: str, namespace_uid: str = NAMESPACE_UID
) -> DatabaseCredentials:
    return await server.ensure(
        namespace=env[0], namespace_uid=namespace_uid, environment=env[1], password=password
    )


async def test_ensure_gives_credentials_that_connect_and_can_create_a_table(
    server: ManagedPostgres, new_environment: Callable[[], Environment]
) -> None:
    env = new_environment()
    creds = await _ensure(server, env, generate_password())

    conn = await asyncpg.connect(creds.uri())
    try:
        assert await conn.fetchval("SELECT current_user") == creds.user
        assert await conn.fetchval("SELECT current_database()") == creds.database
        await conn.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO orders VALUES (1), (2)")
        assert await conn.fetchval("SELECT count(*) FROM orders") == 2
    finally:
        await conn.close()
    assert await server.exists(namespace=env[0], environment=env[1])


async def test_the_role_s_password_is_stored_as_a_scram_verifier(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    password = generate_password()
    creds = await _ensure(server, new_environment(), password)
    stored = await _admin_fetchval(
        admin_dsn, "SELECT rolpassword FROM pg_authid WHERE rolname = $1", creds.user
    )
    assert isinstance(stored, str)
    assert stored.startswith("SCRAM-SHA-256$4096:")
    assert password not in stored


async def test_ensure_again_keeps_the_data_and_only_the_new_password_works(
    server: ManagedPostgres, new_environment: Callable[[], Environment]
) -> None:
    env = new_environment()
    old = await _ensure(server, env, generate_password())
    conn = await asyncpg.connect(old.uri())
    await conn.execute("CREATE TABLE kept (id int)")
    await conn.close()

    new = await _ensure(server, env, generate_password())

    assert (new.database, new.user) == (old.database, old.user)
    conn = await asyncpg.connect(new.uri())
    try:
        assert await conn.fetchval("SELECT to_regclass('kept') IS NOT NULL")
    finally:
        await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(old.uri())


async def test_a_locked_out_role_cannot_log_in_loses_its_sessions_and_keeps_its_data(
    server: ManagedPostgres, new_environment: Callable[[], Environment]
) -> None:
    """A disabled database: its password works nowhere, its data stays, and ensure (the
    database enabled again, with a new password) lets the role in again."""
    env = new_environment()
    creds = await _ensure(server, env, generate_password())
    client = await asyncpg.connect(creds.uri())
    try:
        await client.execute("CREATE TABLE kept (id int)")

        found = await server.lock_out(
            namespace=env[0], namespace_uid=NAMESPACE_UID, environment=env[1]
        )

        assert found
        for _ in range(50):  # pg_terminate_backend signals; the backend ends a moment later
            if not await server.active_connections(namespace=env[0], environment=env[1]):
                break
            await asyncio.sleep(0.1)
        assert await server.active_connections(namespace=env[0], environment=env[1]) == 0
    finally:
        client.terminate()
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(creds.uri())
    assert await server.lock_out(
        namespace=env[0], namespace_uid=NAMESPACE_UID, environment=env[1]
    )  # again: nothing more to do
    again = await _ensure(server, env, generate_password())
    conn = await asyncpg.connect(again.uri())
    try:
        assert await conn.fetchval("SELECT to_regclass('kept') IS NOT NULL")
    finally:
        await conn.close()


async def test_lock_out_leaves_a_role_made_for_another_namespace_of_the_name(
    server: ManagedPostgres, new_environment: Callable[[], Environment]
) -> None:
    env = new_environment()
    creds = await _ensure(server, env, generate_password())

    found = await server.lock_out(
        namespace=env[0], namespace_uid=str(uuid.uuid4()), environment=env[1]
    )

    assert not found
    conn = await asyncpg.connect(creds.uri())
    await conn.close()


async def test_a_database_made_for_an_earlier_namespace_of_the_name_is_not_given_to_the_next(
    server: ManagedPostgres, new_environment: Callable[[], Environment]
) -> None:
    # A team's environment keeps its database (Retain); its namespace is deleted, and a
    # namespace of the same name (another uid) is made for another team.
    env = new_environment()
    earlier = await _ensure(server, env, generate_password())
    conn = await asyncpg.connect(earlier.uri())
    await conn.execute("CREATE TABLE salaries AS SELECT 'alice' AS who, 90000 AS pay")
    # The earlier team owns its database, not the mark: wiping its comments changes nothing.
    await conn.execute(f'COMMENT ON DATABASE "{earlier.database}" IS NULL')
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute(f'COMMENT ON ROLE "{earlier.user}" IS NULL')
    await conn.close()
    later_uid, later_password = str(uuid.uuid4()), generate_password()

    with pytest.raises(ManagedDatabaseError) as refused:
        await _ensure(server, env, later_password, namespace_uid=later_uid)

    assert refused.value.reason == "DatabaseTaken"
    assert "earlier namespace" in refused.value.message
    # The role kept its password: the newcomer's does not log in, the earlier one does.
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(dataclasses.replace(earlier, password=later_password).uri())
    conn = await asyncpg.connect(earlier.uri())
    try:
        assert await conn.fetchval("SELECT pay FROM salaries") == 90000
    finally:
        await conn.close()
    # Nor may the newcomer's environment snapshot or drop it; the earlier namespace may.
    namespace, name = env
    assert await server.made_elsewhere(
        namespace=namespace, namespace_uid=later_uid, environment=name
    )
    assert not await server.made_elsewhere(
        namespace=namespace, namespace_uid=NAMESPACE_UID, environment=name
    )


async def test_a_database_made_before_the_mark_is_taken_by_the_first_namespace_to_ensure_it(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    env = new_environment()
    creds = await _ensure(server, env, generate_password())
    await _unmark(admin_dsn, creds.user)
    upgraded_uid = str(uuid.uuid4())

    await _ensure(server, env, generate_password(), namespace_uid=upgraded_uid)

    with pytest.raises(ManagedDatabaseError, match="earlier namespace"):
        await _ensure(server, env, generate_password())
    comment = await _mark(admin_dsn, creds.user)
    assert comment == f"dockyard.io/namespace-uid={upgraded_uid}"


async def test_a_database_disabled_before_the_mark_is_locked_out_and_marked(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    # Disabled under an operator older than the mark: its role carries none, and any
    # copy of its password still logs in.
    env = new_environment()
    creds = await _ensure(server, env, generate_password())
    await _unmark(admin_dsn, creds.user)

    found = await server.lock_out(namespace=env[0], namespace_uid=NAMESPACE_UID, environment=env[1])

    assert found
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(creds.uri())
    comment = await _mark(admin_dsn, creds.user)
    assert comment == f"dockyard.io/namespace-uid={NAMESPACE_UID}"


async def test_lock_out_finds_no_role_where_there_is_none(
    server: ManagedPostgres, new_environment: Callable[[], Environment]
) -> None:
    env = new_environment()

    assert not await server.lock_out(
        namespace=env[0], namespace_uid=NAMESPACE_UID, environment=env[1]
    )


async def test_public_cannot_connect_to_an_environment_database(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    creds = await _ensure(server, new_environment(), generate_password())
    stranger, password = f"stranger_{uuid.uuid4().hex[:8]}", generate_password()
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"CREATE ROLE {stranger} LOGIN PASSWORD '{password}'")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await asyncpg.connect(
                _with(admin_dsn, user=stranger, password=password, database=creds.database)
            )
    finally:
        await admin.execute(f"DROP ROLE IF EXISTS {stranger}")
        await admin.close()


async def test_another_environment_s_role_cannot_connect(
    server: ManagedPostgres, new_environment: Callable[[], Environment]
) -> None:
    mine = await _ensure(server, new_environment(), generate_password())
    theirs = await _ensure(server, new_environment(), generate_password())
    trespass = DatabaseCredentials(
        host=theirs.host,
        port=theirs.port,
        database=mine.database,
        user=theirs.user,
        password=theirs.password,
    )
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
        await asyncpg.connect(trespass.uri())


async def test_an_environment_s_role_cannot_connect_to_the_maintenance_database_or_template1(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    # There it could hold another environment's advisory lock (every pass takes it in the
    # maintenance database) or plant objects every new database copies (template1).
    mine = await _ensure(server, new_environment(), generate_password())
    await _ensure(server, new_environment(), generate_password())
    maintenance = urlsplit(admin_dsn).path.lstrip("/")
    for database in (maintenance, "template1"):
        with pytest.raises(
            asyncpg.InsufficientPrivilegeError, match="permission denied for database"
        ):
            await asyncpg.connect(dataclasses.replace(mine, database=database).uri())


@pytest.mark.usefixtures("platform_migrated")
async def test_an_environment_s_role_cannot_connect_to_the_platform_database(
    server: ManagedPostgres, testbed_state: State, new_environment: Callable[[], Environment]
) -> None:
    # The test bed's platform database shares the server (so does the development overlay's).
    creds = await _ensure(server, new_environment(), generate_password())
    platform = urlsplit(testbed_state.database_url).path.lstrip("/")
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for database"):
        await asyncpg.connect(dataclasses.replace(creds, database=platform).uri())


async def test_a_pass_waits_for_a_held_database_lock_only_so_long(
    server: ManagedPostgres,
    admin_dsn: str,
    new_environment: Callable[[], Environment],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env, password = new_environment(), generate_password()
    creds = await _ensure(server, env, password)
    monkeypatch.setattr(sessions, "LOCK_WAIT_SECONDS", 0.5)
    holder = await asyncpg.connect(admin_dsn)
    try:
        await holder.execute(
            "SELECT pg_advisory_lock($1, hashtext($2))", LOCK_CLASS, creds.database
        )
        with pytest.raises(ManagedDatabaseError) as busy:
            await _ensure(server, env, password)
    finally:
        await holder.close()

    assert busy.value.reason == "DatabaseBusy"
    await _ensure(server, env, password)  # the lock is free again: the next pass goes through


async def test_public_holds_no_privilege_on_the_database(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    creds = await _ensure(server, new_environment(), generate_password())
    public_privileges = await _admin_fetchval(
        admin_dsn,
        "SELECT count(*) FROM pg_database,"
        " aclexplode(coalesce(datacl, acldefault('d', datdba))) AS acl"
        " WHERE datname = $1 AND acl.grantee = 0",
        creds.database,
    )
    assert public_privileges == 0


async def test_the_role_owns_schema_public_where_others_cannot_create(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    creds = await _ensure(server, new_environment(), generate_password())
    owner = await _admin_fetchval(
        admin_dsn,
        "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'public'",
        database=creds.database,
    )
    assert owner == creds.user
    # Even a role someone lets in by hand gets no more than PUBLIC has in schema public.
    guest, password = f"guest_{uuid.uuid4().hex[:8]}", generate_password()
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"CREATE ROLE {guest} LOGIN PASSWORD '{password}'")
        await admin.execute(f'GRANT CONNECT ON DATABASE "{creds.database}" TO {guest}')
        conn = await asyncpg.connect(
            _with(admin_dsn, user=guest, password=password, database=creds.database)
        )
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE TABLE public.squat (id int)")
        finally:
            await conn.close()
    finally:
        await admin.execute(f'REVOKE ALL ON DATABASE "{creds.database}" FROM {guest}')
        await admin.execute(f"DROP ROLE IF EXISTS {guest}")
        await admin.close()


# The tenant's trap for an unqualified catalog query (CVE-2018-1058): its database's
# search_path puts its own schema first, where a view of the catalog's name calls code
# that only does harm when run with more privilege than the tenant's.
CATALOG_VIEW_TRAP = """
CREATE SCHEMA evil;
CREATE FUNCTION evil.promote() RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
  PERFORM pg_catalog.set_config('role', 'none', true);
  BEGIN
    EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', '{role}');
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
  RETURN true;
END
$f$;
CREATE VIEW evil.pg_namespace AS SELECT * FROM pg_catalog.pg_namespace WHERE evil.promote();
CREATE VIEW evil.pg_database AS SELECT * FROM pg_catalog.pg_database WHERE evil.promote();
CREATE VIEW evil.pg_roles AS SELECT * FROM pg_catalog.pg_roles WHERE evil.promote();
ALTER DATABASE "{database}" SET search_path = evil, pg_catalog, public;
ALTER ROLE "{role}" SET search_path = evil, pg_catalog, public;
"""


async def test_no_call_runs_a_tenant_s_planted_catalog_view_as_the_admin(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    env, password = new_environment(), generate_password()
    creds = await _ensure(server, env, password)
    conn = await asyncpg.connect(creds.uri())
    try:
        await conn.execute(CATALOG_VIEW_TRAP.format(role=creds.user, database=creds.database))
    finally:
        await conn.close()

    # What the operator's passes, restores and drills ask of the server.
    await _ensure(server, env, password)
    assert await server.exists(namespace=env[0], environment=env[1])
    await server.active_connections(namespace=env[0], environment=env[1])
    staging = staging_database_name("r", str(uuid.uuid4()))
    await server.create_database(staging, owner=TenantLogin(creds.user, password))
    await server.databases_named_like(staging)
    await server.drop_database(staging)

    superuser = await _admin_fetchval(
        admin_dsn, "SELECT rolsuper FROM pg_roles WHERE rolname = $1", creds.user
    )
    assert superuser is False


async def test_ensure_lets_clients_in_again_after_an_interrupted_switch_over(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    env, password = new_environment(), generate_password()
    creds = await _ensure(server, env, password)
    # What a switch-over leaves when the operator dies right after refusing connections.
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'ALTER DATABASE "{creds.database}" ALLOW_CONNECTIONS false')
    finally:
        await admin.close()
    with pytest.raises(asyncpg.PostgresError, match="not currently accepting connections"):
        await asyncpg.connect(creds.uri())

    await _ensure(server, env, password)  # the environment's next pass

    conn = await asyncpg.connect(creds.uri())
    try:
        assert await conn.fetchval("SELECT current_user") == creds.user
    finally:
        await conn.close()


async def test_active_connections_counts_the_environment_s_clients(
    server: ManagedPostgres, new_environment: Callable[[], Environment]
) -> None:
    env = new_environment()
    creds = await _ensure(server, env, generate_password())
    assert await server.active_connections(namespace=env[0], environment=env[1]) == 0

    clients = [await asyncpg.connect(creds.uri()) for _ in range(2)]
    try:
        assert await server.active_connections(namespace=env[0], environment=env[1]) == 2
    finally:
        for client in clients:
            await client.close()


async def test_drop_removes_database_and_role_despite_an_open_connection(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    env = new_environment()
    creds = await _ensure(server, env, generate_password())
    client = await asyncpg.connect(creds.uri())

    await server.drop(namespace=env[0], environment=env[1])

    assert not await server.exists(namespace=env[0], environment=env[1])
    assert not await _admin_fetchval(
        admin_dsn, "SELECT count(*) FROM pg_roles WHERE rolname = $1", creds.user
    )
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        await client.fetchval("SELECT 1")
    client.terminate()


async def test_a_grant_in_another_tenant_s_database_does_not_stop_the_drop(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    env, theirs_env = new_environment(), new_environment()
    mine = await _ensure(server, env, generate_password())
    theirs = await _ensure(server, theirs_env, generate_password())
    # The other tenant lets this environment's role in and grants it a table: DROP ROLE
    # now fails, and only that tenant may revoke (the admin never runs SQL in there).
    conn = await asyncpg.connect(theirs.uri())
    try:
        await conn.execute(
            f'CREATE TABLE t (id int); GRANT SELECT ON t TO "{mine.user}";'
            f' GRANT CONNECT ON DATABASE "{theirs.database}" TO "{mine.user}"'
        )
    finally:
        await conn.close()
    into_theirs = dataclasses.replace(mine, database=theirs.database)
    await (await asyncpg.connect(into_theirs.uri())).close()
    oid = await _admin_fetchval(admin_dsn, "SELECT oid FROM pg_roles WHERE rolname = $1", mine.user)

    await server.drop(namespace=env[0], environment=env[1])

    assert not await server.exists(namespace=env[0], environment=env[1])
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await asyncpg.connect(into_theirs.uri())
    retired = await _admin_fetchval(
        admin_dsn,
        "SELECT rolname FROM pg_authid WHERE oid = $1 AND NOT rolcanlogin AND rolpassword IS NULL",
        oid,
    )
    assert isinstance(retired, str)
    assert retired.startswith("retired_")
    assert not await _admin_fetchval(
        admin_dsn, "SELECT count(*) FROM pg_roles WHERE rolname = $1", mine.user
    )
    # A later environment of the name gets a fresh role, and drops as usual.
    later = await _ensure(server, env, generate_password())
    conn = await asyncpg.connect(later.uri())
    try:
        assert await conn.fetchval("SELECT current_user") == mine.user
    finally:
        await conn.close()
    await server.drop(namespace=env[0], environment=env[1])
    assert not await _admin_fetchval(
        admin_dsn, "SELECT count(*) FROM pg_roles WHERE rolname = $1", mine.user
    )
    # Once the other tenant's database is gone, an administrator may drop the tombstone.
    await server.drop(namespace=theirs_env[0], environment=theirs_env[1])
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP ROLE "{retired}"')
    finally:
        await admin.close()


async def _role_named(admin_dsn: str, oid: object) -> object:
    """The name of the role ``oid``, a ``retired_<oid>_...`` one's included; None once
    it is gone."""
    return await _admin_fetchval(
        admin_dsn,
        "SELECT rolname FROM pg_roles WHERE oid = $1"
        " OR rolname LIKE 'retired\\_' || $1::oid::text || '\\_%'",
        oid,
    )


@pytest.mark.parametrize(
    "kept",
    [
        lambda uid: staging_database_name("d", uid),  # a drill's kept scratch database
        retired_database_name,  # the database a restore replaced, left by a run cut short
    ],
    ids=["drill-scratch", "restore-retired"],
)
async def test_the_run_databases_the_role_still_owns_go_with_it(
    server: ManagedPostgres,
    admin_dsn: str,
    new_environment: Callable[[], Environment],
    kept: Callable[[str], str],
) -> None:
    env, password = new_environment(), generate_password()
    creds = await _ensure(server, env, password)
    # Owned by the environment's role, as drills and restores make them (DROP OWNED
    # spares databases); a run cut short may leave one that no clean-up will drop.
    owned = kept(str(uuid.uuid4()))
    await server.create_database(owned, owner=TenantLogin(creds.user, password))
    oid = await _admin_fetchval(
        admin_dsn, "SELECT oid FROM pg_roles WHERE rolname = $1", creds.user
    )

    await server.drop(namespace=env[0], environment=env[1])

    assert not await _admin_fetchval(
        admin_dsn, "SELECT true FROM pg_database WHERE datname = $1", owned
    )
    assert await _role_named(admin_dsn, oid) is None  # dropped, not retired


async def test_a_database_the_role_owns_that_no_run_made_holds_the_drop(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    env, other = new_environment(), new_environment()
    creds = await _ensure(server, env, generate_password())
    stray, _ = database_identity(*other)  # a database of another environment's name
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{stray}" OWNER "{creds.user}"')
    finally:
        await admin.close()
    oid = await _admin_fetchval(
        admin_dsn, "SELECT oid FROM pg_roles WHERE rolname = $1", creds.user
    )
    try:
        with pytest.raises(ManagedDatabaseError) as raised:
            await server.drop(namespace=env[0], environment=env[1])
        assert "2BP01" in raised.value.message  # dependent objects still exist
        # Neither dropped nor retired: the role keeps its name and login.
        assert await _role_named(admin_dsn, oid) == creds.user
    finally:
        await server.drop_database(stray)

    await server.drop(namespace=env[0], environment=env[1])

    assert await _role_named(admin_dsn, oid) is None


async def test_a_role_granted_elsewhere_is_retired_once_its_run_databases_are_gone(
    server: ManagedPostgres,
    admin_dsn: str,
    new_environment: Callable[[], Environment],
    caplog: pytest.LogCaptureFixture,
) -> None:
    env, theirs_env = new_environment(), new_environment()
    password = generate_password()
    mine = await _ensure(server, env, password)
    theirs = await _ensure(server, theirs_env, generate_password())
    # The other tenant names this environment's role in its own database, in ways only
    # it may undo: a default privilege and a row security policy.
    conn = await asyncpg.connect(theirs.uri())
    try:
        await conn.execute(
            "CREATE TABLE t (id int); ALTER TABLE t ENABLE ROW LEVEL SECURITY;"
            f' CREATE POLICY p ON t TO "{mine.user}" USING (true);'
            f' ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO "{mine.user}"'
        )
    finally:
        await conn.close()
    # And the role still owns a drill's scratch database.
    scratch = staging_database_name("d", str(uuid.uuid4()))
    await server.create_database(scratch, owner=TenantLogin(mine.user, password))
    oid = await _admin_fetchval(admin_dsn, "SELECT oid FROM pg_roles WHERE rolname = $1", mine.user)

    # The scratch database goes with the environment; the other tenant's naming stays.
    with caplog.at_level("WARNING", logger="dockyard.operator.database.tenants"):
        await server.drop(namespace=env[0], environment=env[1])

    assert not await _admin_fetchval(
        admin_dsn, "SELECT true FROM pg_database WHERE datname = $1", scratch
    )

    retired = await _role_named(admin_dsn, oid)
    assert isinstance(retired, str)
    assert retired.startswith("retired_")
    assert not await _admin_fetchval(
        admin_dsn,
        "SELECT rolcanlogin OR rolpassword IS NOT NULL FROM pg_authid WHERE oid = $1",
        oid,
    )
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert theirs.database in warning
    assert retired in warning
    assert scratch not in warning
    # Once the other tenant's database is gone, an administrator may drop the tombstone.
    await server.drop(namespace=theirs_env[0], environment=theirs_env[1])
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'DROP ROLE "{retired}"')
    finally:
        await admin.close()


@pytest.mark.parametrize("drift", ["CONNECTION LIMIT 0", "IS_TEMPLATE true"])
async def test_what_the_owner_alters_on_its_database_is_found_and_set_back(
    server: ManagedPostgres, new_environment: Callable[[], Environment], drift: str
) -> None:
    env, password = new_environment(), generate_password()
    creds = await _ensure(server, env, password)
    assert await server.intact(namespace=env[0], environment=env[1])
    conn = await asyncpg.connect(creds.uri())
    try:
        await conn.execute(f'ALTER DATABASE "{creds.database}" {drift}')
    finally:
        await conn.close()

    assert not await server.intact(namespace=env[0], environment=env[1])
    await _ensure(server, env, password)  # what the environment's pass does then

    assert await server.intact(namespace=env[0], environment=env[1])
    conn = await asyncpg.connect(creds.uri())
    await conn.close()


async def test_drop_removes_a_database_its_owner_marked_a_template(
    server: ManagedPostgres, new_environment: Callable[[], Environment]
) -> None:
    env = new_environment()
    creds = await _ensure(server, env, generate_password())
    conn = await asyncpg.connect(creds.uri())
    try:
        await conn.execute(f'ALTER DATABASE "{creds.database}" IS_TEMPLATE true')
    finally:
        await conn.close()

    await server.drop(namespace=env[0], environment=env[1])

    assert not await server.exists(namespace=env[0], environment=env[1])
    conn.terminate()


async def test_drop_twice_and_drop_of_an_unknown_environment_are_fine(
    server: ManagedPostgres, new_environment: Callable[[], Environment]
) -> None:
    env = new_environment()
    await _ensure(server, env, generate_password())
    await server.drop(namespace=env[0], environment=env[1])
    await server.drop(namespace=env[0], environment=env[1])
    never = new_environment()
    await server.drop(namespace=never[0], environment=never[1])
    assert not await server.exists(namespace=never[0], environment=never[1])


async def test_concurrent_ensures_of_one_environment_all_succeed(
    server: ManagedPostgres, new_environment: Callable[[], Environment]
) -> None:
    env = new_environment()
    passwords = [generate_password() for _ in range(4)]
    results = await asyncio.gather(*(_ensure(server, env, pw) for pw in passwords))
    assert len({(c.database, c.user) for c in results}) == 1
    working = 0
    for creds in results:
        try:
            conn = await asyncpg.connect(creds.uri())
        except asyncpg.InvalidPasswordError:
            continue
        await conn.close()
        working += 1
    assert working == 1  # whichever ran last set the password that now works


async def test_credentials_name_the_public_host(
    admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    server = ManagedPostgres(admin_dsn, public_host="postgres.db.svc")
    creds = await _ensure(server, new_environment(), generate_password())
    assert (creds.host, creds.port) == ("postgres.db.svc", urlsplit(admin_dsn).port)


async def test_an_admin_that_is_not_a_superuser_can_ensure_and_drop(
    admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    admin_name, admin_password = f"cloudadmin_{uuid.uuid4().hex[:8]}", generate_password()
    maintenance = urlsplit(admin_dsn).path.lstrip("/")
    superuser = await asyncpg.connect(admin_dsn)
    await superuser.execute(
        f"CREATE ROLE {admin_name} LOGIN CREATEDB CREATEROLE PASSWORD '{admin_password}'"
    )
    # PUBLIC may not connect to the maintenance database: a service grants its admin that.
    await superuser.execute(f'GRANT CONNECT ON DATABASE "{maintenance}" TO {admin_name}')
    try:
        server = ManagedPostgres(_with(admin_dsn, user=admin_name, password=admin_password))
        env = new_environment()
        creds = await _ensure(server, env, generate_password())
        conn = await asyncpg.connect(creds.uri())
        await conn.execute("CREATE TABLE t (id int)")
        await server.drop(namespace=env[0], environment=env[1])
        assert not await server.exists(namespace=env[0], environment=env[1])
        conn.terminate()
    finally:
        await superuser.execute(f'REVOKE ALL ON DATABASE "{maintenance}" FROM {admin_name}')
        await superuser.execute(f"DROP ROLE IF EXISTS {admin_name}")
        await superuser.close()


Operation = Callable[[ManagedPostgres], Awaitable[object]]
OPERATIONS: dict[str, Operation] = {
    "ensure": lambda s: s.ensure(
        namespace="ns", namespace_uid=NAMESPACE_UID, environment="e", password="env-pw-never-shown"
    ),
    "exists": lambda s: s.exists(namespace="ns", environment="e"),
    "drop": lambda s: s.drop(namespace="ns", environment="e"),
    "active_connections": lambda s: s.active_connections(namespace="ns", environment="e"),
}


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_an_unreachable_server_is_reported_without_secrets(
    admin_dsn: str, operation: str
) -> None:
    dsn = _with(admin_dsn, password="admin-pw-never-shown", port=1)
    server = ManagedPostgres(dsn, connect_timeout=2)
    with pytest.raises(DatabaseUnavailable) as info:
        await OPERATIONS[operation](server)
    assert info.value.reason == "ServerUnreachable"
    said = _everything_said(info.value)
    assert "127.0.0.1:1" in said
    assert "admin-pw-never-shown" not in said
    assert "env-pw-never-shown" not in said


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_a_wrong_admin_password_is_reported_without_secrets(
    admin_dsn: str, operation: str
) -> None:
    server = ManagedPostgres(_with(admin_dsn, password="admin-pw-never-shown"))
    with pytest.raises(DatabaseUnavailable) as info:
        await OPERATIONS[operation](server)
    assert info.value.reason == "AuthenticationFailed"
    said = _everything_said(info.value)
    assert "admin-pw-never-shown" not in said
    assert "env-pw-never-shown" not in said


# --- restore databases: a fresh database, the switch-over, the drop ------------------------


async def _rows(dsn: str, database: str) -> list[int]:
    conn = await asyncpg.connect(dsn, database=database)
    try:
        return [r["x"] for r in await conn.fetch("SELECT x FROM t ORDER BY x")]
    finally:
        await conn.close()


async def _exec(dsn: str, database: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, database=database)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_a_switch_over_swaps_in_the_restored_database_and_ends_old_sessions(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    env, password = new_environment(), generate_password()
    credentials = await _ensure(server, env, password)
    live, role = credentials.database, credentials.user
    await _exec(admin_dsn, live, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
    uid = str(uuid.uuid4())
    staging, retired = staging_database_name("r", uid, 1), retired_database_name(uid)
    await server.create_database(staging, owner=TenantLogin(role, password))
    # As the restore does: objects are made as the environment's role.
    await _exec(
        admin_dsn,
        staging,
        f'SET ROLE "{role}"; CREATE TABLE t (x int); INSERT INTO t VALUES (2), (3)',
    )
    app = await asyncpg.connect(credentials.uri())  # the environment's app, connected

    await server.switch_over(live=live, staging=staging, retired=retired)

    assert await _rows(admin_dsn, live) == [2, 3]
    # The retired database refuses connections (it is only kept until it is dropped).
    with pytest.raises(asyncpg.PostgresError, match="not currently accepting connections"):
        await _rows(admin_dsn, retired)
    assert not await server.database_exists(staging)
    assert await server.database_exists(retired)
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError)):
        await app.fetchval("SELECT 1")
    # The same credentials reach the restored data, owned by the database's role.
    again = await asyncpg.connect(credentials.uri())
    try:
        assert await again.fetchval("SELECT count(*) FROM t") == 2
    finally:
        await again.close()
    assert (
        await _admin_fetchval(
            admin_dsn, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", live
        )
        == role
    )
    # The restored database is still the namespace's own: no later namespace of the name
    # may take it.
    namespace, name = env
    assert await server.made_elsewhere(
        namespace=namespace, namespace_uid=str(uuid.uuid4()), environment=name
    )
    # A second call (an interrupted run's retry) finds it done and changes nothing.
    await server.switch_over(live=live, staging=staging, retired=retired)
    await server.drop_database(retired)
    assert not await server.database_exists(retired)


async def test_a_fresh_database_replaces_a_half_restored_one_and_is_closed_to_public(
    server: ManagedPostgres, admin_dsn: str, new_environment: Callable[[], Environment]
) -> None:
    env, password = new_environment(), generate_password()
    credentials = await _ensure(server, env, password)
    owner = TenantLogin(credentials.user, password)
    staging = staging_database_name("d", str(uuid.uuid4()))
    await server.create_database(staging, owner=owner)
    await _exec(admin_dsn, staging, "CREATE TABLE leftover (x int)")

    await server.create_database(staging, owner=owner)

    assert not await _admin_fetchval(
        admin_dsn, "SELECT count(*) FROM pg_tables WHERE tablename = 'leftover'", database=staging
    )
    assert not await _admin_fetchval(
        admin_dsn, "SELECT has_database_privilege('public', $1, 'CONNECT')", staging
    )
    await server.drop_database(staging)
    await server.drop_database(staging)  # absent: nothing to do
    assert not await server.database_exists(staging)


def test_restore_database_names_are_short_and_refuse_anything_but_a_uid() -> None:
    uid = "0f8e2b6c-1d2a-4c3b-9a8f-7e6d5c4b3a21"
    assert staging_database_name("r", uid) == "dkr_0f8e2b6c1d2a4c3b"
    assert staging_database_name("d", uid, 12) == "dkd_0f8e2b6c1d2a4c3b_12"
    assert retired_database_name(uid) == "dkr_0f8e2b6c1d2a4c3b_old"
    with pytest.raises(ValueError, match="uid"):
        staging_database_name("r", "x'; DROP DATABASE postgres; --")
    with pytest.raises(ValueError, match="uid"):
        staging_database_name("q", uid)
