"""BackupStores: a first backup in one line, and key rotation (issue 14, part 5).

Each test runs an operator of its own (``own_operator``: a namespace pattern no other
operator watches). BackupStores are cluster-scoped, so this module removes the
``default`` store it makes, and names its other stores uniquely.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dockyard.operator.runs.context import key_id_of
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl, remove_backup_store, wait_for
from tests.integration.test_backup_operator import (
    EXPECTED_ROWS,
    _apply,
    _artifact_path,
    _environment,
    _events,
    _get,
    _key_secret,
    _wait_phase,
    migrated,
)
from tests.integration.test_inline_runner_boundaries import own_operator

# BackupStores are cluster-wide, and a default one is felt by every namespace.
pytestmark = [pytest.mark.usefixtures("crds_installed", "migrated"), pytest.mark.alone]
__all__ = ["migrated", "own_operator"]

ORDERS = EXPECTED_ROWS["public.orders"]


def _store(kubectl: Kubectl, name: str) -> dict[str, Any] | None:
    found = kubectl("get", "backupstore", name, "-o", "json", check=False)
    return json.loads(found.stdout) if found.returncode == 0 else None


@pytest.fixture
def no_default_store(kubectl: Kubectl) -> Iterator[None]:
    """No BackupStore is marked default during the test, nor is ``default`` left after."""
    listing = json.loads(kubectl("get", "backupstores", "-o", "json").stdout)
    for store in listing["items"]:
        if store["spec"].get("default"):
            remove_backup_store(kubectl, store["metadata"]["name"])
    yield
    remove_backup_store(kubectl, "default")


def _one_line_backup(namespace: str, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"environmentRef": {"name": "shop"}},
    }


def _secret_data(kubectl: Kubectl, namespace: str, name: str) -> bytes | None:
    secret = _get(kubectl, namespace, "secret", name)
    return None if secret is None else base64.b64decode(secret["data"]["key"])


def test_a_one_line_backup_completes_with_the_store_a_development_operator_makes(
    kubectl: Kubectl,
    testbed_state: State,
    own_operator: Callable[..., str],
    backup_root: Path,
    no_default_store: None,
) -> None:
    platform = f"dy-platform-{uuid.uuid4().hex[:6]}"
    namespace = own_operator(DOCKYARD_DEFAULT_BACKUP_STORE="true", DOCKYARD_NAMESPACE=platform)
    try:
        store = wait_for(lambda: _store(kubectl, "default"), timeout=30)
        assert isinstance(store, dict)
        assert store["spec"]["default"] is True
        assert store["spec"]["storage"] == {"filesystem": {"path": str(backup_root)}}
        assert store["spec"]["secretNamespace"] == platform
        root_key = _secret_data(kubectl, platform, "default-backup-store-key")
        assert root_key is not None
        assert len(root_key) == 32
        _environment(kubectl, testbed_state, namespace)

        _apply(kubectl, namespace, _one_line_backup(namespace, "first"))
        status = _wait_phase(kubectl, namespace, "first", "Completed", timeout=120)

        # The spec now says where it went and with which key.
        spec = (_get(kubectl, namespace, "backup", "first") or {})["spec"]
        assert spec["storeRef"] == {"name": "default"}
        assert spec["storage"] == {"filesystem": {"path": str(backup_root)}}
        key_secret = spec["encryption"]["keySecretRef"]["name"]
        assert key_secret == f"default-{status['keyId']}"
        # The tenant holds a key derived for its namespace, never the store's own.
        derived = _secret_data(kubectl, namespace, key_secret)
        assert derived is not None
        assert derived != root_key
        assert _get(kubectl, namespace, "secret", "default-backup-store-key") is None
        artifact = _artifact_path(status["location"])
        assert artifact.is_relative_to(backup_root)
        assert hashlib.sha256(artifact.read_bytes()).hexdigest() == status["sha256"]
        assert any("BackupStore default" in m for m in _events(kubectl, namespace, "StoreAssigned"))
        reported = wait_for(
            lambda: ((_store(kubectl, "default") or {}).get("status") or {}).get("currentKeyId"),
            timeout=10,
        )
        assert reported == key_id_of(root_key)

        # A schedule's template may leave storage and key out too; its Backups run in a
        # runner Job here, which mounts the derived key's Secret like any other.
        _apply(
            kubectl,
            namespace,
            {
                "apiVersion": "dockyard.io/v1alpha1",
                "kind": "BackupSchedule",
                "metadata": {"name": "nightly", "annotations": {"dockyard.io/run-now": "1"}},
                "spec": {
                    "environmentRef": {"name": "shop"},
                    "schedule": "0 2 * * *",
                    "template": {"runner": "Job"},
                },
            },
        )

        def scheduled() -> str | None:
            listing = json.loads(kubectl("get", "backups", "-n", namespace, "-o", "json").stdout)
            names = [b["metadata"]["name"] for b in listing["items"]]
            return next((n for n in names if n.startswith("nightly-")), None)

        made = wait_for(scheduled, timeout=60)
        assert isinstance(made, str)
        second = _wait_phase(kubectl, namespace, made, "Completed", timeout=180)
        assert second["keyId"] == status["keyId"]
        assert _get(kubectl, namespace, "job", f"backup-{made}-1") is not None
    finally:
        kubectl("delete", "namespace", platform, "--wait=false", check=False)


def test_a_backup_waits_with_a_condition_while_there_is_no_store(
    kubectl: Kubectl,
    testbed_state: State,
    own_operator: Callable[..., str],
    no_default_store: None,
) -> None:
    namespace = own_operator()
    _environment(kubectl, testbed_state, namespace)

    _apply(kubectl, namespace, _one_line_backup(namespace, "homeless"))

    def waiting() -> dict[str, Any] | None:
        status = (_get(kubectl, namespace, "backup", "homeless") or {}).get("status") or {}
        ready = [c for c in status.get("conditions", ()) if c["type"] == "Ready"]
        return status if ready and ready[0]["reason"] == "NoBackupStore" else None

    status = wait_for(waiting, timeout=30)
    assert isinstance(status, dict)
    assert status["phase"] == "Pending"
    assert "no BackupStore is marked default" in status["message"]
    assert status.get("attempts", 0) == 0


def _drill(namespace: str, name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "RestoreDrill",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {"dockyard.io/run-now": "1"},
        },
        "spec": {
            "environmentRef": {"name": "shop"},
            "schedule": "@yearly",
            "checks": {
                "sql": [
                    {
                        "name": "orders",
                        "query": "SELECT count(*) FROM orders",
                        "expect": str(ORDERS),
                    }
                ]
            },
            **spec,
        },
    }


def drilled(
    kubectl: Kubectl, namespace: str, name: str, timeout: float = 120, **spec: Any
) -> dict[str, Any]:
    """Run a drill of ``shop`` (its latest completed backup, orders counted) now; its run."""
    _apply(kubectl, namespace, _drill(namespace, name, **spec))

    def ran() -> dict[str, Any] | None:
        drill = _get(kubectl, namespace, "restoredrill", name) or {}
        return ((drill.get("status") or {}).get("lastRun")) or None

    run = wait_for(ran, timeout=timeout)
    assert isinstance(run, dict)
    return run


@contextmanager
def _filesystem_store(
    kubectl: Kubectl, backup_root: Path, *keys: str, **spec: Any
) -> Iterator[str]:
    """A BackupStore under ``backup_root`` whose current key is the first of ``keys``
    (Secrets made in a namespace of its own); yields its name, and removes it after."""
    store, where = f"store-{uuid.uuid4().hex[:6]}", f"dy-keys-{uuid.uuid4().hex[:6]}"
    kubectl("create", "namespace", where)
    try:
        for key in keys:
            _key_secret(kubectl, where, key)
        manifest = {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "BackupStore",
            "metadata": {"name": store},
            "spec": {
                "storage": {"filesystem": {"path": str(backup_root / store)}},
                "encryption": {"keySecretRef": {"name": keys[0], "key": "key"}},
                "secretNamespace": where,
                **spec,
            },
        }
        kubectl("apply", "-f", "-", input=json.dumps(manifest))
        yield store
    finally:
        remove_backup_store(kubectl, store)
        kubectl("delete", "namespace", where, "--wait=false", check=False)


def test_rotating_a_stores_key_keeps_older_artifacts_restorable_by_key_id(
    kubectl: Kubectl,
    testbed_state: State,
    own_operator: Callable[..., str],
    backup_root: Path,
) -> None:
    namespace = own_operator()
    with _filesystem_store(kubectl, backup_root, "key-a", "key-b") as store:
        _environment(kubectl, testbed_state, namespace)

        def backup(name: str) -> dict[str, Any]:
            spec = {"environmentRef": {"name": "shop"}, "storeRef": {"name": store}}
            body = {**_one_line_backup(namespace, name), "spec": spec}
            _apply(kubectl, namespace, body)
            return _wait_phase(kubectl, namespace, name, "Completed", timeout=120)

        old = backup("before")
        # Rotate: key-b is current, key-a only opens what it encrypted.
        rotated = {
            "keySecretRef": {"name": "key-b", "key": "key"},
            "previousKeySecretRefs": [{"name": "key-a", "key": "key"}],
        }
        kubectl(
            "patch",
            "backupstore",
            store,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"encryption": rotated}}),
        )
        new = backup("after")
        assert new["keyId"] != old["keyId"]
        assert _get(kubectl, namespace, "secret", f"{store}-{new['keyId']}") is not None

        def key_ids() -> list[str] | None:
            ids = ((_store(kubectl, store) or {}).get("status") or {}).get("keyIds") or []
            return ids if len(ids) == 2 else None

        # The store's status lists both keys (the ids of its own keys, not the derived ones).
        assert isinstance(wait_for(key_ids, timeout=10), list)

        # The newest backup is restored with the new key.
        assert drilled(kubectl, namespace, "drill-new")["result"] == "Passed"
        # The old one, once its own derived Secret is gone, with the store's rotated-out key.
        kubectl("delete", "backup", "after", "-n", namespace)
        kubectl("delete", "secret", f"{store}-{old['keyId']}", "-n", namespace)
        run = drilled(kubectl, namespace, "drill-old")
        assert (run["backup"], run["result"]) == ("before", "Passed")
        # A runner Job may read no store key: the operator derives that key into the
        # namespace again, and the Job mounts it.
        run = drilled(kubectl, namespace, "drill-old-job", timeout=180, runner="Job")
        assert (run["backup"], run["result"]) == ("before", "Passed")
        again = _secret_data(kubectl, namespace, f"{store}-{old['keyId']}")
        assert again is not None
        assert key_id_of(again) == old["keyId"]

        # With that Secret gone again, only the store's rotated-out key opens the artifact.
        kubectl("delete", "secret", f"{store}-{old['keyId']}", "-n", namespace)

        # Dropping the old key from the store strands that artifact: refused by key id.
        kubectl(
            "patch",
            "backupstore",
            store,
            "--type=json",
            "-p",
            json.dumps([{"op": "remove", "path": "/spec/encryption/previousKeySecretRefs"}]),
        )
        stranded = drilled(kubectl, namespace, "drill-stranded")
        assert stranded["result"] != "Passed"
        assert old["keyId"] in json.dumps(stranded)


def _condition(kubectl: Kubectl, store: str, kind: str) -> dict[str, Any] | None:
    conditions = ((_store(kubectl, store) or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c["type"] == kind), None)


def test_a_store_named_by_backups_is_deleted_only_after_them(
    kubectl: Kubectl,
    testbed_state: State,
    own_operator: Callable[..., str],
    backup_root: Path,
) -> None:
    namespace = own_operator(DOCKYARD_BACKUP_STORE_GUARD="true")
    with _filesystem_store(kubectl, backup_root, "store-key") as store:
        _environment(kubectl, testbed_state, namespace)
        spec = {"environmentRef": {"name": "shop"}, "storeRef": {"name": store}}
        _apply(kubectl, namespace, {**_one_line_backup(namespace, "kept"), "spec": spec})
        status = _wait_phase(kubectl, namespace, "kept", "Completed", timeout=120)
        assert status["filledFrom"] == store  # the fill's mark, which holds the store
        artifact = _artifact_path(status["location"])

        # A restore in place backs shop up first, where "kept" is and with its key: that
        # safety Backup carries the store's mark too, and holds the store as "kept" does.
        restore = {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Restore",
            "metadata": {"name": "undo"},
            "spec": {
                "source": {"backupRef": {"name": "kept"}},
                "target": {"environmentRef": {"name": "shop"}},
            },
        }
        _apply(kubectl, namespace, restore)
        _wait_phase(kubectl, namespace, "undo-safety", "Completed", timeout=120)

        def restored() -> bool | None:
            found = _get(kubectl, namespace, "restore", "undo") or {}
            phase = (found.get("status") or {}).get("phase")
            assert phase != "Failed", found.get("status")
            return phase == "Completed" or None

        assert wait_for(restored, timeout=120)
        safety = (_get(kubectl, namespace, "backup", "undo-safety") or {})["status"]
        assert safety["filledFrom"] == store

        def guarded() -> bool | None:
            meta = (_store(kubectl, store) or {}).get("metadata") or {}
            return "dockyard.io/operator" in (meta.get("finalizers") or []) or None

        assert wait_for(guarded, timeout=30)
        kubectl("delete", "backupstore", store, "--wait=false")

        blocked = wait_for(lambda: _condition(kubectl, store, "DeletionBlocked"), timeout=30)
        assert isinstance(blocked, dict)
        assert (blocked["status"], blocked["reason"]) == ("True", "InUse")
        using = f"{namespace}/kept, {namespace}/undo-safety"
        assert f"2 Backup(s) that name this store: {using}" in blocked["message"]
        held = _store(kubectl, store)
        assert held is not None
        assert held["metadata"].get("deletionTimestamp")
        assert artifact.exists()

        # While it waits, it fills no new Backup.
        _apply(kubectl, namespace, {**_one_line_backup(namespace, "late"), "spec": spec})

        def refused() -> dict[str, Any] | None:
            late = (_get(kubectl, namespace, "backup", "late") or {}).get("status") or {}
            ready = [c for c in late.get("conditions", ()) if c["type"] == "Ready"]
            return late if ready and ready[0]["reason"] == "NoBackupStore" else None

        late = wait_for(refused, timeout=30)
        assert isinstance(late, dict)
        assert f"BackupStore {store} is being deleted" in late["message"]
        assert "storage" not in ((_get(kubectl, namespace, "backup", "late") or {})["spec"])

        # Once the Backups are gone (the kept one's finalizer deleted its artifact through
        # the store), the store goes too, within the 30 s between checks.
        kubectl("delete", "restore", "undo", "-n", namespace, "--timeout=60s")
        kubectl(
            "delete", "backup", "kept", "late", "undo-safety", "-n", namespace, "--timeout=60s"
        )  # fmt: skip
        assert not artifact.exists()
        assert wait_for(lambda: _store(kubectl, store) is None or None, timeout=60)


def test_a_store_serves_only_the_namespaces_its_selector_picks(
    kubectl: Kubectl,
    testbed_state: State,
    own_operator: Callable[..., str],
    backup_root: Path,
) -> None:
    namespace = own_operator()
    label, tier = "test.dockyard.io/tier", f"gold-{uuid.uuid4().hex[:6]}"
    selector = {"matchExpressions": [{"key": label, "operator": "In", "values": [tier]}]}
    with _filesystem_store(kubectl, backup_root, "store-key", namespaceSelector=selector) as store:
        _environment(kubectl, testbed_state, namespace)
        spec = {"environmentRef": {"name": "shop"}, "storeRef": {"name": store}}
        _apply(kubectl, namespace, {**_one_line_backup(namespace, "gold"), "spec": spec})

        def refused() -> dict[str, Any] | None:
            status = (_get(kubectl, namespace, "backup", "gold") or {}).get("status") or {}
            ready = [c for c in status.get("conditions", ()) if c["type"] == "Ready"]
            return status if ready and ready[0]["reason"] == "StoreNotAllowed" else None

        status = wait_for(refused, timeout=30)
        assert isinstance(status, dict)
        assert status["phase"] == "Pending"
        assert status.get("attempts", 0) == 0
        assert f"BackupStore {store} does not serve namespace {namespace}" in status["message"]
        assert f"{label} in ({tier})" in status["message"]
        # Nothing was filled, and no key was derived for the namespace.
        kept = (_get(kubectl, namespace, "backup", "gold") or {})["spec"]
        assert "storage" not in kept
        assert "encryption" not in kept
        derived = kubectl(
            "get", "secrets", "-n", namespace, "-l", f"dockyard.io/backup-store={store}", "-o",
            "name",
        )  # fmt: skip
        assert derived.stdout.strip() == ""
        assert any(store in m for m in _events(kubectl, namespace, "StoreNotAllowed"))

        # An administrator labels the namespace: the waiting Backup goes on by itself.
        kubectl("label", "namespace", namespace, f"{label}={tier}")
        done = _wait_phase(kubectl, namespace, "gold", "Completed", timeout=120)
        assert _artifact_path(done["location"]).is_relative_to(backup_root / store)
        filled = (_get(kubectl, namespace, "backup", "gold") or {})["spec"]
        assert filled["encryption"]["keySecretRef"]["name"] == f"{store}-{done['keyId']}"
