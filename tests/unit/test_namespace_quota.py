"""A namespace's quota on the shared backups volume: what it keeps (the catalog's word)
and what its runs are writing count together, and a write past it leaves nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from dockyard.operator.runs.catalog import Catalog
from dockyard.operator.runs.quota import NamespaceQuotas
from dockyard.runner.errors import StorageError, StorageQuotaExceeded
from dockyard.runner.filesystem import FilesystemStore


class _Stored(Catalog):
    """The catalog's answer, as the test sets it: what each namespace keeps under the root."""

    def __init__(self, kept: dict[str, int]) -> None:
        self.kept = kept
        self.down = False
        self.asked: list[tuple[str, str]] = []

    async def stored_bytes(self, namespace: str, under: str) -> int:
        self.asked.append((namespace, under))
        if self.down:
            raise asyncpg.CannotConnectNowError("the database system is starting up")
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
    catalog = _Stored({})
    quotas = NamespaceQuotas(1000, catalog, tmp_path)
    async with quotas.writing("team-a") as first, quotas.writing("team-b") as elsewhere:
        async with quotas.writing("team-a") as second:
            first.charge(300)
            elsewhere.charge(1000)  # another namespace's runs are not counted
            second.charge(400)
            catalog.kept["team-a"] = 400  # the second's artifact, now catalogued
        # The ended run is counted as the catalog has it, not twice.
        with pytest.raises(StorageQuotaExceeded):
            first.charge(301)
        first.charge(300)
    async with quotas.writing("team-a") as later:  # nothing in flight: the catalog's word
        later.charge(600)


async def test_a_quota_that_cannot_be_checked_fails_the_run_retryably(tmp_path: Path) -> None:
    catalog = _Stored({"team-a": 100})
    quotas = NamespaceQuotas(1000, catalog, tmp_path)
    catalog.down = True
    with pytest.raises(StorageError, match="cannot be checked") as refused:
        async with quotas.writing("team-a"):
            pass
    assert not isinstance(refused.value, StorageQuotaExceeded)
    catalog.down = False
    async with quotas.writing("team-a") as first:
        async with quotas.writing("team-a") as second:
            second.charge(500)
            catalog.down = True  # the second's row is not written: it stays counted
        with pytest.raises(StorageQuotaExceeded):
            first.charge(401)


class _Slow(_Stored):
    """A catalog whose reads wait until the test lets them go."""

    def __init__(self) -> None:
        super().__init__({})
        self.gate = asyncio.Event()
        self.reading = asyncio.Event()

    async def stored_bytes(self, namespace: str, under: str) -> int:
        if self.gate.is_set():
            return await super().stored_bytes(namespace, under)
        self.reading.set()
        await self.gate.wait()
        if self.down:
            raise asyncpg.CannotConnectNowError("the database system is starting up")
        return 0


@pytest.mark.parametrize("down", [False, True])
async def test_the_last_run_ending_while_another_reads_leaves_nothing_behind(
    tmp_path: Path, down: bool
) -> None:
    """Run A ends while B still writes, and reads the catalog again; B ends during that
    read. A's read must neither bring the namespace's count back (kept for ever) nor,
    when the catalog fails, add to a count that is gone (a KeyError)."""
    catalog = _Slow()
    catalog.gate.set()
    quotas = NamespaceQuotas(1000, catalog, tmp_path)
    first, second = quotas.writing("team-a"), quotas.writing("team-a")
    await first.__aenter__()
    await second.__aenter__()
    catalog.gate.clear()
    catalog.down = down
    ending = asyncio.create_task(first.__aexit__(None, None, None))
    await catalog.reading.wait()
    await second.__aexit__(None, None, None)  # the last run: the namespace is forgotten

    catalog.gate.set()
    await ending

    assert quotas._stored == {}
    assert quotas._writing == {}


async def test_a_read_overtaken_by_a_newer_run_does_not_undercount_it(tmp_path: Path) -> None:
    """Run A ends while B writes and reads the catalog again; B catalogues its artifact
    and ends; run C starts and reads the catalog with B's artifact. A's read, older,
    answers last: it must not replace C's count, or C could write past the quota by the
    size of B's artifact."""
    catalog = _Slow()
    catalog.gate.set()
    quotas = NamespaceQuotas(1000, catalog, tmp_path)
    first, second = quotas.writing("team-a"), quotas.writing("team-a")
    await first.__aenter__()
    await second.__aenter__()
    catalog.gate.clear()
    ending = asyncio.create_task(first.__aexit__(None, None, None))  # reads, held back
    await catalog.reading.wait()
    await second.__aexit__(None, None, None)
    catalog.kept["team-a"] = 700  # B's artifact, catalogued
    catalog.gate.set()  # C's read answers at once; A's is released with it
    async with quotas.writing("team-a") as third:
        await ending
        with pytest.raises(StorageQuotaExceeded):
            third.charge(301)
        third.charge(300)
