"""Inline runs keep the boundaries a runner Job has (issue 9, item 8).

Each test runs an operator of its own (a namespace pattern the session's operator does
not watch) whose process holds no S3 credentials of its own: no AWS_* variables, no
shared config file, no instance metadata. So an inline S3 backup can only work with
the credentials its Backup names (``credentialsSecretRef``).

The endpoint guard (SSRF): a "strict" operator runs with the default settings (https
only, public addresses only); a "lenient" one allows 127.0.0.0/8, where the test bed's
S3 (SeaweedFS, https) listens. Private and link-local addresses are only
ever named by literal IPs: the guard refuses them before any connection is tried.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dockyard.runner.s3 import S3Store
from dockyard.testbed.cluster import State
from tests.conftest import (
    OPERATOR_LOGS,
    SESSION_ID,
    Kubectl,
    backup_settings,
    remove_backup_store,
    start_operator,
    stop_operator,
    wait_for,
)
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

pytestmark = pytest.mark.usefixtures("crds_installed", "migrated")

testbed_s3 = backup_fixtures.testbed_s3
s3_endpoint = backup_fixtures.s3_endpoint
s3_credentials = backup_fixtures.s3_credentials
__all__ = ["migrated"]


def _operator_env(testbed_env: dict[str, str], root: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in testbed_env.items() if not k.startswith("AWS_")}
    env.update(
        {
            # No ambient S3 identity at all: no keys, no files, no instance metadata.
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "AWS_EC2_METADATA_DISABLED": "true",
            "DOCKYARD_RECONCILE_INTERVAL": "3",
            **backup_settings(root),
            **settings,
        }
    )
    return env


@pytest.fixture
def own_operator(
    kubectl: Kubectl,
    testbed_env: dict[str, str],
    backup_root: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., str]]:
    """Starts an operator with the given settings; returns the namespace it watches."""
    started: list[tuple[subprocess.Popen[bytes], str]] = []

    def start(**settings: str) -> str:
        namespace = f"inline-{SESSION_ID}-{uuid.uuid4().hex[:6]}"
        kubectl("create", "namespace", namespace)
        log = tmp_path_factory.mktemp("operator") / "operator.log"
        OPERATOR_LOGS.append(log)
        proc = start_operator(namespace, _operator_env(testbed_env, backup_root, **settings), log)
        started.append((proc, namespace))
        time.sleep(0.5)
        assert proc.poll() is None, log.read_text()
        return namespace

    yield start
    for proc, namespace in started:
        kubectl(
            "delete", "environments,backups", "--all", "-n", namespace, "--timeout=60s", check=False
        )
        stop_operator(proc)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


LENIENT = {
    "DOCKYARD_S3_ALLOWED_NETWORKS": json.dumps(["127.0.0.0/8", "::1/128"]),
}


def _s3_backup(namespace: str, name: str, endpoint: str, bucket: str, **s3: Any) -> dict[str, Any]:
    storage = {**_store_storage(endpoint, bucket), **s3}
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Backup",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "environmentRef": {"name": "shop"},
            "storage": {"s3": storage},
            "encryption": {"keySecretRef": {"name": "backup-key", "key": "key"}},
        },
    }


def _ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status.get("conditions", ()) if c["type"] == "Ready")


async def _bucket(endpoint: str, bucket: str, *, create: bool) -> list[str]:
    async with S3Store(bucket, endpoint_url=endpoint, region="us-east-1") as s3:
        if create:
            await s3.client.create_bucket(Bucket=bucket)
        return await s3.list()


# -- credentials ---------------------------------------------------------------------------


def test_an_inline_s3_backup_uses_the_credentials_its_backup_names(
    kubectl: Kubectl,
    testbed_state: State,
    own_operator: Callable[..., str],
    testbed_s3: backup_fixtures.TestbedS3,
    s3_credentials: None,
) -> None:
    namespace = own_operator(**LENIENT)
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    bucket = f"tenant-{uuid.uuid4().hex[:10]}"
    asyncio.run(_bucket(testbed_s3.url, bucket, create=True))
    refs = testbed_s3.secrets(kubectl, namespace)
    manifest = _s3_backup(namespace, "to-s3", testbed_s3.url, bucket, **refs)
    _apply(kubectl, namespace, manifest)

    def settled() -> dict[str, Any] | None:
        status = ((_get(kubectl, namespace, "backup", "to-s3") or {}).get("status")) or {}
        done = status.get("phase") in {"Completed", "Failed"} or status.get("attempts", 0) > 1
        return status if done else None

    status = wait_for(settled, timeout=120)
    assert isinstance(status, dict)
    assert status["phase"] == "Completed", status.get("message")
    assert status["location"].startswith(f"s3://{bucket}/{namespace}/to-s3/")
    assert asyncio.run(_bucket(testbed_s3.url, bucket, create=False))
    # The status names the Secret's keys nowhere.
    assert testbed_s3.secret_access_key not in json.dumps(status)


def _with_an_identity(testbed_s3: backup_fixtures.TestbedS3) -> dict[str, str]:
    """Settings that give an operator a cloud identity of its own, as a workload identity
    or an instance profile would: the test bed's S3 keys, which reach every bucket."""
    return {
        **LENIENT,
        "AWS_ACCESS_KEY_ID": testbed_s3.access_key_id,
        "AWS_SECRET_ACCESS_KEY": testbed_s3.secret_access_key,
        "AWS_CA_BUNDLE": testbed_s3.ca_bundle,
    }


def test_an_inline_backup_to_its_own_bucket_without_a_secret_is_refused(
    kubectl: Kubectl,
    testbed_state: State,
    own_operator: Callable[..., str],
    testbed_s3: backup_fixtures.TestbedS3,
    s3_credentials: None,
) -> None:
    """The attack: a tenant names another tenant's bucket and no Secret, hoping the
    operator writes there (and lists and aborts its uploads) with its own identity."""
    namespace = own_operator(**_with_an_identity(testbed_s3))
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    bucket = f"victim-{uuid.uuid4().hex[:10]}"
    asyncio.run(_bucket(testbed_s3.url, bucket, create=True))
    _apply(kubectl, namespace, _s3_backup(namespace, "as-operator", testbed_s3.url, bucket))

    status = _wait_phase(kubectl, namespace, "as-operator", "Failed", timeout=60)

    assert status["attempts"] == 1
    assert _ready(status)["reason"] == "StorageRefused"
    assert "credentialsSecretRef" in status["message"]
    assert asyncio.run(_bucket(testbed_s3.url, bucket, create=False)) == []


@contextmanager
def _store_on_a_bucket(
    kubectl: Kubectl, testbed_s3: backup_fixtures.TestbedS3, namespace: str, **spec: Any
) -> Iterator[tuple[str, str]]:
    """A BackupStore on a new bucket of the test bed's S3 (no credentials Secret: the
    operator's identity reaches it), its key in a namespace of its own; yields the
    store's and the bucket's names. Removed afterwards, with ``namespace``'s Backups."""
    store, keys = f"store-{uuid.uuid4().hex[:6]}", f"dy-keys-{uuid.uuid4().hex[:6]}"
    bucket = f"platform-{uuid.uuid4().hex[:10]}"
    asyncio.run(_bucket(testbed_s3.url, bucket, create=True))
    kubectl("create", "namespace", keys)
    try:
        _key_secret(kubectl, keys, "store-key")
        manifest = {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "BackupStore",
            "metadata": {"name": store},
            "spec": {
                "storage": {"s3": _store_storage(testbed_s3.url, bucket)},
                "encryption": {"keySecretRef": {"name": "store-key", "key": "key"}},
                "secretNamespace": keys,
                **spec,
            },
        }
        kubectl("apply", "-f", "-", input=json.dumps(manifest))
        yield store, bucket
    finally:
        kubectl("delete", "backups", "--all", "-n", namespace, "--timeout=60s", check=False)
        remove_backup_store(kubectl, store)
        kubectl("delete", "namespace", keys, "--wait=false", check=False)


def _store_storage(endpoint: str, bucket: str) -> dict[str, Any]:
    return {"bucket": bucket, "endpoint": endpoint, "region": "us-east-1"}


def test_an_inline_backup_to_its_stores_bucket_uses_the_operators_identity(
    kubectl: Kubectl,
    testbed_state: State,
    own_operator: Callable[..., str],
    testbed_s3: backup_fixtures.TestbedS3,
    s3_credentials: None,
) -> None:
    """A bucket an administrator chose (a BackupStore's storage, with no Secret) is the
    one place an inline run reaches with the operator's own identity."""
    namespace = own_operator(**_with_an_identity(testbed_s3))
    _environment(kubectl, testbed_state, namespace)
    with _store_on_a_bucket(kubectl, testbed_s3, namespace) as (store, bucket):
        backup = {
            "apiVersion": "dockyard.io/v1alpha1",
            "kind": "Backup",
            "metadata": {"name": "to-store", "namespace": namespace},
            "spec": {"environmentRef": {"name": "shop"}, "storeRef": {"name": store}},
        }
        _apply(kubectl, namespace, backup)

        status = _wait_phase(kubectl, namespace, "to-store", "Completed", timeout=120)

        assert status["location"].startswith(f"s3://{bucket}/{namespace}/to-store/")
        assert asyncio.run(_bucket(testbed_s3.url, bucket, create=False))


def test_a_namespace_the_store_does_not_serve_cannot_borrow_its_bucket(
    kubectl: Kubectl,
    testbed_state: State,
    own_operator: Callable[..., str],
    testbed_s3: backup_fixtures.TestbedS3,
    s3_credentials: None,
) -> None:
    """The attack: a tenant whose namespace a store does not select copies the store's
    storage into its Backup and names the store, with a key of its own (so nothing is
    filled), hoping for the operator's identity on the store's bucket."""
    namespace = own_operator(DOCKYARD_BACKUP_MAX_ATTEMPTS="1", **_with_an_identity(testbed_s3))
    _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    selector = {"matchLabels": {"test.dockyard.io/tier": "gold"}}
    with _store_on_a_bucket(kubectl, testbed_s3, namespace, namespaceSelector=selector) as (
        store,
        bucket,
    ):
        backup = _s3_backup(namespace, "borrowed", testbed_s3.url, bucket)
        backup["spec"]["storeRef"] = {"name": store}
        _apply(kubectl, namespace, backup)

        status = _wait_phase(kubectl, namespace, "borrowed", "Failed", timeout=60)

        assert status["attempts"] == 1
        assert _ready(status)["reason"] == "StoreNotAllowed"
        assert f"BackupStore {store} does not serve namespace {namespace}" in status["message"]
        assert "test.dockyard.io/tier=gold" in status["message"]
        assert asyncio.run(_bucket(testbed_s3.url, bucket, create=False)) == []
        # Deleting it is not refused: its finalizer (which may always clean the store of
        # what the Backup put there) lets it go at once.
        kubectl("delete", "backup", "borrowed", "-n", namespace, "--timeout=30s")


# -- the endpoint guard --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "words"),
    [
        ("http://s3.example.com", "https"),
        ("https://127.0.0.1:9", "127.0.0.1"),
        ("https://localhost:9", "127.0.0.1"),
        ("https://10.20.30.40", "10.20.30.40"),
        ("https://192.168.1.20:9000", "192.168.1.20"),
        ("https://169.254.169.254", "169.254.169.254"),
        ("https://[::1]:9", "::1"),
    ],
    ids=["http", "loopback", "localhost", "private-10", "private-192", "link-local", "ipv6-loop"],
)
def test_an_endpoint_the_settings_do_not_allow_is_refused_before_connecting(
    kubectl: Kubectl, own_operator: Callable[..., str], endpoint: str, words: str
) -> None:
    namespace = own_operator()
    _key_secret(kubectl, namespace)
    _apply(kubectl, namespace, _s3_backup(namespace, "ssrf", endpoint, "tenant-bucket"))

    # Refused at once: no connection is tried (a 10.x address would take minutes to fail).
    status = _wait_phase(kubectl, namespace, "ssrf", "Failed", timeout=30)

    assert status["attempts"] == 1
    assert _ready(status)["reason"] == "StorageRefused"
    assert words in status["message"]
    assert "DOCKYARD_S3_" in status["message"]
    failed = _events(kubectl, namespace, "Failed")
    assert any(words in message for message in failed), failed


def test_a_loopback_endpoint_is_refused_unless_its_network_is_allowed(
    kubectl: Kubectl, own_operator: Callable[..., str], s3_endpoint: str, s3_credentials: None
) -> None:
    bucket = f"loop-{uuid.uuid4().hex[:10]}"
    asyncio.run(_bucket(s3_endpoint, bucket, create=True))
    # https, as the default settings want, but on loopback: refused.
    namespace = own_operator()
    _key_secret(kubectl, namespace)
    _apply(kubectl, namespace, _s3_backup(namespace, "loop", s3_endpoint, bucket))

    status = _wait_phase(kubectl, namespace, "loop", "Failed", timeout=30)

    assert _ready(status)["reason"] == "StorageRefused"
    assert "127.0.0.1" in status["message"]
    assert asyncio.run(_bucket(s3_endpoint, bucket, create=False)) == []


# -- the run deadline ----------------------------------------------------------------------


def test_an_inline_run_past_the_run_deadline_fails_with_that_reason(
    kubectl: Kubectl, testbed_state: State, own_operator: Callable[..., str], backup_root: Path
) -> None:
    namespace = own_operator(DOCKYARD_RUN_DEADLINE="4")
    dsn = _environment(kubectl, testbed_state, namespace)
    _key_secret(kubectl, namespace)
    manifest = _s3_backup(namespace, "stuck", "", "unused")
    manifest["spec"]["storage"] = {"filesystem": {"path": str(backup_root / namespace)}}

    async def hold_a_lock_while_it_runs() -> dict[str, Any]:
        # pg_dump waits for this lock (two minutes by its own lock timeout): far past
        # the deadline of four seconds.
        conn = await asyncpg.connect(dsn)
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")
                _apply(kubectl, namespace, manifest)
                return await asyncio.to_thread(
                    _wait_phase, kubectl, namespace, "stuck", "Failed", 60
                )
        finally:
            await conn.close()

    started = time.monotonic()
    status = asyncio.run(hold_a_lock_while_it_runs())

    assert time.monotonic() - started < 60
    assert _ready(status)["reason"] == "DeadlineExceeded"
    assert "DOCKYARD_RUN_DEADLINE" in status["message"]
    assert not list((backup_root / namespace).glob("**/*.dkbk"))
