"""Which Backups hold a BackupStore's deletion, read from the apiserver a page at a time.

The guard itself, with its operator, is in ``test_backup_stores.py``; this reads what it
reads: Backups of every namespace, in pages (``apply.paged``): those the store filled
(``status.filledFrom``), and those filled before that mark existed, in namespaces the
store serves. A Backup made to look filled does not pin a store that does not serve it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from dockyard.core.kube import KubeClient, load_config
from dockyard.core.models.backup_store import BackupStore
from dockyard.core.resources import BACKUPS
from dockyard.operator.apply import paged
from dockyard.operator.runs.store_deletion import users
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl

pytestmark = pytest.mark.usefixtures("crds_installed")


def _store(name: str, selector: dict[str, str] | None = None) -> BackupStore:
    spec: dict[str, Any] = {
        "storage": {"filesystem": {"path": "/var/lib/dockyard/backups"}},
        "encryption": {"keySecretRef": {"name": "store-key", "key": "key"}},
    }
    if selector is not None:
        spec["namespaceSelector"] = {"matchLabels": selector}
    return BackupStore.model_validate({"metadata": {"name": name}, "spec": spec})


def _backup(namespace: str, name: str, store: str | None, *, filled: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"environmentRef": {"name": "shop"}}
    if store is not None:
        spec["storeRef"] = {"name": store}
    if filled:
        spec["storage"] = {"filesystem": {"path": "/var/lib/dockyard/backups"}}
        spec["encryption"] = {"keySecretRef": {"name": "backup-key", "key": "key"}}
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
            assert await users(kube, _store(store)) == sorted(
                [
                    f"{unwatched_namespace}/b0",
                    f"{unwatched_namespace}/b2",
                    f"{unwatched_namespace}/b4",
                    f"{second}/b9",
                ]
            )
            assert await users(kube, _store(f"store-{uuid.uuid4().hex[:6]}")) == []
        finally:
            await kube.close()
    finally:
        kubectl("delete", "namespace", second, "--wait=false", check=False)


async def test_only_the_stores_mark_holds_it_where_the_store_does_not_serve(
    kubectl: Kubectl, testbed_state: State, unwatched_namespace: str
) -> None:
    """The store serves the labelled namespace only. Outside it, a Backup that names the
    store and has storage, as a filled one would, holds nothing without the mark the
    fill writes to its status (which tenants cannot write); with it, it holds the store
    even once the store serves its namespace no more."""
    run = uuid.uuid4().hex[:6]
    store, other = f"store-{run}", f"store-o{run}"
    served = f"unwatched-{uuid.uuid4().hex[:8]}"
    kubectl("create", "namespace", served)
    kubectl("label", "namespace", served, f"dockyard-test/served={run}")
    outside = unwatched_namespace
    try:
        for namespace, name in [
            (served, "legacy"), (outside, "crafted"), (outside, "filled"), (outside, "elsewhere"),
        ]:  # fmt: skip
            kubectl("create", "-f", "-", input=json.dumps(_backup(namespace, name, store)))
        # Marked, but its fill failed after the mark: it never ran, and holds nothing.
        unfilled = _backup(served, "marked-only", store, filled=False)
        kubectl("create", "-f", "-", input=json.dumps(unfilled))
        for name, filled_from in [("filled", store), ("elsewhere", other)]:
            kubectl(
                "patch", "backup", name, "-n", outside, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"filledFrom": filled_from}}),
            )  # fmt: skip
        kubectl(
            "patch", "backup", "marked-only", "-n", served, "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": {"filledFrom": store}}),
        )  # fmt: skip

        kube = KubeClient.connect(load_config(Path(testbed_state.kubeconfig), {}))
        try:
            held = await users(kube, _store(store, {"dockyard-test/served": run}))
            assert held == sorted([f"{outside}/filled", f"{served}/legacy"])
            # A store that serves every namespace: the crafted one is taken for one filled
            # before the mark existed (it could have been filled), the other store's not.
            everywhere = await users(kube, _store(store))
            assert everywhere == sorted(
                [f"{outside}/crafted", f"{outside}/filled", f"{served}/legacy"]
            )
        finally:
            await kube.close()
    finally:
        kubectl("delete", "namespace", served, "--wait=false", check=False)
