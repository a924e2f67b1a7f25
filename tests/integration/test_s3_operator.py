"""Backups and drills through the operator against a real object store (issue 14, part 4).

The store is the test bed's SeaweedFS: its S3 gateway over TLS on 127.0.0.1, with an
access key the test bed generated and a certificate its CA signed. Each Backup names
its keys (``credentialsSecretRef``) and that CA (``caBundleSecretRef``); the operator
(its own, allowing 127.0.0.0/8 for the endpoint guard) has no S3 identity of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from dockyard.runner.errors import StorageError
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl
from tests.integration import backup_fixtures
from tests.integration.backup_fixtures import TestbedS3
from tests.integration.test_backup_operator import (
    EXPECTED_ROWS,
    _apply,
    _environment,
    _events,
    _get,
    _key_secret,
    _owner_dsn,
    _wait_phase,
    migrated,
)
from tests.integration.test_backup_stores import drilled
from tests.integration.test_inline_runner_boundaries import LENIENT, _s3_backup, own_operator

pytestmark = pytest.mark.usefixtures("crds_installed", "migrated")

testbed_s3 = backup_fixtures.testbed_s3
__all__ = ["migrated", "own_operator"]


async def _make_bucket(s3: TestbedS3, bucket: str) -> None:
    async with s3.store(bucket) as store:
        await store.client.create_bucket(Bucket=bucket)


async def _object_sha256(s3: TestbedS3, bucket: str, key: str) -> str:
    async with s3.store(bucket) as store:
        response = await store.client.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            return hashlib.sha256(await body.read()).hexdigest()


async def _buckets(s3: TestbedS3) -> list[str]:
    async with s3.store("any-bucket") as store:
        listing = await store.client.list_buckets()
        return [b["Name"] for b in listing.get("Buckets", ())]


def _ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status.get("conditions", ()) if c["type"] == "Ready")


def test_a_job_backup_to_s3_completes_and_a_drill_restores_it_from_s3(
    kubectl: Kubectl,
    testbed_state: State,
    own_operator: Callable[..., str],
    testbed_s3: TestbedS3,
) -> None:
    namespace = own_operator(**LENIENT)
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    bucket = f"job-{uuid.uuid4().hex[:10]}"
    asyncio.run(_make_bucket(testbed_s3, bucket))
    refs = testbed_s3.secrets(kubectl, namespace)
    manifest = _s3_backup(namespace, "by-job", testbed_s3.url, bucket, **refs)
    manifest["spec"]["runner"] = "Job"
    _apply(kubectl, namespace, manifest)

    status = _wait_phase(kubectl, namespace, "by-job", "Completed", timeout=180)

    # The object in the bucket is the artifact the status describes.
    prefix = f"s3://{bucket}/"
    assert status["location"].startswith(f"{prefix}{namespace}/by-job/")
    key = status["location"].removeprefix(prefix)
    assert asyncio.run(_object_sha256(testbed_s3, bucket, key)) == status["sha256"]
    assert {t["name"]: t["rows"] for t in status["manifest"]["tables"]} == EXPECTED_ROWS
    # The Job got the keys and the CA from the Secrets, never their values in its spec.
    job = _get(kubectl, namespace, "job", "backup-by-job-1") or {}
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "tenant-s3"
    assert env["AWS_CA_BUNDLE"]["value"].endswith("/ca.crt")
    assert testbed_s3.secret_access_key not in json.dumps(job)
    assert any(c["type"] == "Complete" for c in job["status"]["conditions"])

    # A drill restores that artifact from the bucket into a scratch database and checks it.
    run = drilled(kubectl, namespace, "from-s3", timeout=180)
    assert (run["result"], run["failedChecks"], run["backup"]) == ("Passed", [], "by-job")
    verified = _get(kubectl, namespace, "backup", "by-job") or {}
    conditions = {c["type"]: c for c in verified["status"]["conditions"]}
    assert conditions["Verified"]["status"] == "True"


BLOB_ROWS = 160  # 1 MiB of random bytes each: a dump that takes seconds to upload


async def _seed_blobs(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE blobs (id int PRIMARY KEY, data bytea NOT NULL)")
        # Random bytes do not compress: the artifact is about as large as the table.
        await conn.execute("ALTER TABLE blobs ALTER COLUMN data SET STORAGE EXTERNAL")
        await conn.executemany(
            "INSERT INTO blobs VALUES ($1, $2)",
            [(i, os.urandom(1024 * 1024)) for i in range(BLOB_ROWS)],
        )
    finally:
        await conn.close()


async def _delete_bucket_once_uploading(s3: TestbedS3, bucket: str) -> str:
    """Wait until a multipart upload is in progress in ``bucket``, then delete the bucket
    (uploads and all); the key that was being uploaded."""
    async with s3.store(bucket) as store, asyncio.timeout(120):
        while True:
            listing = await store.client.list_multipart_uploads(Bucket=bucket)
            if uploads := listing.get("Uploads", ()):
                await store.client.delete_bucket(Bucket=bucket)
                return str(uploads[0]["Key"])
            await asyncio.sleep(0.05)


def test_a_bucket_deleted_mid_upload_leaves_no_object_and_a_clear_condition(
    kubectl: Kubectl,
    testbed_state: State,
    own_operator: Callable[..., str],
    testbed_s3: TestbedS3,
) -> None:
    # The failed Backup's finalizer finds no bucket to clean either: bounded at 8 s (the
    # bound is test_backup_finalizer_bound's subject), not the minute the default allows.
    namespace = own_operator(
        **LENIENT,
        DOCKYARD_BACKUP_MAX_ATTEMPTS="2",
        DOCKYARD_BACKUP_RETRY_DELAY="1",
        DOCKYARD_BACKUP_DELETE_TIMEOUT="8",
    )
    _environment(kubectl, testbed_state, namespace)
    asyncio.run(_seed_blobs(_owner_dsn(kubectl, namespace, "shop")))
    _key_secret(kubectl, namespace)
    bucket = f"vanish-{uuid.uuid4().hex[:10]}"
    asyncio.run(_make_bucket(testbed_s3, bucket))
    refs = testbed_s3.secrets(kubectl, namespace)
    deleted: list[str] = []
    watcher = threading.Thread(
        target=lambda: deleted.append(
            asyncio.run(_delete_bucket_once_uploading(testbed_s3, bucket))
        )
    )
    watcher.start()
    _apply(kubectl, namespace, _s3_backup(namespace, "big", testbed_s3.url, bucket, **refs))
    watcher.join(timeout=130)
    assert deleted, "the bucket was never deleted mid-upload"

    status = _wait_phase(kubectl, namespace, "big", "Failed", timeout=120)

    # Each attempt failed on the missing bucket, and said so; nothing was catalogued.
    assert status["attempts"] == 2
    ready = _ready(status)
    assert (ready["status"], ready["reason"]) == ("False", "StorageFailed")
    assert "NoSuch" in ready["message"], ready["message"]
    assert "location" not in status
    assert "sha256" not in status
    failed = _events(kubectl, namespace, "Failed")
    assert any("NoSuch" in message for message in failed), failed
    # No object (partial or whole) is left: the bucket is gone, and nothing remade it.
    assert bucket not in asyncio.run(_buckets(testbed_s3))
    with pytest.raises(StorageError, match="NoSuchBucket"):
        asyncio.run(_list(testbed_s3, bucket))


async def _list(s3: TestbedS3, bucket: str) -> list[str]:
    async with s3.store(bucket) as store:
        return await store.list()
