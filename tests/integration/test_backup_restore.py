"""Backups and restores of real environment databases on the test bed's PostgreSQL.

One seeded source (several tables, 230k rows) is backed up once per module; each test
restores, corrupts or interrupts from there. Sources and targets are environment
databases made by ``ManagedPostgres``, reached with their own non-superuser roles.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from dockyard.core.models.backup import BackupStatus
from dockyard.operator.database import DatabaseCredentials
from dockyard.runner import (
    ArtifactError,
    ArtifactTruncated,
    BackupError,
    BackupOptions,
    BackupResult,
    ChecksumMismatch,
    DumpFailed,
    EncryptionKey,
    FilesystemStore,
    Keyring,
    RestoreFailed,
    RestoreOptions,
    SpoolFailed,
    StorageFull,
    TargetNotEmpty,
    ToolFailed,
    Tools,
    TooManyTables,
    WrongKey,
    run_backup,
    run_restore,
    table_counts,
    verify_artifact,
)
from dockyard.runner import manifest as manifest_module
from dockyard.runner.envelope import TAG_BYTES, parse_header
from dockyard.runner.libpq import with_database
from dockyard.runner.manifest import user_relations
from dockyard.runner.s3 import S3Store
from dockyard.runner.storage import (
    ArtifactReader,
    ArtifactWriter,
    Digest,
    StoredArtifact,
)
from tests.integration import backup_fixtures
from tests.integration.backup_fixtures import (
    SEED_SQL,
    NewDatabase,
    children_named,
    execute,
    fingerprints,
    relations,
)

pytestmark = pytest.mark.integration

admin_dsn = backup_fixtures.admin_dsn
new_database = backup_fixtures.new_database
testbed_s3 = backup_fixtures.testbed_s3
s3_endpoint = backup_fixtures.s3_endpoint
s3_credentials = backup_fixtures.s3_credentials

KEY = EncryptionKey.generate("test-2025")


@dataclass(frozen=True)
class Backed:
    source: DatabaseCredentials
    storage: FilesystemStore
    result: BackupResult


@pytest.fixture(scope="module")
async def source(new_database: NewDatabase) -> DatabaseCredentials:
    creds = await new_database()
    await execute(creds.uri(), SEED_SQL)
    return creds


@pytest.fixture(scope="module")
async def backed(source: DatabaseCredentials, tmp_path_factory: pytest.TempPathFactory) -> Backed:
    storage = FilesystemStore(tmp_path_factory.mktemp("backups"))
    result = await run_backup(
        dsn=source.uri(), storage=storage, name="shop/nightly-1.dkbk", key=KEY
    )
    return Backed(source, storage, result)


@pytest.fixture
async def target(new_database: NewDatabase) -> DatabaseCredentials:
    return await new_database()


def copy_artifact(backed: Backed, name: str, edit: bytes | None = None) -> Path:
    """A copy of the module's artifact under ``name``, optionally with other bytes."""
    original = backed.storage.path(backed.result.name)
    copy = backed.storage.path(name)
    copy.parent.mkdir(parents=True, exist_ok=True)
    if edit is None:
        shutil.copyfile(original, copy)
    else:
        copy.write_bytes(edit)
    return copy


def sha256_of(data: bytes) -> str:
    digest = Digest()
    digest.update(data)
    return digest.hexdigest()


async def test_a_restore_brings_back_every_row_of_every_table(
    backed: Backed, target: DatabaseCredentials
) -> None:
    result = await run_restore(
        dsn=target.uri(),
        storage=backed.storage,
        name=backed.result.name,
        expected_sha256=backed.result.sha256,
        keys=KEY,
        options=RestoreOptions(role=target.user),
    )

    source_tables = await fingerprints(backed.source.uri())
    restored = await fingerprints(target.uri())
    assert restored == source_tables
    assert sum(rows for rows, _ in restored.values()) >= 100_000
    assert result.database == target.database
    assert result.sha256 == backed.result.sha256


async def test_the_manifest_counts_every_table_as_the_restore_holds_it(
    backed: Backed, target: DatabaseCredentials
) -> None:
    await run_restore(
        dsn=target.uri(),
        storage=backed.storage,
        name=backed.result.name,
        expected_sha256=backed.result.sha256,
        keys=KEY,
    )
    manifest = backed.result.manifest
    assert manifest == await table_counts(target.uri())
    assert manifest == {
        '"Sales"."Line Items"': 60_000,
        "public.customers": 30_000,
        "public.events_2024": 10_613,
        "public.events_2025": 9_387,
        "public.nothing_yet": 0,
        "public.orders": 120_000,
    }


async def test_a_restore_recreates_views_sequences_and_ownership(
    backed: Backed, target: DatabaseCredentials
) -> None:
    await run_restore(
        dsn=target.uri(),
        storage=backed.storage,
        name=backed.result.name,
        expected_sha256=backed.result.sha256,
        keys=KEY,
        options=RestoreOptions(role=target.user),
    )
    conn = await asyncpg.connect(target.uri())
    try:
        assert await conn.fetchval("SELECT last_value FROM invoice_numbers") == 4242
        assert await conn.fetchval("SELECT count(*) FROM big_orders") > 0
        owners = await conn.fetch(
            "SELECT DISTINCT pg_get_userbyid(relowner) AS owner FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname IN ('public', 'Sales')"
        )
    finally:
        await conn.close()
    assert [r["owner"] for r in owners] == [target.user]


async def test_the_result_describes_the_stored_artifact(backed: Backed) -> None:
    result = backed.result
    stored = backed.storage.path(result.name).read_bytes()
    assert result.size == len(stored)
    assert result.sha256 == sha256_of(stored)
    assert result.key_id == "test-2025"
    assert result.location == backed.storage.path(result.name).as_uri()
    assert result.format == "dockyard-backup/1"
    assert result.pg_dump_version[:2].isdigit()
    assert result.finished_at >= result.started_at
    # Encrypted: none of the seeded text is readable in the artifact.
    assert b"example.com" not in stored
    assert b"PGDMP" not in stored


async def test_verify_artifact_proves_an_artifact_restorable_without_a_database(
    backed: Backed,
) -> None:
    report = await verify_artifact(
        storage=backed.storage,
        name=backed.result.name,
        expected_sha256=backed.result.sha256,
        keys=Keyring([EncryptionKey.generate("newer"), KEY]),
    )
    assert report.archive_checked
    assert report.key_id == "test-2025"
    assert report.size == backed.result.size


async def test_a_flipped_byte_fails_with_checksum_mismatch_before_the_target_is_touched(
    backed: Backed, target: DatabaseCredentials
) -> None:
    artifact = bytearray(backed.storage.path(backed.result.name).read_bytes())
    artifact[len(artifact) // 2] ^= 0x40
    copy_artifact(backed, "shop/flipped.dkbk", bytes(artifact))

    with pytest.raises(ChecksumMismatch, match=r"^checksum mismatch: expected sha256 "):
        await run_restore(
            dsn=target.uri(),
            storage=backed.storage,
            name="shop/flipped.dkbk",
            expected_sha256=backed.result.sha256,
            keys=KEY,
        )
    assert await relations(target.uri()) == []
    with pytest.raises(ChecksumMismatch, match="checksum mismatch"):
        await verify_artifact(
            storage=backed.storage,
            name="shop/flipped.dkbk",
            expected_sha256=backed.result.sha256,
            keys=KEY,
        )


async def test_a_flipped_byte_under_a_matching_checksum_still_fails_authentication(
    backed: Backed,
) -> None:
    # Someone who rewrote the catalog's sha256 too: the frames' tags still catch it.
    artifact = bytearray(backed.storage.path(backed.result.name).read_bytes())
    artifact[len(artifact) // 2] ^= 0x40
    copy_artifact(backed, "shop/forged.dkbk", bytes(artifact))
    with pytest.raises(Exception, match="authentication failed at frame"):
        await verify_artifact(
            storage=backed.storage,
            name="shop/forged.dkbk",
            expected_sha256=sha256_of(bytes(artifact)),
            keys=KEY,
        )


async def test_a_wrong_key_fails_authentication_before_the_target_is_touched(
    backed: Backed, target: DatabaseCredentials
) -> None:
    impostor = EncryptionKey("test-2025", os.urandom(32))
    with pytest.raises(WrongKey, match="authentication failed"):
        await run_restore(
            dsn=target.uri(),
            storage=backed.storage,
            name=backed.result.name,
            expected_sha256=backed.result.sha256,
            keys=impostor,
        )
    assert await relations(target.uri()) == []


async def test_a_truncated_artifact_is_detected(
    backed: Backed, target: DatabaseCredentials
) -> None:
    stored = backed.storage.path(backed.result.name).read_bytes()
    header = parse_header(stored)
    assert header is not None
    # Cut exactly after the second frame: every remaining frame is intact.
    cut = stored[: len(header.raw) + 2 * (header.chunk_size + TAG_BYTES)]
    copy_artifact(backed, "shop/cut.dkbk", cut)

    with pytest.raises(ChecksumMismatch):
        await run_restore(
            dsn=target.uri(),
            storage=backed.storage,
            name="shop/cut.dkbk",
            expected_sha256=backed.result.sha256,
            keys=KEY,
        )
    assert await relations(target.uri()) == []
    with pytest.raises(ArtifactTruncated, match="ends after frame 1, which is not its last"):
        await verify_artifact(
            storage=backed.storage,
            name="shop/cut.dkbk",
            expected_sha256=sha256_of(cut),
            keys=KEY,
        )


async def test_a_target_that_already_holds_tables_is_refused(
    backed: Backed, target: DatabaseCredentials
) -> None:
    await execute(target.uri(), "CREATE TABLE precious (id int); INSERT INTO precious VALUES (7)")
    with pytest.raises(TargetNotEmpty, match=r"public\.precious"):
        await run_restore(
            dsn=target.uri(),
            storage=backed.storage,
            name=backed.result.name,
            expected_sha256=backed.result.sha256,
            keys=KEY,
        )
    assert await relations(target.uri()) == ["public.precious"]


async def test_a_failing_restore_rolls_back_everything_it_did(
    backed: Backed, target: DatabaseCredentials
) -> None:
    # A table named like one in the dump, restored last in the order: pg_restore fails
    # late, after it created and filled most of the other tables.
    await execute(
        target.uri(),
        'CREATE SCHEMA "Sales"; CREATE TABLE "Sales"."Line Items" (kept text);'
        ' INSERT INTO "Sales"."Line Items" VALUES (\'before\')',
    )
    with pytest.raises(RestoreFailed, match="already exists"):
        await run_restore(
            dsn=target.uri(),
            storage=backed.storage,
            name=backed.result.name,
            expected_sha256=backed.result.sha256,
            keys=KEY,
            options=RestoreOptions(require_empty=False),
        )
    assert await relations(target.uri()) == ['"Sales"."Line Items"']
    assert await fingerprints(target.uri()) == {'"Sales"."Line Items"': (1, _md5_of("(before)"))}


def _md5_of(text: str) -> str:
    import hashlib

    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class StalledStorage(FilesystemStore):
    """A real directory whose writers stall once 256 KiB are written, until released.

    A slow volume, in effect: the pipeline backs up behind it (pg_dump blocks on a full
    pipe) with the dump half done, which is where a cancellation or a kill must be
    tested, and no sleep or race decides whether the test catches it there.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()

    @asynccontextmanager
    async def create(self, name: str) -> AsyncIterator[ArtifactWriter]:
        async with super().create(name) as writer:
            yield _Stalling(writer, self)


class _Stalling:
    def __init__(self, inner: ArtifactWriter, storage: StalledStorage) -> None:
        self._inner, self._storage, self._written = inner, storage, 0

    async def write(self, data: bytes) -> None:
        if self._written >= 256 * 1024:
            self._storage.stalled.set()
            await self._storage.release.wait()
        self._written += len(data)
        await self._inner.write(data)

    async def commit(self) -> StoredArtifact:
        return await self._inner.commit()

    async def abort(self) -> None:
        await self._inner.abort()


@pytest.fixture
def stalled_storage(tmp_path: Path) -> StalledStorage:
    return StalledStorage(tmp_path / "store")


@pytest.fixture(scope="module")
async def big_source(new_database: NewDatabase) -> DatabaseCredentials:
    """A dump of about 60 MB that compresses only about twofold.

    zstd -T1 reads some 15 MB ahead while its output is blocked, so with the seeded
    source (about 19 MB) a stalled writer could let pg_dump finish before a test
    looks for it. Here pg_dump is still blocked, tens of MB from its end.
    """
    creds = await new_database()
    await execute(
        creds.uri(),
        "CREATE TABLE bulk AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS a"
        " FROM generate_series(1, 800000) g",
    )
    return creds


def _stalling_backup(
    source: DatabaseCredentials, storage: StalledStorage
) -> asyncio.Task[BackupResult]:
    """A backup of ``source`` into ``shop/x.dkbk``, under way until its writer stalls."""
    return asyncio.create_task(
        run_backup(
            dsn=source.uri(),
            storage=storage,
            name="shop/x.dkbk",
            key=KEY,
            # Small frames and buffers, so the stall holds pg_dump well before its end.
            options=BackupOptions(chunk_size=64 * 1024),
        )
    )


async def test_a_cancelled_backup_leaves_no_artifact_and_no_process(
    big_source: DatabaseCredentials, stalled_storage: StalledStorage
) -> None:
    task = _stalling_backup(big_source, stalled_storage)
    try:
        await asyncio.wait_for(stalled_storage.stalled.wait(), 60)
        (partial,) = stalled_storage.root.rglob(".x.dkbk.*.partial")
        assert children_named("pg_dump")
    except BaseException:
        # Not left blocked: its tools would still be children when the next test looks.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert not partial.exists()
    assert not await stalled_storage.exists("shop/x.dkbk")
    assert list(stalled_storage.root.rglob("*x.dkbk*")) == []
    assert children_named("pg_dump") == []
    assert children_named("zstd") == []


async def test_a_killed_pg_dump_fails_the_backup_and_leaves_no_artifact(
    big_source: DatabaseCredentials, stalled_storage: StalledStorage
) -> None:
    task = _stalling_backup(big_source, stalled_storage)
    await asyncio.wait_for(stalled_storage.stalled.wait(), 60)
    (pid,) = children_named("pg_dump")
    os.kill(pid, signal.SIGKILL)
    stalled_storage.release.set()  # the rest of the pipeline drains what it had
    with pytest.raises(DumpFailed, match="pg_dump was killed by signal 9"):
        await task

    assert not await stalled_storage.exists("shop/x.dkbk")
    assert list(stalled_storage.root.rglob("*x.dkbk*")) == []
    assert children_named("zstd") == []


async def _terminate_snapshot_session(admin_dsn: str, database: str) -> None:
    """End the session that exported the dump's snapshot, once its row counts are done
    (idle in its transaction); pg_dump imported the snapshot long before."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        for _ in range(600):
            ended = await conn.fetchval(
                "SELECT count(pg_catalog.pg_terminate_backend(pid))"
                " FROM pg_catalog.pg_stat_activity"
                " WHERE datname = $1 AND state = 'idle in transaction'"
                " AND query LIKE 'SELECT pg_catalog.count(*)%'",
                database,
            )
            if ended:
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the snapshot's session never finished its row counts")
    finally:
        await conn.close()


async def test_a_snapshot_session_lost_after_the_dump_leaves_no_artifact(
    big_source: DatabaseCredentials, stalled_storage: StalledStorage, admin_dsn: str
) -> None:
    # The session sits idle in its transaction while pg_dump streams: a proxy's idle
    # timeout, or the tenant's own pg_terminate_backend, can end it then.
    task = _stalling_backup(big_source, stalled_storage)
    try:
        await asyncio.wait_for(stalled_storage.stalled.wait(), 60)
        await _terminate_snapshot_session(admin_dsn, big_source.database)
    finally:
        stalled_storage.release.set()

    with pytest.raises(BackupError):
        await task

    # Retried, the run would otherwise leave one complete, uncounted artifact a try.
    assert not await stalled_storage.exists("shop/x.dkbk")
    assert list(stalled_storage.root.rglob("*x.dkbk*")) == []


@pytest.fixture
def empty_storage(tmp_path: Path) -> FilesystemStore:
    return FilesystemStore(tmp_path / "store")


class StalledReads(FilesystemStore):
    """A real directory whose second read of an artifact (a restore's data pass) stalls
    after 1 MiB until released: pg_restore is then mid-way, inside its transaction."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.opened = 0
        self.stalled = asyncio.Event()
        self.release = asyncio.Event()

    @asynccontextmanager
    async def open(self, name: str, *, expected_sha256: str) -> AsyncIterator[ArtifactReader]:
        self.opened += 1
        async with super().open(name, expected_sha256=expected_sha256) as reader:
            yield self._stalling(reader) if self.opened == 2 else reader

    def _stalling(self, reader: ArtifactReader) -> ArtifactReader:
        storage = self

        class Stalling:
            async def __aiter__(self) -> AsyncIterator[bytes]:
                sent = 0
                async for chunk in reader:
                    if sent >= 1024 * 1024 and not storage.release.is_set():
                        storage.stalled.set()
                        await storage.release.wait()
                    sent += len(chunk)
                    yield chunk

        return Stalling()


async def _restore_sessions(admin_dsn: str, database: str) -> int:
    conn = await asyncpg.connect(admin_dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database
            )
        )
    finally:
        await conn.close()


async def _until_no_sessions(admin_dsn: str, database: str) -> None:
    # A backend whose client vanished ends (and rolls back) a moment later.
    async with asyncio.timeout(30):
        while True:
            if not await _restore_sessions(admin_dsn, database):
                return
            await asyncio.sleep(0.1)


async def test_a_cancelled_restore_rolls_the_target_back(
    backed: Backed, target: DatabaseCredentials, admin_dsn: str
) -> None:
    storage = StalledReads(backed.storage.root)
    task = asyncio.create_task(
        run_restore(
            dsn=target.uri(),
            storage=storage,
            name=backed.result.name,
            expected_sha256=backed.result.sha256,
            keys=KEY,
        )
    )
    await asyncio.wait_for(storage.stalled.wait(), 60)
    assert children_named("pg_restore")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert children_named("pg_restore") == []
    assert children_named("zstd") == []
    await _until_no_sessions(admin_dsn, target.database)
    assert await relations(target.uri()) == []


async def test_a_killed_pg_restore_fails_the_restore_and_leaves_the_target_empty(
    backed: Backed, target: DatabaseCredentials, admin_dsn: str
) -> None:
    storage = StalledReads(backed.storage.root)
    task = asyncio.create_task(
        run_restore(
            dsn=target.uri(),
            storage=storage,
            name=backed.result.name,
            expected_sha256=backed.result.sha256,
            keys=KEY,
        )
    )
    await asyncio.wait_for(storage.stalled.wait(), 60)
    (pid,) = children_named("pg_restore")
    os.kill(pid, signal.SIGKILL)
    storage.release.set()
    with pytest.raises(RestoreFailed, match="pg_restore was killed by signal 9"):
        await task

    await _until_no_sessions(admin_dsn, target.database)
    assert await relations(target.uri()) == []


async def test_a_missing_tool_fails_the_backup_cleanly(
    source: DatabaseCredentials, empty_storage: FilesystemStore
) -> None:
    with pytest.raises(ToolFailed, match=r"zstd is not installed \('zstd-not-here' not found\)"):
        await run_backup(
            dsn=source.uri(),
            storage=empty_storage,
            name="x.dkbk",
            key=KEY,
            options=BackupOptions(tools=Tools(zstd="zstd-not-here")),
        )
    assert not await empty_storage.exists("x.dkbk")
    assert list(empty_storage.root.rglob("*x.dkbk*")) == []
    assert children_named("pg_dump") == []


async def test_a_table_the_role_may_not_read_fails_the_backup_saying_so(
    new_database: NewDatabase, admin_dsn: str, empty_storage: FilesystemStore
) -> None:
    # As a Job-mode runner dumps: as the environment's role, which cannot read a table
    # the admin made. The row count fails first and ends the snapshot pg_dump imports;
    # the error must name the real cause, not the lost snapshot.
    creds = await new_database()
    await execute(with_database(admin_dsn, creds.database), "CREATE TABLE admins_only (id int)")

    with pytest.raises(DumpFailed, match="permission denied for table admins_only") as caught:
        await run_backup(dsn=creds.uri(), storage=empty_storage, name="x.dkbk", key=KEY)
    assert creds.password not in caught.value.message
    assert not await empty_storage.exists("x.dkbk")
    assert children_named("pg_dump") == []


async def test_the_longest_table_name_postgres_allows_fits_the_backups_status(
    new_database: NewDatabase, empty_storage: FilesystemStore
) -> None:
    """A schema and a table named with 63 double quotes each: format('%I.%I') doubles
    every quote, so the manifest names them in 257 characters."""
    creds = await new_database()
    quoted = '"' + '""' * 63 + '"'
    await execute(creds.uri(), f"CREATE SCHEMA {quoted}; CREATE TABLE {quoted}.{quoted} (id int)")

    result = await run_backup(dsn=creds.uri(), storage=empty_storage, name="q.dkbk", key=KEY)

    longest = f"{quoted}.{quoted}"
    assert len(longest) == 257
    assert result.manifest == {longest: 0}
    status = BackupStatus().with_artifact(
        location="file:///q.dkbk", size=result.size, sha256=result.sha256,
        key_id=result.key_id, tables=result.manifest, completed_at=datetime.now(UTC),
    )  # fmt: skip
    assert status.manifest is not None
    assert [t.name for t in status.manifest.tables] == [longest]


async def test_a_database_with_more_tables_than_a_manifest_holds_fails_before_the_dump(
    new_database: NewDatabase, empty_storage: FilesystemStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = await new_database()
    await execute(creds.uri(), "CREATE TABLE a (id int); CREATE TABLE b (id int)")
    monkeypatch.setattr(manifest_module, "MANIFEST_MAX_TABLES", 1)

    with pytest.raises(
        TooManyTables, match="holds 2 tables; a backup's manifest records at most 1"
    ):
        await run_backup(dsn=creds.uri(), storage=empty_storage, name="x.dkbk", key=KEY)
    assert not await empty_storage.exists("x.dkbk")
    assert children_named("pg_dump") == []


async def test_a_backup_under_concurrent_writes_has_a_manifest_matching_its_dump(
    new_database: NewDatabase, empty_storage: FilesystemStore
) -> None:
    source = await new_database()
    await execute(
        source.uri(),
        "CREATE TABLE ledger (id bigserial PRIMARY KEY, amount int, memo text);"
        " INSERT INTO ledger (amount, memo) SELECT g, md5(g::text)"
        " FROM generate_series(1, 300000) g",
    )
    stop = asyncio.Event()
    batches = 0

    async def keep_writing() -> None:
        nonlocal batches
        conn = await asyncpg.connect(source.uri())
        try:
            while not stop.is_set():
                await conn.execute(
                    "INSERT INTO ledger (amount, memo)"
                    " SELECT g, 'late' FROM generate_series(1, 50) g"
                )
                batches += 1
                await asyncio.sleep(0.005)
        finally:
            await conn.close()

    writer = asyncio.create_task(keep_writing())
    await asyncio.sleep(0.1)
    result = await run_backup(dsn=source.uri(), storage=empty_storage, name="l.dkbk", key=KEY)
    during = batches
    await asyncio.sleep(0.05)
    stop.set()
    await writer

    target = await new_database()
    await run_restore(
        dsn=target.uri(),
        storage=empty_storage,
        name="l.dkbk",
        expected_sha256=result.sha256,
        keys=KEY,
    )
    restored = (await table_counts(target.uri()))["public.ledger"]
    assert restored == result.manifest["public.ledger"]
    assert 300_000 < restored < (await table_counts(source.uri()))["public.ledger"]
    assert during > 0


async def test_a_backup_to_s3_verifies_and_restores(
    backed: Backed,
    target: DatabaseCredentials,
    s3_endpoint: str,
    s3_credentials: None,
) -> None:
    """Against the test bed's S3 (SeaweedFS over TLS, see test_backup_storage)."""
    bucket = f"dockyard-backups-{uuid.uuid4().hex[:8]}"  # the test bed outlives one run
    async with S3Store(bucket, prefix="team-a", endpoint_url=s3_endpoint, region="us-east-1") as s3:
        await s3.client.create_bucket(Bucket=bucket)
        result = await run_backup(
            dsn=backed.source.uri(), storage=s3, name="shop/s3-1.dkbk", key=KEY
        )
        assert result.location == f"s3://{bucket}/team-a/shop/s3-1.dkbk"
        await verify_artifact(storage=s3, name=result.name, expected_sha256=result.sha256, keys=KEY)
        await run_restore(
            dsn=target.uri(),
            storage=s3,
            name=result.name,
            expected_sha256=result.sha256,
            keys=KEY,
        )
    assert await table_counts(target.uri()) == result.manifest == backed.result.manifest


@pytest.fixture
def full_volume(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: far smaller than the seeded source's artifact."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_backup_volume_fails_with_its_reason_leaves_nothing_and_spares_other_runs(
    source: DatabaseCredentials, full_volume: Path, tmp_path: Path
) -> None:
    roomy = FilesystemStore(tmp_path / "roomy")
    full, other = await asyncio.gather(
        run_backup(
            dsn=source.uri(), storage=FilesystemStore(full_volume), name="shop/a.dkbk", key=KEY
        ),
        run_backup(dsn=source.uri(), storage=roomy, name="shop/b.dkbk", key=KEY),
        return_exceptions=True,
    )
    assert isinstance(full, StorageFull), full
    assert full.reason == "StorageFull"
    assert "backup volume is full" in full.message
    assert "No space left on device" in full.message
    left = await asyncio.to_thread(lambda: [p for p in full_volume.rglob("*") if p.is_file()])
    assert left == []  # no partial, no artifact
    assert shutil.disk_usage(full_volume).used < 64 * 1024
    assert isinstance(other, BackupResult), other
    report = await verify_artifact(
        storage=roomy, name="shop/b.dkbk", expected_sha256=other.sha256, keys=KEY
    )
    assert report.sha256 == other.sha256


# -- the parallel restore: one read into a spool, then pg_restore --jobs -------------------


@pytest.fixture
def spool_dir(tmp_path: Path) -> Path:
    spool = tmp_path / "spool"
    spool.mkdir()
    return spool


async def test_a_parallel_restore_brings_back_every_row_and_leaves_no_spool(
    backed: Backed, target: DatabaseCredentials, spool_dir: Path
) -> None:
    options = RestoreOptions(role=target.user, jobs=3, spool_dir=str(spool_dir))
    assert options.parallel
    result = await run_restore(
        dsn=target.uri(),
        storage=backed.storage,
        name=backed.result.name,
        expected_sha256=backed.result.sha256,
        keys=KEY,
        options=options,
    )

    assert await fingerprints(target.uri()) == await fingerprints(backed.source.uri())
    assert backed.result.manifest == await table_counts(target.uri())
    assert result.size == backed.result.size
    assert result.key_id == "test-2025"
    # The decrypted dump never outlives the run.
    assert os.listdir(spool_dir) == []


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
async def test_a_parallel_restore_of_a_damaged_artifact_fails_on_its_checksum_untouched(
    backed: Backed, target: DatabaseCredentials, spool_dir: Path, damage: str
) -> None:
    stored = bytearray(backed.storage.path(backed.result.name).read_bytes())
    if damage == "flipped":
        stored[len(stored) // 2] ^= 0x40
    else:
        del stored[len(stored) * 2 // 3 :]
    copy_artifact(backed, f"shop/{damage}-parallel.dkbk", bytes(stored))

    with pytest.raises(ChecksumMismatch, match=r"^checksum mismatch: expected sha256 "):
        await run_restore(
            dsn=target.uri(),
            storage=backed.storage,
            name=f"shop/{damage}-parallel.dkbk",
            expected_sha256=backed.result.sha256,
            keys=KEY,
            options=RestoreOptions(jobs=2, spool_dir=str(spool_dir)),
        )
    assert await relations(target.uri()) == []
    assert os.listdir(spool_dir) == []


async def test_a_parallel_restore_with_a_wrong_key_fails_before_the_target_is_touched(
    backed: Backed, target: DatabaseCredentials, spool_dir: Path
) -> None:
    impostor = EncryptionKey("test-2025", os.urandom(32))
    with pytest.raises(WrongKey, match="authentication failed"):
        await run_restore(
            dsn=target.uri(),
            storage=backed.storage,
            name=backed.result.name,
            expected_sha256=backed.result.sha256,
            keys=impostor,
            options=RestoreOptions(jobs=2, spool_dir=str(spool_dir)),
        )
    assert await relations(target.uri()) == []
    assert os.listdir(spool_dir) == []


async def test_a_failing_parallel_restore_says_why_and_removes_its_spool(
    backed: Backed, target: DatabaseCredentials, spool_dir: Path
) -> None:
    # Without --single-transaction the staging database's drop is the rollback (the
    # operator's); the runner's part is to fail with pg_restore's reason, spool gone.
    await execute(
        target.uri(),
        'CREATE SCHEMA "Sales"; CREATE TABLE "Sales"."Line Items" (kept text);',
    )
    with pytest.raises(RestoreFailed, match="already exists"):
        await run_restore(
            dsn=target.uri(),
            storage=backed.storage,
            name=backed.result.name,
            expected_sha256=backed.result.sha256,
            keys=KEY,
            options=RestoreOptions(jobs=2, spool_dir=str(spool_dir), require_empty=False),
        )
    assert os.listdir(spool_dir) == []


async def test_a_spool_that_cannot_be_written_is_a_storage_failure_not_a_corrupt_artifact(
    backed: Backed, target: DatabaseCredentials, spool_dir: Path, tmp_path: Path
) -> None:
    # The real zstd, under a file size limit of a few KiB: the spool volume "full".
    limited = tmp_path / "zstd-limited"
    limited.write_text(f'#!/bin/sh\nulimit -f 8\nexec {shutil.which("zstd")} "$@"\n')
    limited.chmod(0o755)
    options = RestoreOptions(
        jobs=2, spool_dir=str(spool_dir), tools=Tools(zstd=str(limited)), require_empty=False
    )

    with pytest.raises(SpoolFailed, match="spool could not be written") as caught:
        await run_restore(
            dsn=target.uri(),
            storage=backed.storage,
            name=backed.result.name,
            expected_sha256=backed.result.sha256,
            keys=KEY,
            options=options,
        )

    # Retried by the operator (a storage failure), never reported as a bad backup.
    assert not isinstance(caught.value, ArtifactError)
    assert os.listdir(spool_dir) == []
    assert await user_relations(target.uri()) == []
    missing = RestoreOptions(jobs=2, spool_dir=str(spool_dir / "gone"))
    with pytest.raises(SpoolFailed, match="spool could not be made"):
        await run_restore(
            dsn=target.uri(),
            storage=backed.storage,
            name=backed.result.name,
            expected_sha256=backed.result.sha256,
            keys=KEY,
            options=missing,
        )
