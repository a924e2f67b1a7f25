"""Children of a deleted environment change and go after its finalizer forgot its lock:
the passes they start must not leave a lock behind for every environment ever deleted."""

from __future__ import annotations

from typing import Any, cast

import pytest

from dockyard.core.kube import KubeClient
from dockyard.core.settings import Settings
from dockyard.operator.environments.reconciler import Reconciler

KEY = ("team", "shop")
GOING = {"metadata": {"name": "shop", "deletionTimestamp": "2026-12-06T12:00:00Z"}}


def _reconciler(found: dict[str, Any] | None) -> Reconciler:
    reconciler = Reconciler(kube=cast(KubeClient, None), postgres=None, settings=Settings())

    async def fetch(key: tuple[str, str]) -> dict[str, Any] | None:
        return found

    async def full_pass(raw: dict[str, Any]) -> None:
        return None

    reconciler.fetch = fetch  # type: ignore[method-assign]
    reconciler._pass = full_pass  # type: ignore[method-assign]
    return reconciler


@pytest.mark.parametrize("found", [None, GOING], ids=["gone", "being-deleted"])
async def test_a_pass_for_an_environment_that_is_gone_leaves_no_lock(
    found: dict[str, Any] | None,
) -> None:
    reconciler = _reconciler(found)

    await reconciler.reconcile_owner(KEY)
    await reconciler.refresh_status(KEY)

    assert reconciler.locks._locks == {}
    assert reconciler.locks.queued == set()


async def test_a_live_environment_keeps_its_lock() -> None:
    reconciler = _reconciler({"metadata": {"name": "shop"}})

    await reconciler.reconcile_owner(KEY)

    assert list(reconciler.locks._locks) == [KEY]
