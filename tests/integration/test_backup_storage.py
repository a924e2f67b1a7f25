"""Both storage backends keep the same promises: atomic commit, immutability, verified reads.

Every test runs against ``FilesystemStore`` on a real directory and against
``S3Store`` talking to the test bed's SeaweedFS S3 gateway over TLS on 127.0.0.1: a
real object store, with the test bed's access key and CA (``backup_fixtures``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from dockyard.runner import (
    ArtifactExists,
    ArtifactNotFound,
    ChecksumMismatch,
    FilesystemStore,
    Store,
    verify_checksum,
)
from dockyard.runner.s3 import MIN_PART_SIZE, S3Store
from dockyard.runner.storage import Digest, connect_storage
from tests.integration import backup_fixtures

pytestmark = pytest.mark.integration

testbed_s3 = backup_fixtures.testbed_s3
s3_endpoint = backup_fixtures.s3_endpoint
s3_credentials = backup_fixtures.s3_credentials


@pytest.fixture(params=["filesystem", "s3"])
async def storage(
    request: pytest.FixtureRequest, tmp_path: Path, s3_endpoint: str, s3_credentials: None
) -> AsyncIterator[Store]:
    if request.param == "filesystem":
        yield FilesystemStore(tmp_path / "backups")
        return
    bucket = f"bk-{uuid.uuid4().hex[:12]}"
    async with S3Store(
        bucket, prefix="dockyard", endpoint_url=s3_endpoint, region="us-east-1"
    ) as s3:
        await s3.client.create_bucket(Bucket=bucket)
        yield s3


async def put(storage: Store, name: str, data: bytes) -> str:
    async with storage.create(name) as writer:
        await writer.write(data)
        stored = await writer.commit()
    return stored.sha256


async def read(storage: Store, name: str, sha256: str) -> bytes:
    out = bytearray()
    async with storage.open(name, expected_sha256=sha256) as reader:
        async for chunk in reader:
            out += chunk
    return bytes(out)


def sha256_of(data: bytes) -> str:
    digest = Digest()
    digest.update(data)
    return digest.hexdigest()


async def test_a_committed_artifact_reads_back_with_its_digest(storage: Store) -> None:
    data = os.urandom(3 * 1024 * 1024 + 7)
    async with storage.create("ns/env/a.dkbk") as writer:
        for i in range(0, len(data), 1_000_000):
            await writer.write(data[i : i + 1_000_000])
        stored = await writer.commit()
    assert (stored.size, stored.sha256) == (len(data), sha256_of(data))
    assert stored.location.endswith("ns/env/a.dkbk")
    assert await read(storage, "ns/env/a.dkbk", stored.sha256) == data
    assert await storage.size("ns/env/a.dkbk") == len(data)


async def test_nothing_is_visible_under_the_name_before_commit(storage: Store) -> None:
    async with storage.create("a.dkbk") as writer:
        await writer.write(b"x" * 1000)
        assert not await storage.exists("a.dkbk")
        assert await storage.list() == []
        await writer.commit()
    assert await storage.exists("a.dkbk")
    assert await storage.list() == ["a.dkbk"]


async def test_an_error_inside_the_writer_leaves_nothing_behind(storage: Store) -> None:
    async def fail_mid_way() -> None:
        async with storage.create("a.dkbk") as writer:
            await writer.write(b"half a dump")
            raise RuntimeError("pg_dump died")

    with pytest.raises(RuntimeError, match="pg_dump died"):
        await fail_mid_way()
    assert not await storage.exists("a.dkbk")
    assert await storage.list() == []
    assert await storage.remove_stale_partials(timedelta(0)) == 0


async def test_leaving_the_block_without_commit_aborts(storage: Store) -> None:
    async with storage.create("a.dkbk") as writer:
        await writer.write(b"never committed")
    assert not await storage.exists("a.dkbk")
    assert await storage.remove_stale_partials(timedelta(0)) == 0


async def test_a_committed_artifact_is_never_replaced(storage: Store) -> None:
    first = await put(storage, "a.dkbk", b"first")
    with pytest.raises(ArtifactExists, match="already exists"):
        await put(storage, "a.dkbk", b"second")
    assert await read(storage, "a.dkbk", first) == b"first"
    assert await storage.list() == ["a.dkbk"]


async def test_a_read_whose_bytes_differ_from_the_checksum_fails_at_the_end(
    storage: Store,
) -> None:
    await put(storage, "a.dkbk", b"the stored bytes")
    wrong = sha256_of(b"other bytes")
    with pytest.raises(ChecksumMismatch, match=f"checksum mismatch: expected sha256 {wrong}"):
        await read(storage, "a.dkbk", wrong)
    with pytest.raises(ChecksumMismatch):
        await verify_checksum(storage, "a.dkbk", expected_sha256=wrong)


async def test_a_missing_artifact_is_not_found(storage: Store) -> None:
    with pytest.raises(ArtifactNotFound):
        await read(storage, "missing.dkbk", "0" * 64)
    with pytest.raises(ArtifactNotFound):
        await storage.size("missing.dkbk")
    assert not await storage.exists("missing.dkbk")


async def test_delete_is_idempotent(storage: Store) -> None:
    await put(storage, "a.dkbk", b"bytes")
    assert await storage.delete("a.dkbk") is True
    assert await storage.delete("a.dkbk") is False
    assert not await storage.exists("a.dkbk")


async def test_list_filters_by_prefix_and_sorts(storage: Store) -> None:
    for name in ("t1/shop/b.dkbk", "t1/shop/a.dkbk", "t1/blog/a.dkbk", "t2/shop/a.dkbk"):
        await put(storage, name, name.encode())
    assert await storage.list("t1/shop/") == ["t1/shop/a.dkbk", "t1/shop/b.dkbk"]
    assert await storage.list("t1/") == ["t1/blog/a.dkbk", "t1/shop/a.dkbk", "t1/shop/b.dkbk"]
    assert len(await storage.list()) == 4


@pytest.mark.parametrize("name", ["../up.dkbk", "a/../../b", "/abs", ".partial", "a//b", ""])
async def test_names_that_could_escape_the_root_are_refused(storage: Store, name: str) -> None:
    with pytest.raises(ValueError, match="invalid artifact name"):
        async with storage.create(name):
            pass


async def test_partials_left_by_a_crashed_writer_are_collected(storage: Store) -> None:
    # A crash is a writer that is never aborted: its context manager is never exited.
    crashed = storage.create("crashed.dkbk")
    writer = await crashed.__aenter__()
    await writer.write(b"a" * 100)
    assert await storage.list() == []
    assert await storage.remove_stale_partials(timedelta(0)) == 1
    assert await storage.remove_stale_partials(timedelta(0)) == 0
    assert await storage.list() == []
    await crashed.__aexit__(None, None, None)  # what is gone stays gone


async def test_young_partials_are_kept_for_a_writer_still_at_work(storage: Store) -> None:
    async with storage.create("busy.dkbk") as writer:
        await writer.write(b"a" * 100)
        assert await storage.remove_stale_partials(timedelta(hours=1)) == 0
        await writer.commit()
    assert await storage.list() == ["busy.dkbk"]


async def test_the_filesystem_writes_only_owner_readable_files(tmp_path: Path) -> None:
    storage = FilesystemStore(tmp_path)
    await put(storage, "ns/a.dkbk", b"bytes")
    assert (tmp_path / "ns" / "a.dkbk").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "ns").iterdir()] == ["a.dkbk"]


async def test_s3_uploads_large_artifacts_in_parts(s3_endpoint: str, s3_credentials: None) -> None:
    bucket = f"bk-{uuid.uuid4().hex[:12]}"
    data = os.urandom(2 * MIN_PART_SIZE + 123)
    async with S3Store(
        bucket, endpoint_url=s3_endpoint, region="us-east-1", part_size=MIN_PART_SIZE
    ) as s3:
        await s3.client.create_bucket(Bucket=bucket)
        sha = await put(s3, "big.dkbk", data)
        head = await s3.client.head_object(Bucket=bucket, Key="big.dkbk", PartNumber=1)
        assert head["PartsCount"] == 3
        assert await read(s3, "big.dkbk", sha) == data
        assert s3.location("big.dkbk") == f"s3://{bucket}/big.dkbk"


async def test_storage_urls_open_the_right_backend(tmp_path: Path) -> None:
    async with connect_storage(tmp_path.as_uri()) as storage:
        assert isinstance(storage, FilesystemStore)
        assert storage.root == tmp_path
    for bad, why in [
        ("relative/path", "must be absolute"),
        ("ftp://host/x", "unsupported storage URL scheme"),
        ("file://remote/x", "local path"),
        ("s3://key:secret@bucket", "without credentials"),
    ]:
        with pytest.raises(ValueError, match=why):
            async with connect_storage(bad):
                pass
