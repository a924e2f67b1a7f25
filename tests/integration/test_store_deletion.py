"""Which Backups hold a BackupStore's deletion, read from the apiserver a page at a time.

The guard itself, with its operator, is in ``test_backup_stores.py``; this reads what it
reads: Backups of every namespace, in pages (``apply.paged``), filtered by ``storeRef``.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from dockyard.core.kube import KubeClient, load_config
from dockyard.core.resources import BACKUPS
from dockyard.operator.apply import paged
from dockyard.operator.runs.store_deletion import users
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl

pytestmark = pytest.mark.usefixtures("crds_installed")


def _backup(namespace: str, name: str, store: str | None, *, filled: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"environmentRef": {"name": "shop"}}
    if store is not None:
        spec["storeRef"] = {"name": store}
    if filled:
        spec["storage"] = {"filesystem": {"path": "/var/lib/dockyard/backups"}}
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


async def test_the_backups_naming_a_store_are_found_across_namespaces_page_by_page(
    kubectl: Kubectl, testbed_state: State, unwatched_namespace: str
) -> None:
    store, other = f"store-{uuid.uuid4().hex[:6]}", f"store-{uuid.uuid4().hex[:6]}"
    second = f"unwatched-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", second)
    try:
        made = [
            _backup(unwatched_namespace, f"b{n}", store if n % 2 == 0 else other) for n in range(5)
        ] + [
            _backup(second, "b9", store),
            _backup(second, "none", None),
            # Names the store but was never filled: it stored nothing there.
            _backup(second, "unfilled", store, filled=False),
        ]
        for body in made:
            kubectl("create", "-f", "-", input=json.dumps(body))

        kube = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
        try:
            # Five Backups in pages of two: three pages, every one of them once.
            names = [raw["metadata"]["name"] async for raw in paged(
                kube, BACKUPS, unwatched_namespace, limit=2
            )]  # fmt: skip
            assert sorted(names) == ["b0", "b1", "b2", "b3", "b4"]
            # Across every namespace, only those filled from the store, sorted.
            assert await users(kube, store) == sorted(
                [
                    f"{unwatched_namespace}/b0",
                    f"{unwatched_namespace}/b2",
                    f"{unwatched_namespace}/b4",
                    f"{second}/b9",
                ]
            )
            assert await users(kube, f"store-{uuid.uuid4().hex[:6]}") == []
        finally:
            await kube.close()
    finally:
        kubectl("delete", "namespace", second, "--wait=false", check=False)
