"""An artifact's frames on their way between the tools and the store.

Backing up, :func:`seal_into` cuts ``zstd``'s output into chunks and writes one sealed
frame per chunk. Restoring or verifying, :func:`preflight` reads the whole artifact
once for its checksum and header, and :func:`decode` streams it again through the
opener into ``zstd -d`` and whatever reads the dump. For a parallel restore,
:func:`spool` reads it only once, into a spool file, and releases the last frame only
once the checksum held. Sealing and opening run in one worker thread of the
operation's own (see the ``runner`` module for why).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import shutil
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

from dockyard.runner.envelope import Header, Opener, Sealer, read_header
from dockyard.runner.errors import ArtifactCorrupt, ArtifactError, SpoolFailed, ToolFailed
from dockyard.runner.keys import Keyring
from dockyard.runner.libpq import base_env
from dockyard.runner.options import Tools
from dockyard.runner.processes import Command, Exit, ProcessChain, first_failure
from dockyard.runner.storage import ArtifactWriter, Store

_T = TypeVar("_T")

_SPOOL_PREFIX: Final = "dockyard-restore-"


def spool_prefix() -> str:
    """The prefix of a parallel restore's spool directory: this host's own (a pod's
    name), so that :func:`remove_stale_spools` removes only what an earlier process of
    this pod left (a container restarted keeps its emptyDir), never another replica's
    on a volume they share. A host name holds no ``+``: one name that begins another
    (``a-b``, ``a-b-c``) does not make its prefix match the other's."""
    return f"{_SPOOL_PREFIX}{socket.gethostname()}+"


def remove_stale_spools(spool_dir: Path) -> list[str]:
    """Remove the spool directories of this host's earlier processes: a decrypted dump
    each, which a crash (SIGKILL, the OOM killer) leaves behind. Call it before this
    process starts a restore; the names of those removed."""
    own, removed = spool_prefix(), []
    with contextlib.suppress(FileNotFoundError):
        for entry in sorted(spool_dir.iterdir()):
            if entry.name.startswith(own) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry.name)
    return removed


class _Worker:
    """One thread for an operation's CPU work (sealing or opening frames), in order."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dockyard-backup")

    async def run(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def __enter__(self) -> _Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        # Nothing is queued once the operation returns; the idle thread just ends.
        self._pool.shutdown(wait=False, cancel_futures=True)


async def seal_into(chain: ProcessChain, sealer: Sealer, writer: ArtifactWriter) -> None:
    """Cut the compressed stream into chunks and write one frame per chunk."""
    size = sealer.chunk_size
    with _Worker() as worker:
        chunk = await chain.read_full(size)
        while True:
            # A full chunk may still be the last one: look one chunk ahead to know.
            following = await chain.read_full(size) if len(chunk) == size else b""
            final = not following
            await writer.write(await worker.run(sealer.seal, chunk, final=final))
            if final:
                return
            chunk = following


async def preflight(
    storage: Store, name: str, expected_sha256: str, keyring: Keyring
) -> tuple[int, Header]:
    """Checksum of the whole artifact, then its header against the keys; reads only."""
    size = 0
    head = bytearray()
    async with storage.open(name, expected_sha256=expected_sha256) as reader:
        async for chunk in reader:
            size += len(chunk)
            if len(head) < 64 * 1024:
                head += chunk[: 64 * 1024]
    header = read_header(bytes(head), keyring)
    if header is None:
        raise ArtifactCorrupt(f"artifact {name!r} is too short to hold a header")
    return size, header


async def decode(
    storage: Store,
    name: str,
    expected_sha256: str,
    keyring: Keyring,
    *,
    into: Command | None,
    tools: Tools,
    error: type[ToolFailed] | type[ArtifactCorrupt],
    hide: str | None = None,
    spool: Path | None = None,
) -> None:
    """Stream the artifact through decryption and ``zstd -d`` into ``into``, or into the
    file ``spool`` (``into`` is then ``None``), or nowhere."""
    output = ["-o", str(spool)] if spool is not None else ["-c"]
    decompress = Command("zstd", [tools.zstd, "-q", "-d", "-f", *output, "-"], env=base_env())
    commands = [decompress] if into is None else [decompress, into]
    cause = commands[-1].name
    stopped_reading = False
    async with ProcessChain(commands, feed_stdin=True, hide=[hide]) as chain:
        opener = Opener(keyring)
        try:
            with _Worker() as worker:
                async with storage.open(name, expected_sha256=expected_sha256) as reader:
                    async for chunk in reader:
                        for plain in await worker.run(opener.feed, chunk):
                            await chain.write(plain)
                # Only now, with the whole artifact's checksum verified, the final frame.
                await chain.write(await worker.run(opener.finish))
            await chain.close_stdin()
        except (BrokenPipeError, ConnectionResetError):
            stopped_reading = True  # a tool stopped reading: its exit status says why
        exits = await chain.wait()
    raise_for(exits, cause_first=cause, error=error)
    if stopped_reading:
        # Every tool exited 0, yet one of them left before the end of the artifact.
        failed = Exit(cause, 0, "stopped reading before the end of the artifact")
        raise _error(error, failed)


async def spool(
    storage: Store, name: str, expected_sha256: str, keyring: Keyring, *, into: Path, tools: Tools
) -> tuple[int, Header]:
    """Read the artifact once: its checksum, and its frames opened and decompressed into
    the file ``into``; its size and header.

    The checksum decides first, as in :func:`preflight`: a frame that fails to open
    stops the spooling, but the rest is still read and hashed, so a flipped byte is
    reported as :class:`ChecksumMismatch`, not as a bad frame. The last frame (without
    which the spool is no complete dump) is released only once the checksum held. When
    zstd fails on an artifact whose checksum held and whose every frame opened, the
    spool is at fault, not the artifact: :class:`SpoolFailed`, which a retry may mend.
    """
    decompress = Command(
        "zstd", [tools.zstd, "-q", "-d", "-f", "-o", str(into), "-"], env=base_env()
    )
    size = 0
    head = bytearray()
    failure: ArtifactError | None = None
    # zstd stopped reading (its exit status says why): the rest is still read and opened.
    stopped = False

    async def put(plain: bytes) -> None:
        nonlocal stopped
        if stopped:
            return
        try:
            await chain.write(plain)
        except (BrokenPipeError, ConnectionResetError):
            stopped = True

    async with ProcessChain([decompress], feed_stdin=True) as chain:
        opener = Opener(keyring)
        with _Worker() as worker:
            async with storage.open(name, expected_sha256=expected_sha256) as reader:
                async for chunk in reader:
                    size += len(chunk)
                    if len(head) < 64 * 1024:
                        head += chunk[: 64 * 1024]
                    if failure is not None:
                        continue
                    try:
                        for plain in await worker.run(opener.feed, chunk):
                            await put(plain)
                    except ArtifactError as exc:
                        failure = exc  # reported once the checksum has had its say
            if failure is not None:
                raise failure
            await put(await worker.run(opener.finish))
        if not stopped:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await chain.close_stdin()
        exits = await chain.wait()
    failed = first_failure(exits, cause_first="zstd")
    if failed is not None:
        raise SpoolFailed(f"the restore's spool could not be written: {failed.describe()}")
    header = read_header(bytes(head), keyring)
    if header is None:
        raise ArtifactCorrupt(f"artifact {name!r} is too short to hold a header")
    return size, header


def raise_for(
    exits: list[Exit], *, cause_first: str, error: type[ToolFailed] | type[ArtifactCorrupt]
) -> None:
    failure = first_failure(exits, cause_first=cause_first)
    if failure is not None:
        raise _error(error, failure)


def _error(error: type[ToolFailed] | type[ArtifactCorrupt], failure: Exit) -> Exception:
    if issubclass(error, ToolFailed):
        return error(failure.name, failure.describe())
    return error(f"the decrypted artifact is not a valid dump: {failure.describe()}")
