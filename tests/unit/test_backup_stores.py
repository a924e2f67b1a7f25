"""BackupStores: which store fills a Backup, and the keys derived from its keys."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any, cast

import pytest

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.backup import Backup
from dockyard.core.models.references import SecretKeyReference
from dockyard.core.resources import BACKUP_STORES, BACKUPS
from dockyard.core.settings import Settings
from dockyard.operator.runs.context import KeyUnavailable, StorageRefused
from dockyard.operator.runs.s3_access import CredentialsUnavailable, ca_bundle_file
from dockyard.operator.runs.stores import (
    DEFAULT_STORE,
    NoBackupStore,
    derived_key,
    derived_secret_name,
    ensure_default_store,
    ensure_derived_secret,
    fill_from_store,
    filled,
    find_store,
    namespace_keyring,
    store_keyring,
)
from dockyard.runner import EncryptionKey

ROOT = EncryptionKey("root", bytes(range(32)))
OTHER_ROOT = EncryptionKey("other", bytes(range(1, 33)))


UID = "6f1c0b9e-8d1d-4f51-9a52-1b8f3a0d2c11"
LATER_UID = "0b0f4e5a-1c2d-4e3f-8a9b-7c6d5e4f3a2b"


def test_a_derived_key_belongs_to_one_namespace_and_one_store_key() -> None:
    shop = derived_key(ROOT, "shop", UID)

    assert shop == derived_key(ROOT, "shop", UID)  # the same every time: restores re-derive it
    assert len(shop.key) == 32
    assert shop.key != ROOT.key
    assert shop.key != derived_key(ROOT, "shop-2", UID).key
    assert shop.key != derived_key(OTHER_ROOT, "shop", UID).key
    assert re.fullmatch(r"k-[0-9a-f]{16}", shop.key_id)


def test_a_namespace_made_again_under_its_name_gets_other_keys() -> None:
    earlier, later = derived_key(ROOT, "shop", UID), derived_key(ROOT, "shop", LATER_UID)

    assert earlier.key != later.key
    assert earlier.key_id != later.key_id
    assert earlier.key != derived_key(ROOT, "shop", None).key


def test_a_restore_is_offered_the_namespaces_keys_and_those_derived_from_its_name_alone() -> None:
    recorded = derived_key(OTHER_ROOT, "shop", None).key_id
    offered = namespace_keyring([ROOT, OTHER_ROOT], "shop", UID, recorded)

    assert offered == [
        derived_key(ROOT, "shop", UID),
        derived_key(OTHER_ROOT, "shop", UID),
        derived_key(OTHER_ROOT, "shop", None),  # the Backup made before the uid counted
    ]
    assert derived_key(ROOT, "shop", LATER_UID) not in offered


def test_a_key_derived_from_the_name_alone_is_offered_only_to_the_backup_it_made() -> None:
    # A namespace made again under the name: its Backups record keys of its own uid.
    own = derived_key(ROOT, "shop", LATER_UID)

    assert namespace_keyring([ROOT, OTHER_ROOT], "shop", LATER_UID, own.key_id) == [
        own,
        derived_key(OTHER_ROOT, "shop", LATER_UID),
    ]
    assert namespace_keyring([ROOT], "shop", LATER_UID, None) == [own]


def test_the_derived_keys_secret_name_is_a_valid_object_name_naming_the_key() -> None:
    key_id = derived_key(ROOT, "shop", UID).key_id

    assert derived_secret_name("default", key_id) == f"default-{key_id}"
    long = derived_secret_name("s" * 253, key_id)
    assert len(long) <= 253
    assert long.endswith(key_id)


def test_an_unfilled_backup_has_no_storage_to_use_yet() -> None:
    bare = Backup.model_validate(
        {"metadata": {"name": "b", "namespace": "n"}, "spec": {"environmentRef": {"name": "s"}}}
    )

    with pytest.raises(NoBackupStore, match="not been filled"):
        filled(bare)


class _Stores:
    """The apiserver, as far as stores go: BackupStores (listed and by name), Secrets and
    Namespaces by path; a create of an existing name is a 409."""

    def __init__(self, *stores: tuple[str, bool]) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.patched: list[tuple[str, dict[str, Any]]] = []
        for name, default in stores:
            self.objects[f"{STORES}/{name}"] = _store(name, default)

    async def get(self, path: str, params: Any = None) -> dict[str, Any]:
        if path == STORES:
            return {"items": [o for p, o in self.objects.items() if p.startswith(f"{STORES}/")]}
        if path not in self.objects:
            raise KubeError(404, {"reason": "NotFound"})
        return self.objects[path]

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        where = f"{path}/{body['metadata']['name']}"
        if where in self.objects:
            raise KubeError(409, {"reason": "AlreadyExists"})
        self.objects[where] = body
        return body

    async def merge_patch(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.patched.append((path, body))
        return body

    def secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.objects[f"/api/v1/namespaces/{namespace}/secrets/{name}"] = {
            "metadata": {"name": name, "namespace": namespace},
            "data": data,
        }


STORES = BACKUP_STORES.cluster_path()


def _store(name: str, default: bool) -> dict[str, Any]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "BackupStore",
        "metadata": {"name": name},
        "spec": {
            "default": default,
            "storage": {"filesystem": {"path": f"/backups/{name}"}},
            "encryption": {"keySecretRef": {"name": f"{name}-key", "key": "key"}},
        },
    }


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


async def _find(stores: _Stores, name: str | None) -> str:
    store = await find_store(cast(KubeClient, stores), name)
    return str(store.metadata.name)


async def test_the_store_named_wins_over_the_default() -> None:
    stores = _Stores(("fast", False), ("platform", True))

    assert await _find(stores, None) == "platform"
    assert await _find(stores, "fast") == "fast"
    with pytest.raises(NoBackupStore, match="BackupStore slow does not exist"):
        await _find(stores, "slow")


async def test_no_default_and_two_defaults_are_each_said_plainly() -> None:
    with pytest.raises(NoBackupStore, match="no BackupStore is marked default"):
        await _find(_Stores(("fast", False)), None)
    with pytest.raises(NoBackupStore, match=r"more than one .* \(a, b\): mark one"):
        await _find(_Stores(("b", True), ("a", True)), None)


async def test_a_default_being_deleted_gives_way_to_one_still_standing() -> None:
    stores = _Stores(("old", True), ("new", True))
    stores.objects[f"{STORES}/old"]["metadata"]["deletionTimestamp"] = "2026-12-07T08:00:00Z"
    assert await _find(stores, None) == "new"
    # Alone, it is still the default found: filling from it then says it is going.
    del stores.objects[f"{STORES}/new"]
    assert await _find(stores, None) == "old"


async def test_a_planted_secret_holding_another_key_is_refused_not_used() -> None:
    """A tenant who creates the derived key's Secret first, with a key of its own, must
    not have the operator encrypt with it (nor learn the derived key from an error)."""
    kube = _Stores()
    key = derived_key(ROOT, "shop", UID)
    name = derived_secret_name("platform", key.key_id)
    kube.secret("shop", name, {"key": _b64(bytes(range(2, 34)))})

    with pytest.raises(KeyUnavailable, match="holds another key") as refused:
        await ensure_derived_secret(cast(KubeClient, kube), "platform", "shop", key)
    assert _b64(key.key) not in str(refused.value)

    # The very key already there (a second Backup of the namespace) is fine.
    kube.secret("shop", name, {"key": _b64(key.key)})
    assert await ensure_derived_secret(cast(KubeClient, kube), "platform", "shop", key) == name


async def test_a_store_stored_over_the_runners_own_files_fills_no_backup() -> None:
    """A BackupStore saved before the API server refused such a claim path is still read;
    it must not fill a Backup (the runner Job would mount the claim over its own files).
    The Backup waits for the store, saying why, until an administrator moves it."""
    kube = _Stores(("platform", True))
    store = kube.objects[f"{STORES}/platform"]
    store["spec"]["storage"] = {"filesystem": {"path": "/opt/dockyard", "claimName": "pvc"}}
    store["metadata"]["uid"] = "store-uid"
    before = dict(kube.objects)
    backup = Backup.model_validate(
        {"metadata": {"name": "b", "namespace": "shop", "uid": UID},
         "spec": {"environmentRef": {"name": "s"}}}
    )  # fmt: skip

    with pytest.raises(StorageRefused, match=r"BackupStore platform's filesystem path "
                       r"/opt/dockyard: a runner Job mounts claimName") as refused:  # fmt: skip
        await fill_from_store(cast(KubeClient, kube), backup)

    assert refused.value.reason == "StorageRefused"
    assert kube.objects == before  # no derived key Secret
    # The store itself says why it serves no Backup; nothing else is written.
    [(path, body)] = kube.patched
    assert path == f"{STORES}/platform/status"
    [ready] = body["status"]["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "False", "StorageRefused")
    assert ready["message"].startswith("filesystem path /opt/dockyard: a runner Job mounts")


async def test_a_refused_stores_keys_still_serve_but_its_ready_stays_false() -> None:
    """A Backup with storage of its own takes only the key from such a store: that is
    fine, but the store's Ready must not turn True for it and flip back with the next."""
    kube = _Stores(("platform", True))
    store = kube.objects[f"{STORES}/platform"]
    store["spec"]["storage"] = {"filesystem": {"path": "/usr/local", "claimName": "pvc"}}
    store["metadata"]["uid"] = "store-uid"
    kube.secret("dockyard-system", "platform-key", {"key": _b64(ROOT.key)})
    own = Backup.model_validate(
        {"metadata": {"name": "b", "namespace": "shop", "uid": UID},
         "spec": {"environmentRef": {"name": "s"},
                  "storage": {"filesystem": {"path": "/backups/shop"}}}}
    )  # fmt: skip

    kube.objects[BACKUPS.path("shop", "b")] = {"metadata": {"name": "b", "uid": UID}}

    assert await fill_from_store(cast(KubeClient, kube), own) == "platform"

    [(mark_path, mark), (_, status_patch), (_, spec_patch)] = kube.patched
    # Marked first: the store's deletion waits for the Backups it filled.
    assert (mark_path, mark["status"]) == (
        BACKUPS.path("shop", "b", "status"), {"filledFrom": "platform"}
    )  # fmt: skip
    [ready] = status_patch["status"]["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "StorageRefused")
    assert status_patch["status"]["keyIds"] == [status_patch["status"]["currentKeyId"]]
    assert "storage" not in spec_patch["spec"]  # its own storage is kept
    assert spec_patch["spec"]["encryption"]["keySecretRef"]["key"] == "key"


async def test_the_derived_secret_is_created_labelled_with_its_key_id() -> None:
    kube = _Stores()
    key = derived_key(ROOT, "shop", UID)

    name = await ensure_derived_secret(cast(KubeClient, kube), "platform", "shop", key)

    secret = kube.objects[f"/api/v1/namespaces/shop/secrets/{name}"]
    assert base64.b64decode(secret["data"]["key"]) == key.key
    assert secret["metadata"]["labels"]["dockyard.io/key-id"] == key.key_id


async def test_development_makes_a_default_store_only_when_none_is_marked_default() -> None:
    settings = Settings(namespace="dockyard-system", backup_root=Path("/backups"))
    empty = _Stores(("fast", False))

    assert await ensure_default_store(cast(KubeClient, empty), settings) == DEFAULT_STORE
    made = empty.objects[f"{STORES}/{DEFAULT_STORE}"]
    assert made["spec"]["default"] is True
    assert made["spec"]["storage"] == {"filesystem": {"path": "/backups"}}
    secret = empty.objects["/api/v1/namespaces/dockyard-system/secrets/default-backup-store-key"]
    assert len(base64.b64decode(secret["data"]["key"])) == 32
    assert await ensure_default_store(cast(KubeClient, empty), settings) is None  # once

    # Two defaults, or one that is invalid, still mean "a default exists": a third store
    # marked default would only add to the confusion.
    two = _Stores(("a", True), ("b", True))
    broken = _Stores(("c", True))
    del broken.objects[f"{STORES}/c"]["spec"]["storage"]
    for kube in (two, broken):
        before = dict(kube.objects)
        assert await ensure_default_store(cast(KubeClient, kube), settings) is None
        assert kube.objects == before


@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        (None, "does not exist"),
        ({}, "does not exist"),
        ({"ca.crt": "not base64!"}, "is not base64"),
        ({"ca.crt": _b64(b"just text")}, "holds no PEM certificate"),
    ],
)
async def test_an_unusable_ca_bundle_is_refused_naming_the_secret_key(
    data: dict[str, str] | None, refusal: str
) -> None:
    kube = _Stores()
    if data is not None:
        kube.secret("shop", "s3-ca", data)
    ref = SecretKeyReference(name="s3-ca", key="ca.crt")

    with pytest.raises(CredentialsUnavailable, match=refusal) as refused:
        async with ca_bundle_file(cast(KubeClient, kube), "shop", ref):
            pass
    assert "key ca.crt of Secret s3-ca" in str(refused.value)


async def test_a_ca_bundle_lives_in_a_private_file_for_the_run_only() -> None:
    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    kube = _Stores()
    kube.secret("shop", "s3-ca", {"ca.crt": _b64(pem)})
    ref = SecretKeyReference(name="s3-ca", key="ca.crt")

    async with ca_bundle_file(cast(KubeClient, kube), "shop", ref) as path:
        assert path is not None
        assert _file_facts(path) == (pem, 0)  # its directory open to the owner only
    assert _file_facts(path) is None


def _file_facts(path: str) -> tuple[bytes, int] | None:
    """The file's bytes and its directory's group/other mode bits; None when it is gone."""
    file = Path(path)
    if not file.exists():
        return None
    return file.read_bytes(), file.parent.stat().st_mode & 0o077


async def test_a_rotated_out_key_that_is_gone_withdraws_only_itself() -> None:
    kube = _Stores(("platform", True))
    rotated = [{"name": "gone", "key": "key"}, {"name": "old-key", "key": "key"}]
    kube.objects[f"{STORES}/platform"]["spec"]["encryption"]["previousKeySecretRefs"] = rotated
    kube.secret("dockyard-system", "platform-key", {"key": _b64(ROOT.key)})
    kube.secret("dockyard-system", "old-key", {"key": _b64(OTHER_ROOT.key)})
    kube.objects["/api/v1/namespaces/shop"] = {"metadata": {"name": "shop", "uid": UID}}
    backup = Backup.model_validate(
        {"metadata": {"name": "b", "namespace": "shop", "uid": UID},
         "spec": {"environmentRef": {"name": "s"}, "storeRef": {"name": "platform"}}}
    )  # fmt: skip

    offered = await store_keyring(cast(KubeClient, kube), backup)

    # The current key and the readable rotated-out one: "gone" strands only its own.
    expected = [derived_key(ROOT, "shop", UID), derived_key(OTHER_ROOT, "shop", UID)]
    assert [key.key_id for key in offered] == [key.key_id for key in expected]
