"""Where artifacts live: the :class:`Store` protocol every backend implements.

A backend stores opaque bytes under names such as ``team-a/shop/nightly-20250101.dkbk``
(see :func:`check_name`) and guarantees three things the runner relies on:

- **Atomic commit.** :meth:`Store.create` gives a writer whose bytes are invisible
  under the final name until :meth:`ArtifactWriter.commit`. A writer left by an
  exception, a cancellation or a crash never produces a partial artifact there; its
  leftovers are collected by :meth:`Store.remove_stale_partials`. Committed artifacts
  are immutable: committing onto an existing name raises :class:`ArtifactExists`, so
  two runners racing on one name cannot leave a status whose sha256 describes the
  other's bytes.
- **Digest of what was stored.** The writer computes the sha256 and size of the bytes
  it wrote, so :class:`StoredArtifact` describes exactly what is on the medium. Both
  backends' writers build on :class:`DigestingWriter`, which keeps these promises once.
- **Verified reads.** :meth:`Store.open` needs the expected sha256; its reader hashes
  what it yields and raises :class:`ChecksumMismatch` at the end when they differ. A
  consumer that must not act on unverified bytes reads the artifact twice: once to
  verify (see :func:`verify_checksum`), then for real.

Backends: :class:`~dockyard.runner.filesystem.FilesystemStore` (a directory,
a PVC in the cluster) and :class:`~dockyard.runner.s3.S3Store`.
:func:`connect_storage` opens either from a URL (``file:///...`` or ``s3://...``).
"""

from __future__ import annotations

import abc
import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Protocol, Self, runtime_checkable
from urllib.parse import unquote, urlsplit

from dockyard.runner.errors import ChecksumMismatch

# Reads are handed out in 256 KiB pieces: large enough that the per-chunk thread hop
# costs nothing, small enough that the worker threads' malloc arenas, which each keep
# what they freed, stay small (1 MiB pieces cost the restore runner 6 MiB more peak RSS).
READ_CHUNK_BYTES = 256 * 1024
MAX_NAME_CHARS = 1024
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_name(name: str) -> str:
    """``name`` itself, or ``ValueError``: ``/``-separated segments of ``[A-Za-z0-9._-]``.

    Segments start with a letter or digit, so no name can climb out of the storage
    root (``..``) or collide with a backend's hidden partial files (``.<name>.partial``).
    """
    segments = name.split("/")
    if not (0 < len(name) <= MAX_NAME_CHARS) or not all(_SEGMENT.fullmatch(s) for s in segments):
        raise ValueError(
            f"invalid artifact name {name!r}: use /-separated segments of letters, digits, "
            ". _ and -, each starting with a letter or digit"
        )
    return name


def check_sha256(digest: str) -> str:
    """``digest`` as 64 lowercase hex digits, or ``ValueError``."""
    normal = digest.strip().lower()
    if not _SHA256.fullmatch(normal):
        raise ValueError("a sha256 must be 64 hexadecimal digits")
    return normal


@dataclass(frozen=True)
class StoredArtifact:
    """A committed artifact: where it is and a digest of exactly the bytes stored."""

    name: str
    location: str
    size: int
    sha256: str


@runtime_checkable
class ArtifactWriter(Protocol):
    """Bytes going to a new artifact; nothing is visible under its name before ``commit``."""

    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> StoredArtifact: ...

    async def abort(self) -> None: ...


@runtime_checkable
class ArtifactReader(Protocol):
    """An artifact's bytes in chunks; the iteration ends by verifying the sha256."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...


@runtime_checkable
class Store(Protocol):
    """A place for artifacts; every method is safe to call from the event loop."""

    def location(self, name: str) -> str:
        """A URL naming the artifact, for statuses and logs (``file://``, ``s3://``)."""
        ...

    def create(self, name: str) -> AbstractAsyncContextManager[ArtifactWriter]:
        """A writer for a new artifact; leaving the block without ``commit`` aborts it."""
        ...

    def open(
        self, name: str, *, expected_sha256: str
    ) -> AbstractAsyncContextManager[ArtifactReader]:
        """A reader that raises :class:`ChecksumMismatch` at the end if the bytes differ."""
        ...

    async def delete(self, name: str) -> bool:
        """Remove the artifact; ``False`` when there was none (deleting is idempotent)."""
        ...

    async def exists(self, name: str) -> bool: ...

    async def size(self, name: str) -> int:
        """Stored size in bytes; :class:`ArtifactNotFound` when absent."""
        ...

    async def list(self, prefix: str = "") -> list[str]:
        """Committed artifact names starting with ``prefix``, sorted."""
        ...

    async def remove_stale_partials(self, older_than: timedelta) -> int:
        """Remove uncommitted leftovers older than ``older_than``; how many were removed."""
        ...


class Digest:
    """sha256 and size of a byte stream, fed off the event loop for large chunks."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes) -> None:
        """Feed ``data`` (blocking; call from a worker thread for large chunks)."""
        self._hash.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class DigestingWriter(abc.ABC):
    """What every backend's writer shares: the digest, one commit or abort, and cleanup.

    A backend supplies ``_write`` (which feeds :attr:`digest`), ``_publish`` (make the
    bytes the artifact, return its location) and ``_discard``. ``async with`` the writer
    aborts it on the way out unless it was committed, shielded so that a cancellation
    cannot leave its leftovers half-removed.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.digest = Digest()
        self._done = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.shield(self.abort())

    async def write(self, data: bytes) -> None:
        self._check_open()
        await self._write(data)

    async def commit(self) -> StoredArtifact:
        self._check_open()
        location = await self._publish()
        self._done = True
        return StoredArtifact(
            name=self.name,
            location=location,
            size=self.digest.size,
            sha256=self.digest.hexdigest(),
        )

    async def abort(self) -> None:
        """Remove what was written; nothing once committed. Safe to repeat."""
        if self._done:
            return
        self._done = True
        await self._discard()

    def _check_open(self) -> None:
        if self._done:
            raise RuntimeError("this writer is already committed or aborted")

    @abc.abstractmethod
    async def _write(self, data: bytes) -> None: ...

    @abc.abstractmethod
    async def _publish(self) -> str: ...

    @abc.abstractmethod
    async def _discard(self) -> None: ...


class VerifyingReader:
    """Wraps a backend's raw chunks: hashes each one and checks the total at the end.

    A backend that reads in a worker thread may hash there too (one thread hop per
    chunk instead of two): it passes the ``digest`` its ``chunks`` already feed.
    """

    def __init__(
        self, chunks: AsyncIterator[bytes], expected_sha256: str, *, digest: Digest | None = None
    ) -> None:
        self._chunks = chunks
        self._expected = check_sha256(expected_sha256)
        self._hashed_by_source = digest is not None
        self.digest = digest or Digest()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._verified()

    async def _verified(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            if not self._hashed_by_source:
                # hashlib releases the GIL on large buffers: a worker thread really
                # runs beside the loop.
                await asyncio.to_thread(self.digest.update, chunk)
            yield chunk
        actual = self.digest.hexdigest()
        if actual != self._expected:
            raise ChecksumMismatch(self._expected, actual)


async def verify_checksum(storage: Store, name: str, *, expected_sha256: str) -> int:
    """Read the whole artifact once, writing nothing; its size, or :class:`ChecksumMismatch`."""
    async with storage.open(name, expected_sha256=expected_sha256) as reader:
        size = 0
        async for chunk in reader:
            size += len(chunk)
    return size


@asynccontextmanager
async def connect_storage(
    url: str,
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str | None = None,
    s3_part_timeout: float = 60.0,
    s3_concurrency: int = 4,
) -> AsyncIterator[Store]:
    """The storage a URL names: ``file:///abs/path`` (or a plain path), ``s3://bucket/prefix``.

    S3 credentials come from botocore's usual chain (``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY``, a web identity token, an instance profile), never
    from the URL; a private authority's bundle from ``AWS_CA_BUNDLE``.
    """
    parts = urlsplit(url)
    if parts.scheme == "s3":
        from dockyard.runner.s3 import S3Store

        if not parts.netloc or parts.username or parts.password:
            raise ValueError("an S3 storage URL is s3://bucket[/prefix], without credentials")
        async with S3Store(
            parts.netloc,
            prefix=unquote(parts.path.strip("/")),
            endpoint_url=s3_endpoint_url,
            region=s3_region,
            part_timeout=s3_part_timeout,
            concurrency=s3_concurrency,
        ) as s3:
            yield s3
        return
    from dockyard.runner.filesystem import FilesystemStore

    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError("a file:// storage URL must name a local path (file:///path)")
        path = Path(unquote(parts.path))
    elif parts.scheme == "":
        path = Path(url)
    else:
        raise ValueError(f"unsupported storage URL scheme {parts.scheme!r}: use file:// or s3://")
    if not path.is_absolute():
        raise ValueError("a filesystem storage path must be absolute")
    yield FilesystemStore(path)
