"""Artifacts in an S3-compatible object store, through aiobotocore (async botocore).

Why it looks the way it does:

- A multipart upload is S3's own atomic commit: the object does not exist until
  ``CompleteMultipartUpload``, so no temporary key is needed; an aborted writer aborts
  the upload. Completion sends ``If-None-Match: *``, so an existing artifact is never
  replaced (S3 and current S3-compatible stores honour it; a store that ignores the
  header silently replaces, which is documented in ``docs/backups.md``).
- Parts are ``part_size`` bytes (8 MiB by default), doubling every 1,000 parts, so an
  upload of unknown length never hits S3's 10,000-part limit: 8 MiB up to 8 GB, 64 MiB
  past about 120 GB.
- Up to ``concurrency`` parts (4 by default) are uploaded at once while the dump goes
  on, so one part's round trip no longer stalls the pipeline; memory stays bounded at
  ``concurrency + 1`` parts. ``bench/bench_s3_upload.py`` measures it against one part
  at a time.
- Uploads abandoned by a crashed runner are aborted by :meth:`remove_stale_partials`
  (a bucket lifecycle rule for incomplete multipart uploads does the same).
- Credentials come from botocore's chain (environment, web identity, instance
  profile) unless explicit ones are given (an operator-side run passes the Backup's
  Secret's); nothing here logs them, and error messages carry only the S3 error code
  and the object's key.

Use as an async context manager: the HTTP client is created on entry, not at import
or construction time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from aiohttp.abc import AbstractResolver
from botocore.exceptions import BotoCoreError, ClientError

from dockyard.core.breakers import Breakers, Dependency, DependencyUnavailable
from dockyard.runner.endpoints import shown_url
from dockyard.runner.errors import ArtifactExists, ArtifactNotFound, StorageError
from dockyard.runner.storage import (
    READ_CHUNK_BYTES,
    ArtifactReader,
    ArtifactWriter,
    DigestingWriter,
    VerifyingReader,
    check_name,
)

DEFAULT_PART_SIZE = 8 * 1024 * 1024
# Parts of one upload in flight at once (DOCKYARD_S3_UPLOAD_CONCURRENCY).
DEFAULT_CONCURRENCY = 4
# Seconds one request may take, and to open a connection (DOCKYARD_S3_PART_TIMEOUT).
DEFAULT_PART_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0
MIN_PART_SIZE = 5 * 1024 * 1024  # S3's floor for every part but the last
_PARTS_PER_STEP = 1000
_MAX_DOUBLINGS = 9
_NOT_FOUND = {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}
_EXISTS = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


@dataclass(frozen=True, slots=True)
class S3Credentials:
    """Explicit keys (from a Backup's ``credentialsSecretRef``); ``repr`` hides them."""

    access_key_id: str = field(repr=False)
    secret_access_key: str = field(repr=False)
    session_token: str | None = field(default=None, repr=False)


class S3Store:
    """Artifacts as objects under ``prefix`` in ``bucket``.

    ``credentials`` replaces botocore's chain (the caller's own identity);
    ``resolver`` resolves every connection's host (see ``endpoints.GuardedResolver``);
    ``ca_bundle`` is a PEM file of the authorities the endpoint's certificate is checked
    against (botocore's own bundle, or ``AWS_CA_BUNDLE``, when not given);
    ``concurrency`` is how many parts of one upload are sent at once.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        addressing_style: str = "auto",
        credentials: S3Credentials | None = None,
        resolver: AbstractResolver | None = None,
        part_timeout: float = DEFAULT_PART_TIMEOUT,
        breakers: Breakers | None = None,
        attempts: int = 5,
        ca_bundle: str | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"S3 parts must be at least {MIN_PART_SIZE} bytes")
        if concurrency < 1:
            raise ValueError("at least one part must be in flight")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self.concurrency = concurrency
        self._verify = ca_bundle
        # Only configuration: the client (and its connections) is made on entry.
        self._config = AioConfig(
            s3={"addressing_style": addressing_style},
            # botocore retries a request (throttling, 5xx, a dropped connection) this many
            # times in all; the breaker counts what is left after those retries.
            retries={"max_attempts": attempts, "mode": "standard"},
            # Each request (one part of an upload) may go quiet this long; botocore then
            # retries it, within max_attempts. (DOCKYARD_S3_PART_TIMEOUT)
            connect_timeout=min(part_timeout, CONNECT_TIMEOUT),
            read_timeout=part_timeout,
            connector_args={"resolver": resolver} if resolver else None,
        )
        self._endpoint_url = endpoint_url
        # One breaker per endpoint (AWS's by region): an endpoint that does not answer
        # fails the next calls at once instead of each waiting out its retries.
        self._breakers = breakers
        self._breaker_key = (
            shown_url(endpoint_url) if endpoint_url else f"aws:{region or 'default'}"
        )
        self._region = region
        self._credentials = credentials
        self._stack = AsyncExitStack()
        self._client: Any = None

    def __repr__(self) -> str:
        return f"S3Store({self.bucket!r}, prefix={self.prefix!r})"

    async def __aenter__(self) -> S3Store:
        keys = self._credentials
        self._client = await self._stack.enter_async_context(
            get_session().create_client(
                "s3",
                endpoint_url=self._endpoint_url,
                region_name=self._region,
                config=self._config,
                verify=self._verify,
                aws_access_key_id=keys.access_key_id if keys else None,
                aws_secret_access_key=keys.secret_access_key if keys else None,
                aws_session_token=keys.session_token if keys else None,
            )
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()
        self._client = None

    @property
    def client(self) -> Any:
        """The aiobotocore S3 client (only inside ``async with``)."""
        if self._client is None:
            raise RuntimeError("use S3Store inside 'async with'")
        return self._client

    @asynccontextmanager
    async def _call(
        self, what: str, *, missing: str | None = None, exists: str | None = None
    ) -> AsyncIterator[None]:
        """One request to the endpoint: inside its breaker, errors as storage errors."""
        with _translated(what, missing=missing, exists=exists):
            if self._breakers is None:
                yield
                return
            async with self._breakers.guard(Dependency.S3, self._breaker_key):
                yield

    def key(self, name: str) -> str:
        """The object key of artifact ``name``."""
        check_name(name)
        return f"{self.prefix}/{name}" if self.prefix else name

    def location(self, name: str) -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    @asynccontextmanager
    async def create(self, name: str) -> AsyncIterator[ArtifactWriter]:
        key = self.key(name)
        async with self._call(f"cannot start upload of {key}"):
            upload = await self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        async with _MultipartWriter(self, name, upload["UploadId"]) as writer:
            yield writer

    @asynccontextmanager
    async def open(self, name: str, *, expected_sha256: str) -> AsyncIterator[ArtifactReader]:
        key = self.key(name)
        async with self._call(f"cannot read {key}", missing=f"no artifact {name!r} in {self}"):
            response = await self.client.get_object(Bucket=self.bucket, Key=key)
        body = response["Body"]
        try:
            yield VerifyingReader(_chunks(body, key), expected_sha256)
        finally:
            body.close()

    async def delete(self, name: str) -> bool:
        key = self.key(name)
        if not await self.exists(name):
            return False
        async with self._call(f"cannot delete {key}"):
            await self.client.delete_object(Bucket=self.bucket, Key=key)
        return True

    async def exists(self, name: str) -> bool:
        try:
            await self.size(name)
        except ArtifactNotFound:
            return False
        return True

    async def size(self, name: str) -> int:
        key = self.key(name)
        async with self._call(f"cannot inspect {key}", missing=f"no artifact {name!r} in {self}"):
            head = await self.client.head_object(Bucket=self.bucket, Key=key)
        return int(head["ContentLength"])

    async def list(self, prefix: str = "") -> list[str]:
        root = f"{self.prefix}/" if self.prefix else ""
        names: list[str] = []
        async with self._call(f"cannot list {self}"):
            paginator = self.client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=root + prefix):
                names.extend(item["Key"][len(root) :] for item in page.get("Contents", ()))
        return sorted(names)

    async def remove_stale_partials(self, older_than: timedelta) -> int:
        cutoff = datetime.now(UTC) - older_than
        root = f"{self.prefix}/" if self.prefix else ""
        removed = 0
        async with self._call(f"cannot list uploads in {self}"):
            paginator = self.client.get_paginator("list_multipart_uploads")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=root):
                for upload in page.get("Uploads", ()):
                    if upload["Initiated"] < cutoff:
                        await self.client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        removed += 1
        return removed


class _MultipartWriter(DigestingWriter):
    """One multipart upload: parts are cut as the bytes come and sent, up to the store's
    ``concurrency`` at once, while the next part fills."""

    def __init__(self, storage: S3Store, name: str, upload_id: str) -> None:
        super().__init__(name)
        self._storage = storage
        self._key = storage.key(name)
        self._upload_id = upload_id
        self._buffer = bytearray()
        self._cut = 0  # parts cut from the stream so far (each has its number)
        self._sending: set[asyncio.Task[None]] = set()
        self._etags: dict[int, str] = {}

    def _part_size(self) -> int:
        doublings = min(self._cut // _PARTS_PER_STEP, _MAX_DOUBLINGS)
        return self._storage.part_size << doublings

    async def _write(self, data: bytes) -> None:
        await asyncio.to_thread(self.digest.update, data)
        self._buffer += data
        while len(self._buffer) >= self._part_size():
            await self._cut_part(self._part_size())

    async def _cut_part(self, size: int) -> None:
        """Send the next ``size`` bytes as a part, once fewer than ``concurrency`` are out."""
        while len(self._sending) >= self._storage.concurrency:
            await self._settle(asyncio.FIRST_COMPLETED)
        self._cut += 1
        body = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._sending.add(asyncio.create_task(self._send(self._cut, body)))

    async def _settle(self, when: str) -> None:
        """Wait for parts in flight (one, or all); the first failure is raised."""
        done, _ = await asyncio.wait(self._sending, return_when=when)
        self._sending -= done
        for task in done:
            task.result()

    async def _send(self, number: int, body: bytes) -> None:
        async with self._storage._call(f"cannot upload part {number} of {self._key}"):
            response = await self._storage.client.upload_part(
                Bucket=self._storage.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=body,
            )
        self._etags[number] = response["ETag"]

    async def _publish(self) -> str:
        if self._buffer or not self._cut:
            await self._cut_part(len(self._buffer))  # the last part may be small
        if self._sending:
            await self._settle(asyncio.ALL_COMPLETED)
        parts = [{"PartNumber": n, "ETag": self._etags[n]} for n in sorted(self._etags)]
        async with self._storage._call(
            f"cannot complete upload of {self._key}",
            exists=f"an artifact named {self.name!r} already exists",
        ):
            await self._storage.client.complete_multipart_upload(
                Bucket=self._storage.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        return self._storage.location(self.name)

    async def _discard(self) -> None:
        """Stop the parts in flight and abort the upload (its parts are deleted)."""
        self._buffer.clear()
        for task in self._sending:
            task.cancel()
        # Failures are collected, not raised: the first one already was.
        await asyncio.gather(*self._sending, return_exceptions=True)
        self._sending.clear()
        # Best effort: an upload that cannot be aborted now is collected later by
        # remove_stale_partials or the bucket's lifecycle rule.
        with contextlib.suppress(ClientError, BotoCoreError):
            await self._storage.client.abort_multipart_upload(
                Bucket=self._storage.bucket, Key=self._key, UploadId=self._upload_id
            )


async def _chunks(body: Any, key: str) -> AsyncIterator[bytes]:
    while True:
        with _translated(f"cannot read {key}"):
            chunk: bytes = await body.read(READ_CHUNK_BYTES)
        if not chunk:
            return
        yield chunk


@contextlib.contextmanager
def _translated(
    what: str, *, missing: str | None = None, exists: str | None = None
) -> Iterator[None]:
    """botocore's exceptions as storage errors whose text is only codes and keys.

    aiohttp's own come through where botocore does not wrap them: reading an object's
    body (a connection cut mid-body is ``ClientPayloadError``).
    """
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", "")) or "unknown"
        if missing is not None and code in _NOT_FOUND:
            raise ArtifactNotFound(missing) from None
        if exists is not None and code in _EXISTS:
            raise ArtifactExists(exists) from None
        raise StorageError(f"{what}: S3 error {code}") from None
    except (BotoCoreError, aiohttp.ClientError) as exc:
        raise StorageError(f"{what}: {type(exc).__name__}") from None
    except DependencyUnavailable as exc:
        raise StorageError(
            f"{what}: the S3 endpoint is unavailable ({exc.reason}); "
            f"calls to it are refused for {exc.retry_after:.0f}s"
        ) from None
