"""A namespace's quota on the shared backups volume: what it keeps (the catalog's word)
and what its runs are writing count together, and a write past it leaves nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.operator.runs.catalog import Catalog
from dockyard.operator.runs.quota import NamespaceQuotas
from dockyard.runner.errors import StorageQuotaExceeded
from dockyard.runner.filesystem import FilesystemStore


class _Stored(Catalog):
    """The catalog's answer, fixed: this namespace keeps ``kept`` bytes under the root."""

    def __init__(self, kept: dict[str, int]) -> None:
        self.kept = kept
        self.asked: list[tuple[str, str]] = []

    async def stored_bytes(self, namespace: str, under: str) -> int:
        self.asked.append((namespace, under))
        return self.kept.get(namespace, 0)


async def _write(store: FilesystemStore, sizes: list[int]) -> None:
    async with store.create("team-a/big.dkbk") as writer:
        for size in sizes:
            await writer.write(b"x" * size)
        await writer.commit()


async def test_a_write_past_the_quota_fails_and_leaves_no_partial(tmp_path: Path) -> None:
    catalog = _Stored({"team-a": 600})
    quotas = NamespaceQuotas(1000, catalog, tmp_path)
    async with quotas.writing("team-a") as quota:
        store = FilesystemStore(tmp_path / "a", quota=quota)
        # 600 kept and 300 + 100 written fit exactly; one more byte does not.
        with pytest.raises(StorageQuotaExceeded, match="namespace team-a would keep 1001 bytes"):
            await _write(store, [300, 100, 1])
    assert catalog.asked == [("team-a", tmp_path.resolve().as_uri() + "/")]  # noqa: ASYNC240
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # noqa: ASYNC240


async def test_runs_of_one_namespace_share_its_quota_and_others_do_not(tmp_path: Path) -> None:
    quotas = NamespaceQuotas(1000, _Stored({}), tmp_path)
    async with (
        quotas.writing("team-a") as first,
        quotas.writing("team-a") as second,
        quotas.writing("team-b") as elsewhere,
    ):
        first.charge(700)
        elsewhere.charge(1000)  # another namespace's runs are not counted
        with pytest.raises(StorageQuotaExceeded):
            second.charge(301)
        second.charge(300)
    async with quotas.writing("team-a") as later:  # the runs ended: nothing in flight
        later.charge(1000)
