"""Which databases a stray pass drops: those of gone Restores and drills, owned by a
watched environment; and which namespaces it looks in, as Kopf would watch them."""

from __future__ import annotations

import uuid

import pytest

from dockyard.operator.database import (
    database_identity,
    retired_database_name,
    staging_database_name,
)
from dockyard.operator.runs.strays import Scope, Stray, strays

GONE, ALIVE, DRILL = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())
ROLE = database_identity("shop", "copy")[1]
OTHER_ROLE = database_identity("elsewhere", "copy")[1]
OWNERS = {ROLE: ("shop", "copy")}


def test_a_gone_restores_databases_and_a_gone_drills_go_and_no_other() -> None:
    on_server = [
        (staging_database_name("r", GONE, 1), ROLE),
        (retired_database_name(GONE), ROLE),
        (staging_database_name("d", DRILL, 3), ROLE),
        (staging_database_name("r", ALIVE, 2), ROLE),  # its Restore is there
        (staging_database_name("r", GONE, 4), OTHER_ROLE),  # not a watched environment's
        ("dkr_notahexuidatall", ROLE),  # not a name the operator makes
        (database_identity("shop", "copy")[0], ROLE),  # the environment's own database
    ]
    alive = {staging_database_name("r", ALIVE), staging_database_name("d", ALIVE)}

    found = strays(on_server, owners=OWNERS, alive=alive)

    assert found == [
        Stray(staging_database_name("r", GONE, 1), "Restore", "shop", "copy"),
        Stray(retired_database_name(GONE), "Restore", "shop", "copy"),
        Stray(staging_database_name("d", DRILL, 3), "RestoreDrill", "shop", "copy"),
    ]


def test_a_uid_alive_as_one_kind_does_not_keep_the_other_kinds_databases() -> None:
    # Prefixes carry the kind: a Restore's uid never stands for a drill's.
    on_server = [(staging_database_name("d", ALIVE, 1), ROLE)]
    found = strays(on_server, owners=OWNERS, alive={staging_database_name("r", ALIVE)})
    assert [stray.database for stray in found] == [staging_database_name("d", ALIVE, 1)]


@pytest.mark.parametrize(
    ("patterns", "namespace", "covered"),
    [
        ((), "anything", True),
        (("shop",), "shop", True),
        (("shop",), "shop-2", False),
        (("t-*-abc-*",), "t-restore-abc-1234", True),
        (("t-*-abc-*",), "t-restore-abd-1234", False),
        (("!kube-*",), "kube-system", False),
        (("!kube-*",), "shop", True),
        (("a", "b-*"), "b-1", True),
    ],
)
def test_the_scope_covers_what_kopf_would_watch(
    patterns: tuple[str, ...], namespace: str, covered: bool
) -> None:
    assert Scope(patterns).covers(namespace) is covered
