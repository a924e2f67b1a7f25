"""BackupStores: which store fills a Backup, and the keys derived from its keys."""

from __future__ import annotations

import re
from typing import Any, cast

import pytest

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.backup import Backup
from dockyard.operator.runs.stores import (
    NoBackupStore,
    derived_key,
    derived_secret_name,
    filled,
    find_store,
)
from dockyard.runner import EncryptionKey

ROOT = EncryptionKey("root", bytes(range(32)))
OTHER_ROOT = EncryptionKey("other", bytes(range(1, 33)))


def test_a_derived_key_belongs_to_one_namespace_and_one_store_key() -> None:
    shop = derived_key(ROOT, "shop")

    assert shop == derived_key(ROOT, "shop")  # the same every time: restores re-derive it
    assert len(shop.key) == 32
    assert shop.key != ROOT.key
    assert shop.key != derived_key(ROOT, "shop-2").key
    assert shop.key != derived_key(OTHER_ROOT, "shop").key
    assert re.fullmatch(r"k-[0-9a-f]{16}", shop.key_id)


def test_the_derived_keys_secret_name_is_a_valid_object_name_naming_the_key() -> None:
    key_id = derived_key(ROOT, "shop").key_id

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
    """The apiserver's BackupStores, as a list and by name."""

    def __init__(self, *stores: tuple[str, bool]) -> None:
        self.stores = {
            name: {
                "apiVersion": "dockyard.io/v1alpha1",
                "kind": "BackupStore",
                "metadata": {"name": name},
                "spec": {
                    "default": default,
                    "storage": {"filesystem": {"path": f"/backups/{name}"}},
                    "encryption": {"keySecretRef": {"name": f"{name}-key", "key": "key"}},
                },
            }
            for name, default in stores
        }

    async def get(self, path: str, params: Any = None) -> dict[str, Any]:
        name = path.rsplit("/", 1)[1]
        if name == "backupstores":
            return {"items": list(self.stores.values())}
        if name not in self.stores:
            raise KubeError(404, {"reason": "NotFound"})
        return self.stores[name]


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
