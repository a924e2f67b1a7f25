"""What pg_restore says about failing rows never reaches a status or an Event (issue 9,
item 10): PostgreSQL's DETAIL and CONTEXT lines echo row values ("Failing row contains
(...)", "Key (id)=(42) already exists", a COPY line's text), and Restore statuses and
Events are readable by everyone who may view the namespace."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockyard.testbed.cluster import State
from tests.conftest import Kubectl
from tests.integration.test_backup_operator import (
    _apply,
    _backup,
    _environment,
    _key_secret,
    _owner_dsn,
    _run_sql,
    _wait_phase,
)
from tests.integration.test_restore_operator import _empty_environment, _restore, _wait_restore

pytestmark = pytest.mark.usefixtures("operator_process")

SECRET = "SECRET-ROW-VALUE-7f3a9c"

# A CHECK constraint whose function reads a table: true when the rows went in, false
# once that table changes, so the dump holds rows that its own constraint refuses when
# pg_restore copies them back. The error PostgreSQL reports names the refused row.
TRAP_SQL = f"""
CREATE TABLE flags (allowed boolean NOT NULL);
INSERT INTO flags VALUES (true);
CREATE FUNCTION allowed(text) RETURNS boolean LANGUAGE sql STABLE
    AS $$ SELECT coalesce((SELECT bool_and(allowed) FROM public.flags), false) $$;
CREATE TABLE vault (id int PRIMARY KEY, token text CHECK (public.allowed(token)));
INSERT INTO vault VALUES (42, '{SECRET}');
UPDATE flags SET allowed = false;
"""


def _all_event_messages(kubectl: Kubectl, namespace: str) -> list[str]:
    events = json.loads(kubectl("get", "events", "-n", namespace, "-o", "json").stdout)
    return [str(e.get("message", "")) for e in events["items"]]


def test_a_restore_failing_on_a_row_keeps_the_row_out_of_status_and_events(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _environment(kubectl, testbed_state, namespace)
    _run_sql(_owner_dsn(kubectl, namespace, "shop"), TRAP_SQL)
    _key_secret(kubectl, namespace)
    _apply(kubectl, namespace, _backup(namespace, "nightly", backup_root))
    _wait_phase(kubectl, namespace, "nightly", "Completed")
    _empty_environment(kubectl, namespace, "copy")

    _apply(
        kubectl,
        namespace,
        _restore(
            "to-copy",
            source={"backupRef": {"name": "nightly"}},
            target={"environmentRef": {"name": "copy"}},
        ),
    )
    status = _wait_restore(kubectl, namespace, "to-copy", "Failed", timeout=240)

    # Still says what went wrong, and where ...
    assert "pg_restore" in status["message"]
    assert "violates check constraint" in status["message"]
    # ... but not with what.
    assert SECRET not in json.dumps(status)
    messages = _all_event_messages(kubectl, namespace)
    assert any("violates check constraint" in m for m in messages), messages
    leaked = [m for m in messages if SECRET in m]
    assert not leaked, leaked
