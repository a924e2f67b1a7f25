"""Leftovers of interrupted runs are collected, as docs/backups.md promises (issue 9,
item 10): a filesystem partial file a killed run left, and an S3 multipart upload it
never completed or aborted, are removed by the next inline backup into that storage
once they are older than any live run can be (DOCKYARD_RUN_DEADLINE plus
DOCKYARD_STALE_PARTIAL_MARGIN).

On the filesystem the test dates a partial file back itself, and checks that a fresh
one (a run in progress) is left alone. On S3 (the test bed's SeaweedFS) the upload's
initiation time is the store's own, so the operator runs with a 20 s deadline and no
margin, and the backup comes once the upload is older than that."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from dockyard.runner.s3 import S3Store
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl
from tests.integration import backup_fixtures
from tests.integration.test_backup_operator import (
    _apply,
    _backup,
    _environment,
    _events,
    _key_secret,
    _wait_phase,
    migrated,
)
from tests.integration.test_inline_runner_boundaries import LENIENT, _s3_backup, own_operator

testbed_s3 = backup_fixtures.testbed_s3
s3_endpoint = backup_fixtures.s3_endpoint
s3_credentials = backup_fixtures.s3_credentials
__all__ = ["migrated", "own_operator"]

THREE_DAYS = 3 * 24 * 3600


@pytest.mark.usefixtures("operator_process")
def test_a_backup_removes_old_partial_files_and_keeps_fresh_ones(
    kubectl: Kubectl, testbed_state: State, namespace: str, backup_root: Path
) -> None:
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    directory = backup_root / namespace / namespace / "killed"
    directory.mkdir(parents=True)
    old = directory / ".abcd1234-1.dkbk.x7Yq.partial"
    old.write_bytes(b"half a dump")
    os.utime(old, (time.time() - THREE_DAYS, time.time() - THREE_DAYS))
    fresh = directory / ".abcd1234-2.dkbk.k9Zp.partial"
    fresh.write_bytes(b"a run in progress")

    _apply(kubectl, namespace, _backup(namespace, "next", backup_root))
    _wait_phase(kubectl, namespace, "next", "Completed")

    assert not old.exists()
    assert fresh.exists()
    removed = _events(kubectl, namespace, "StalePartialsRemoved")
    assert any("1 " in message for message in removed), removed


async def _abandon_upload(endpoint: str, bucket: str, key: str) -> None:
    async with S3Store(bucket, endpoint_url=endpoint, region="us-east-1") as s3:
        await s3.client.create_bucket(Bucket=bucket)
        upload = await s3.client.create_multipart_upload(Bucket=bucket, Key=key)
        await s3.client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 100
        )


async def _uploads(endpoint: str, bucket: str) -> list[str]:
    async with S3Store(bucket, endpoint_url=endpoint, region="us-east-1") as s3:
        listing = await s3.client.list_multipart_uploads(Bucket=bucket)
        return [upload["Key"] for upload in listing.get("Uploads", ())]


def test_a_backup_aborts_abandoned_multipart_uploads(
    kubectl: Kubectl,
    testbed_state: State,
    own_operator: Callable[..., str],
    s3_endpoint: str,
    s3_credentials: None,
    testbed_s3: backup_fixtures.TestbedS3,
) -> None:
    deadline = 20
    namespace = own_operator(
        **LENIENT, DOCKYARD_RUN_DEADLINE=str(deadline), DOCKYARD_STALE_PARTIAL_MARGIN="0"
    )
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    bucket = f"stale-{uuid.uuid4().hex[:10]}"
    asyncio.run(_abandon_upload(s3_endpoint, bucket, f"{namespace}/killed/abcd1234-1.dkbk"))
    abandoned = time.monotonic()
    assert asyncio.run(_uploads(s3_endpoint, bucket))
    refs = testbed_s3.secrets(kubectl, namespace)
    time.sleep(max(0.0, deadline + 2 - (time.monotonic() - abandoned)))
    manifest = _s3_backup(namespace, "next", s3_endpoint, bucket, **refs)
    _apply(kubectl, namespace, manifest)
    _wait_phase(kubectl, namespace, "next", "Completed", timeout=120)

    assert asyncio.run(_uploads(s3_endpoint, bucket)) == []
    removed = _events(kubectl, namespace, "StalePartialsRemoved")
    assert any("1 " in message for message in removed), removed
