"""A namespace's quota on the shared backups volume: what it keeps (the catalog's word)
and what its runs are writing count together, and a write past it leaves nothing."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dockyard.operator.runs.catalog import Catalog
from dockyard.operator.runs.quota import NamespaceQuotas
from dockyard.runner import filesystem
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
        assert quota.written == 0  # the removed partial no longer counts
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


class _Held(_Stored):
    """A catalog whose reads answer only when the test lets each go: with what the
    catalog held when the read started, as a query sees what was committed before it."""

    def __init__(self, kept: dict[str, int] | None = None) -> None:
        super().__init__(kept or {})
        self.holding = False
        self.reads: list[asyncio.Future[int]] = []
        self.handed = 0
        self.started = asyncio.Event()

    async def stored_bytes(self, namespace: str, under: str) -> int:
        if not self.holding:
            return await super().stored_bytes(namespace, under)
        seen, down = self.kept.get(namespace, 0), self.down
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.reads.append(answer)
        self.started.set()
        await answer
        if down:
            raise asyncpg.CannotConnectNowError("the database system is starting up")
        return seen

    async def next_read(self) -> asyncio.Future[int]:
        """The reads in the order they started, each once it has (a read that never
        starts fails the test in 5 s rather than hanging it)."""
        async with asyncio.timeout(5):
            while len(self.reads) == self.handed:
                self.started.clear()
                await self.started.wait()
        self.handed += 1
        return self.reads[self.handed - 1]


@pytest.fixture
async def catalog() -> AsyncIterator[_Held]:
    """A held catalog that lets every read go when the test ends, passed or failed, so
    that no run is left waiting when the loop closes."""
    held = _Held()
    yield held
    held.holding = False
    for read in held.reads:
        if not read.done():
            read.set_result(0)


async def _enter(quotas: NamespaceQuotas, namespace: str) -> tuple[Any, Any]:
    run = quotas.writing(namespace)
    return run, await run.__aenter__()


@pytest.mark.parametrize("down", [False, True])
async def test_the_last_run_ending_while_another_reads_leaves_nothing_behind(
    tmp_path: Path, catalog: _Held, down: bool
) -> None:
    """Run A ends while B still writes, and reads the catalog again; B ends during that
    read. A's read must neither bring the namespace's count back (kept for ever) nor,
    when the catalog fails, add to a count that is gone (a KeyError)."""
    quotas = NamespaceQuotas(1000, catalog, tmp_path)
    first, written = await _enter(quotas, "team-a")
    second, _ = await _enter(quotas, "team-a")
    written.charge(100)
    catalog.holding, catalog.down = True, down
    ending = asyncio.create_task(first.__aexit__(None, None, None))
    read = await catalog.next_read()
    await second.__aexit__(None, None, None)  # A is ending too: no run needs a count

    read.set_result(0)
    await ending

    assert quotas._stored == {}
    assert quotas._writing == {}


async def test_a_read_overtaken_by_a_newer_one_does_not_undercount(
    tmp_path: Path, catalog: _Held
) -> None:
    """Run A ends while B writes and reads the catalog again; B catalogues its artifact
    and ends, reading after it; run C starts. A's read, older, answers last: it must not
    replace the newer count, or C could write past the quota by B's artifact."""
    quotas = NamespaceQuotas(1000, catalog, tmp_path)
    first, earlier = await _enter(quotas, "team-a")
    second, written = await _enter(quotas, "team-a")
    earlier.charge(100)  # a failed run: its partial file is gone
    written.charge(700)
    catalog.holding = True
    ending_first = asyncio.create_task(first.__aexit__(None, None, None))
    older = await catalog.next_read()
    catalog.kept["team-a"] = 700  # B's artifact, catalogued
    third = asyncio.create_task(_enter(quotas, "team-a"))
    newer = await catalog.next_read()
    newer.set_result(0)
    run, charges = await third
    ending_second = asyncio.create_task(second.__aexit__(None, None, None))
    older.set_result(0)
    await ending_first
    (await catalog.next_read()).set_result(0)  # B's own read, after its artifact: 700
    await ending_second

    with pytest.raises(StorageQuotaExceeded):
        charges.charge(301)
    charges.charge(300)
    catalog.holding = False
    await run.__aexit__(None, None, None)
    assert quotas._writing == {}


async def test_a_run_ending_during_a_new_runs_first_read_is_read_again(
    tmp_path: Path, catalog: _Held
) -> None:
    """A is the namespace's only run. B's first read starts before A's artifact is
    catalogued; A then ends. B must count A's artifact all the same."""
    quotas = NamespaceQuotas(1000, catalog, tmp_path)
    first, written = await _enter(quotas, "team-a")
    written.charge(400)
    catalog.holding = True
    second = asyncio.create_task(_enter(quotas, "team-a"))
    stale = await catalog.next_read()  # before A's row: 0
    catalog.kept["team-a"] = 400
    ending = asyncio.create_task(first.__aexit__(None, None, None))
    (await catalog.next_read()).set_result(0)  # A's read again, after its row: 400
    await ending
    stale.set_result(0)
    run, charges = await second

    with pytest.raises(StorageQuotaExceeded, match="would keep 1001 bytes"):
        charges.charge(601)
    catalog.holding = False
    await run.__aexit__(None, None, None)


async def test_an_ending_runs_bytes_count_while_its_read_is_out(
    tmp_path: Path, catalog: _Held
) -> None:
    quotas = NamespaceQuotas(1000, catalog, tmp_path)
    first, written = await _enter(quotas, "team-a")
    run, other = await _enter(quotas, "team-a")
    written.charge(300)
    catalog.holding = True
    ending = asyncio.create_task(first.__aexit__(None, None, None))
    read = await catalog.next_read()

    with pytest.raises(StorageQuotaExceeded, match="would keep 1001 bytes"):
        other.charge(701)  # A's 300 bytes are neither catalogued nor forgotten yet
    catalog.kept["team-a"] = 300
    read.set_result(0)
    await ending
    other.charge(700)
    catalog.holding = False
    await run.__aexit__(None, None, None)


async def test_a_failed_read_again_is_not_undone_by_an_older_read(
    tmp_path: Path, catalog: _Held
) -> None:
    """A ends while C's first read (started before A's row) is out; A's own read fails,
    so A's bytes stay counted. C's older read, answering after, must not drop them."""
    quotas = NamespaceQuotas(1000, catalog, tmp_path)
    first, written = await _enter(quotas, "team-a")
    second, other = await _enter(quotas, "team-a")
    written.charge(500)
    catalog.holding = True
    third = asyncio.create_task(_enter(quotas, "team-a"))
    older = await catalog.next_read()
    catalog.down = True  # A's row is not written, and its read fails
    ending = asyncio.create_task(first.__aexit__(None, None, None))
    (await catalog.next_read()).set_result(0)
    await ending
    catalog.down = False
    older.set_result(0)
    run, charges = await third

    with pytest.raises(StorageQuotaExceeded):
        charges.charge(501)
    other.charge(250)
    charges.charge(250)
    catalog.holding = False
    for ending_run in (second, run):
        await ending_run.__aexit__(None, None, None)
    assert quotas._writing == {}


async def test_failed_reads_answering_in_reverse_order_keep_both_runs_counted(
    tmp_path: Path, catalog: _Held
) -> None:
    """A and B end while C writes, the database down: both reads fail, B's first. Each
    run's bytes stay counted; neither failure may pass for a read that has the other's."""
    quotas = NamespaceQuotas(1000, catalog, tmp_path)
    first, a = await _enter(quotas, "team-a")
    second, b = await _enter(quotas, "team-a")
    third, c = await _enter(quotas, "team-a")
    a.charge(300)
    b.charge(300)
    catalog.holding, catalog.down = True, True
    ending_a = asyncio.create_task(first.__aexit__(None, None, None))
    read_a = await catalog.next_read()
    ending_b = asyncio.create_task(second.__aexit__(None, None, None))
    read_b = await catalog.next_read()
    read_b.set_result(0)
    await ending_b
    read_a.set_result(0)
    await ending_a

    with pytest.raises(StorageQuotaExceeded, match="would keep 1001 bytes"):
        c.charge(401)
    c.charge(400)
    catalog.holding, catalog.down = False, False
    await third.__aexit__(None, None, None)
    assert (quotas._writing, quotas._carried) == ({}, {})


async def test_a_pass_cancelled_during_its_read_again_keeps_the_run_counted(
    tmp_path: Path, catalog: _Held
) -> None:
    """The run's deadline (or a Replace) cancels the pass again while it reads: the run
    must still leave the runs, and what it wrote stay counted for the others."""
    quotas = NamespaceQuotas(1000, catalog, tmp_path)
    first, written = await _enter(quotas, "team-a")
    second, other = await _enter(quotas, "team-a")
    written.charge(600)
    catalog.holding = True
    ending = asyncio.create_task(first.__aexit__(None, None, None))
    await catalog.next_read()
    ending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await ending

    assert written not in quotas._writing["team-a"]
    with pytest.raises(StorageQuotaExceeded, match="would keep 1001 bytes"):
        other.charge(401)
    catalog.holding = False
    await second.__aexit__(None, None, None)
    assert (quotas._writing, quotas._carried) == ({}, {})


async def test_a_new_runs_failed_first_read_does_not_drop_what_an_ended_run_carries(
    tmp_path: Path, catalog: _Held
) -> None:
    quotas = NamespaceQuotas(1000, catalog, tmp_path)
    first, written = await _enter(quotas, "team-a")
    second, other = await _enter(quotas, "team-a")
    written.charge(500)
    catalog.down = True
    await first.__aexit__(None, None, None)  # its read again fails: 500 carried
    with pytest.raises(StorageError, match="cannot be checked"):
        await _enter(quotas, "team-a")  # a later read, failed too

    with pytest.raises(StorageQuotaExceeded, match="would keep 1001 bytes"):
        other.charge(501)
    catalog.down = False
    await second.__aexit__(None, None, None)


async def test_a_commit_failing_after_the_link_leaves_no_artifact_and_no_charge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The link to the final name took, then syncing the directory failed: the run
    fails, so the file is removed from under its name and its charge given back."""

    def failing_sync(_directory: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(filesystem, "_fsync_dir", failing_sync)
    quotas = NamespaceQuotas(1000, _Stored({}), tmp_path)
    async with quotas.writing("team-a") as quota:
        store = FilesystemStore(tmp_path / "a", quota=quota)
        with pytest.raises(StorageError, match="cannot commit"):
            await _write(store, [300])
        assert not await store.exists("team-a/big.dkbk")
        assert quota.written == 0
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # noqa: ASYNC240
