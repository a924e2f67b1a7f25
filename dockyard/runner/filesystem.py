"""Artifacts as files under one directory: a PersistentVolumeClaim's mount in the cluster.

Writes go to a hidden sibling (``.<name>.<random>.partial``) opened with ``O_EXCL``;
``commit`` flushes and fsyncs it, then hard-links it to the final name (which fails if
that name exists, so a committed artifact is never replaced), removes the partial name
and fsyncs the directory, so after a crash the artifact is either entirely there under
its name or not there at all. On filesystems without hard links the final step falls
back to an existence check and ``os.replace`` (atomic, but racing writers of one name
are then not refused). A commit that fails after the link (the directory's fsync, the
partial name's removal) removes the final name again: a failed write leaves nothing
under its name.

Every blocking call runs in a worker thread: artifacts are large and the event loop
also serves the operator's handlers.

A store may be given a ``Quota``: each chunk is charged to it before it is written, and a
charge over the quota (``StorageQuotaExceeded``) fails the write, which removes the
partial file, like a full volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO, Protocol

from dockyard.runner.errors import ArtifactExists, ArtifactNotFound, StorageError, StorageFull
from dockyard.runner.storage import (
    READ_CHUNK_BYTES,
    ArtifactReader,
    ArtifactWriter,
    Digest,
    DigestingWriter,
    VerifyingReader,
    check_name,
)

PARTIAL_SUFFIX = ".partial"
# "No room": the file system is full, or the writer's quota is used up.
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_FILE_MODE = 0o600
_DIR_MODE = 0o700
# Hard links are refused by some network and FUSE filesystems; these say so.
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.ENOSYS}


class Quota(Protocol):
    """What the artifacts written through a store may take, counted as they are written."""

    def charge(self, nbytes: int) -> None:
        """Count ``nbytes`` more; raises ``StorageQuotaExceeded`` once they do not fit."""

    def release(self, nbytes: int) -> None:
        """Count ``nbytes`` less: what a removed partial file had been charged."""


class FilesystemStore:
    """Artifacts under ``root``; see the module docstring for the commit protocol."""

    def __init__(self, root: Path | str, *, fsync: bool = True, quota: Quota | None = None) -> None:
        self.root = Path(root).absolute()
        self._fsync = fsync
        self._quota = quota

    def __repr__(self) -> str:
        return f"FilesystemStore({str(self.root)!r})"

    def path(self, name: str) -> Path:
        """Where the committed artifact ``name`` lives."""
        return self.root.joinpath(*check_name(name).split("/"))

    def location(self, name: str) -> str:
        return self.path(name).as_uri()

    @asynccontextmanager
    async def create(self, name: str) -> AsyncIterator[ArtifactWriter]:
        writer = await asyncio.to_thread(_FileWriter.open, name, self.path(name), self._fsync)
        writer.quota = self._quota
        async with writer:
            yield writer

    @asynccontextmanager
    async def open(self, name: str, *, expected_sha256: str) -> AsyncIterator[ArtifactReader]:
        path = self.path(name)
        try:
            file = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise ArtifactNotFound(f"no artifact {name!r} in {self.root}") from None
        except OSError as exc:
            raise StorageError(f"cannot read artifact {name!r}: {exc.strerror}") from None
        digest = Digest()
        try:
            yield VerifyingReader(_chunks(file, name, digest), expected_sha256, digest=digest)
        finally:
            await asyncio.to_thread(file.close)

    async def delete(self, name: str) -> bool:
        path = self.path(name)
        return await asyncio.to_thread(self._delete, path)

    def _delete(self, path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise StorageError(f"cannot delete {path.name}: {exc.strerror}") from None
        if self._fsync:
            _fsync_dir(path.parent)
        return True

    async def exists(self, name: str) -> bool:
        return await asyncio.to_thread(self.path(name).is_file)

    async def size(self, name: str) -> int:
        try:
            stat = await asyncio.to_thread(self.path(name).stat)
        except FileNotFoundError:
            raise ArtifactNotFound(f"no artifact {name!r} in {self.root}") from None
        return stat.st_size

    async def list(self, prefix: str = "") -> list[str]:
        return await asyncio.to_thread(
            lambda: sorted(n for n in self._walk() if n.startswith(prefix))
        )

    async def remove_stale_partials(self, older_than: timedelta) -> int:
        return await asyncio.to_thread(self._remove_stale_partials, older_than.total_seconds())

    def _remove_stale_partials(self, age: float) -> int:
        cutoff = time.time() - age
        removed = 0
        for path in self._partials():
            with contextlib.suppress(FileNotFoundError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
        return removed

    def _walk(self) -> Iterator[str]:
        """Committed artifact names: visible regular files, relative to the root."""
        if not self.root.is_dir():
            return
        for directory, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            base = Path(directory).relative_to(self.root)
            for file in files:
                if not file.startswith("."):
                    yield (base / file).as_posix()

    def _partials(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        for directory, _, files in os.walk(self.root):
            for file in files:
                if file.startswith(".") and file.endswith(PARTIAL_SUFFIX):
                    yield Path(directory) / file


class _FileWriter(DigestingWriter):
    """One partial file on its way to becoming an artifact (blocking parts in threads)."""

    def __init__(self, name: str, final: Path, partial: Path, file: BinaryIO, fsync: bool) -> None:
        super().__init__(name)
        self._final = final
        self._partial = partial
        self._file = file
        self._fsync = fsync
        self.quota: Quota | None = None
        self._charged = 0
        self._published = False

    @classmethod
    def open(cls, name: str, final: Path, fsync: bool) -> _FileWriter:
        try:
            final.parent.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
            partial = final.with_name(f".{final.name}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
        except OSError as exc:
            raise StorageError(f"cannot create artifact {name!r}: {exc.strerror}") from None
        return cls(name, final, partial, os.fdopen(fd, "wb"), fsync)

    async def _write(self, data: bytes) -> None:
        if self.quota is not None:
            self.quota.charge(len(data))
            self._charged += len(data)
        await asyncio.to_thread(self._write_hashed, data)

    def _write_hashed(self, data: bytes) -> None:
        try:
            self._file.write(data)
        except OSError as exc:
            raise _write_error("write", self.name, exc) from None
        self.digest.update(data)

    async def _publish(self) -> str:
        await asyncio.to_thread(self._commit)
        return self._final.as_uri()

    def _commit(self) -> None:
        try:
            self._file.flush()
            if self._fsync:
                os.fsync(self._file.fileno())
            self._file.close()
            _link(self._partial, self._final)
        except FileExistsError:
            raise ArtifactExists(f"an artifact named {self.name!r} already exists") from None
        except OSError as exc:
            raise _write_error("commit", self.name, exc) from None
        try:
            with contextlib.suppress(FileNotFoundError):  # gone already: os.replace
                self._partial.unlink()
            if self._fsync:
                _fsync_dir(self._final.parent)
        except OSError as exc:
            # The run fails, so its artifact must not stay behind under its name: a failed
            # run leaves nothing there (``run_backup``), and the abort that follows gives
            # back the quota charge of a file that is no longer published.
            with contextlib.suppress(OSError):
                self._final.unlink()
            raise _write_error("commit", self.name, exc) from None
        self._published = True

    async def _discard(self) -> None:
        """Close and remove the partial file, and give back what it was charged (at once:
        the run may be cancelled again while the file goes). A file already published
        under its final name keeps its charge."""
        if self.quota is not None and self._charged and not self._published:
            self.quota.release(self._charged)
            self._charged = 0
        await asyncio.to_thread(self._remove_partial)

    def _remove_partial(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()
        # Best effort, like the S3 store's abort: the error that failed the write is the
        # one raised, and a hidden partial left now is one remove_stale_partials collects.
        with contextlib.suppress(OSError):
            self._partial.unlink()


def _write_error(verb: str, name: str, exc: OSError) -> StorageError:
    """``exc``, met while writing artifact ``name``, as the runner reports it."""
    if exc.errno in _FULL:
        return StorageFull(
            f"the backup volume is full: cannot {verb} artifact {name!r} ({exc.strerror}); "
            "the partial artifact was removed. Free space on the volume, or grow it, and "
            "the next attempt can succeed"
        )
    return StorageError(f"cannot {verb} artifact {name!r}: {exc.strerror}")


def _link(partial: Path, final: Path) -> None:
    """Give the fsynced partial file its final name, refusing to replace an artifact.

    The partial name stays when the link took; the commit removes it.
    """
    try:
        os.link(partial, final)
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if final.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(final)) from None
        os.replace(partial, final)


def _fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable (the entry lives in the directory)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def _chunks(file: BinaryIO, name: str, digest: Digest) -> AsyncIterator[bytes]:
    while True:
        try:
            chunk = await asyncio.to_thread(_read_hashed, file, digest)
        except OSError as exc:
            raise StorageError(f"cannot read artifact {name!r}: {exc.strerror}") from None
        if not chunk:
            return
        yield chunk


def _read_hashed(file: BinaryIO, digest: Digest) -> bytes:
    """The next chunk, already fed to ``digest``: one thread hop for both."""
    chunk = file.read(READ_CHUNK_BYTES)
    digest.update(chunk)
    return chunk
