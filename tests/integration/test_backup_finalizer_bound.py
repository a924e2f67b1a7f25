"""A Backup whose storage is gone is deleted within a bound, with a condition and an
Event saying what was left behind (issue 9, item 10), instead of its finalizer
retrying forever and the object never going away.

The storage: a bucket of the test bed's S3 (SeaweedFS, see ``backup_fixtures``), deleted after
the backup completed. The operator runs with DOCKYARD_BACKUP_DELETE_TIMEOUT=8."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

from dockyard.runner.s3 import S3Store
from dockyard.testbed.cluster import State
from tests.conftest import Kubectl, wait_for
from tests.integration import backup_fixtures
from tests.integration.test_backup_operator import (
    _apply,
    _environment,
    _events,
    _get,
    _key_secret,
    _wait_phase,
    migrated,
)
from tests.integration.test_inline_runner_boundaries import LENIENT, _s3_backup, own_operator

testbed_s3 = backup_fixtures.testbed_s3
s3_endpoint = backup_fixtures.s3_endpoint
s3_credentials = backup_fixtures.s3_credentials
__all__ = ["migrated", "own_operator"]


async def _bucket(endpoint: str, bucket: str, *, delete: bool) -> None:
    async with S3Store(bucket, endpoint_url=endpoint, region="us-east-1") as s3:
        if not delete:
            await s3.client.create_bucket(Bucket=bucket)
            return
        for key in await s3.list():
            await s3.client.delete_object(Bucket=bucket, Key=key)
        await s3.client.delete_bucket(Bucket=bucket)


def test_a_backup_whose_bucket_is_gone_is_deleted_within_the_bound_with_an_event(
    kubectl: Kubectl,
    testbed_state: State,
    own_operator: Callable[..., str],
    s3_endpoint: str,
    s3_credentials: None,
    testbed_s3: backup_fixtures.TestbedS3,
) -> None:
    namespace = own_operator(**LENIENT, DOCKYARD_BACKUP_DELETE_TIMEOUT="8")
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    refs = testbed_s3.secrets(kubectl, namespace)
    bucket = f"gone-{uuid.uuid4().hex[:10]}"
    asyncio.run(_bucket(s3_endpoint, bucket, delete=False))
    manifest = _s3_backup(namespace, "orphan", s3_endpoint, bucket, **refs)
    _apply(kubectl, namespace, manifest)
    location = _wait_phase(kubectl, namespace, "orphan", "Completed", timeout=120)["location"]
    asyncio.run(_bucket(s3_endpoint, bucket, delete=True))

    started = time.monotonic()
    kubectl("delete", "backup", "orphan", "-n", namespace, "--wait=false")

    def retrying() -> dict[str, Any] | None:
        status = (_get(kubectl, namespace, "backup", "orphan") or {}).get("status") or {}
        found = [c for c in status.get("conditions", ()) if c["type"] == "ArtifactDeleted"]
        return found[0] if found else None

    # While it retries, the Backup says why it is still there.
    condition = wait_for(retrying, timeout=30)
    assert isinstance(condition, dict)
    assert (condition["status"], condition["reason"]) == ("False", "DeletionFailed")
    assert "NoSuchBucket" in condition["message"]
    wait_for(lambda: _get(kubectl, namespace, "backup", "orphan") is None, timeout=90)

    assert time.monotonic() - started < 90
    given_up = _events(kubectl, namespace, "ArtifactNotDeleted")
    assert any(location in message for message in given_up), given_up
    assert any("NoSuchBucket" in message for message in given_up), given_up
