"""The bytes a restore reads of its artifact: counted by a metered store, and shown in
the Restore's status."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dockyard.core.models.restore import RestoreStep
from dockyard.operator.restores.progress import progress_status
from dockyard.runner import FilesystemStore, MeteredStore, Progress
from dockyard.runner.errors import ChecksumMismatch
from dockyard.runner.progress import CHECKSUM, RESTORE


async def _stored(tmp_path: Path, data: bytes) -> FilesystemStore:
    store = FilesystemStore(tmp_path, fsync=False)
    async with store.create("a.dkbk") as writer:
        await writer.write(data)
        await writer.commit()
    return store


async def test_every_byte_read_through_the_metered_store_is_counted(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    progress = Progress()
    store = MeteredStore(await _stored(tmp_path, data), progress)
    progress.begin(CHECKSUM, await store.size("a.dkbk"))

    read = bytearray()
    async with store.open("a.dkbk", expected_sha256=hashlib.sha256(data).hexdigest()) as reader:
        async for chunk in reader:
            read += chunk
            assert progress.done == len(read)  # counted as it goes, not at the end

    assert bytes(read) == data
    assert (progress.step, progress.done, progress.total) == (CHECKSUM, len(data), len(data))


async def test_a_new_pass_starts_again_from_nothing(tmp_path: Path) -> None:
    data = b"x" * 1000
    progress = Progress()
    store = MeteredStore(await _stored(tmp_path, data), progress)
    digest = hashlib.sha256(data).hexdigest()
    for step in (CHECKSUM, RESTORE):
        progress.begin(step, len(data))
        async with store.open("a.dkbk", expected_sha256=digest) as reader:
            async for _ in reader:
                pass
        assert (progress.step, progress.done) == (step, 1000)


async def test_the_metered_store_keeps_the_checksum_check(tmp_path: Path) -> None:
    store = MeteredStore(await _stored(tmp_path, b"abc"), Progress())

    async def read_all() -> None:
        async with store.open("a.dkbk", expected_sha256="0" * 64) as reader:
            async for _ in reader:
                pass

    with pytest.raises(ChecksumMismatch):
        await read_all()


def test_the_status_shows_the_pass_and_the_bytes_once_a_pass_began() -> None:
    progress = Progress()
    assert progress_status(progress) is None
    progress.begin(RESTORE, 2048)
    progress.done = 1024
    shown = progress_status(progress)
    assert shown is not None
    body = shown.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert (body["step"], body["bytesDone"], body["bytesTotal"]) == ("Restore", 1024, 2048)
    assert shown.step is RestoreStep.RESTORE
