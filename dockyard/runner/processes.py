"""Chains of external tools (``pg_dump | zstd``, ``zstd -d | pg_restore``) run from asyncio.

The tools are connected to each other by OS pipes, so the bulk of the data flows
between them without passing through Python and the kernel applies backpressure;
only the chain's first stdin and last stdout are asyncio streams, bounded by
``stream_limit``. Each tool's stderr is drained concurrently (a chatty tool must never
block on a full pipe) into a bounded tail kept for the error message.

:class:`ProcessChain` is an async context manager: leaving it by an exception or a
cancellation stops every tool still running (SIGTERM, which makes ``pg_dump`` and
``pg_restore`` cancel their queries on the server, then SIGKILL after a grace period)
and reaps it, so no child outlives the operation that started it. When the runner
itself is killed, the chain still unwinds: its pipes close, and the tools stop on
EPIPE or end of input.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from dockyard.core.redaction import redact
from dockyard.runner.errors import ToolFailed
from dockyard.runner.libpq import base_env
from dockyard.runner.server_text import without_row_values

STDERR_TAIL_BYTES = 8 * 1024
TERMINATE_GRACE_SECONDS = 5.0
_MESSAGE_CHARS = 600


@dataclass(frozen=True)
class Command:
    """One tool of a chain: a display name, its argv, and its whole environment."""

    name: str
    argv: Sequence[str]
    env: Mapping[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Exit:
    """How one tool ended."""

    name: str
    returncode: int
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def broken_pipe(self) -> bool:
        """It stopped because its neighbour did: a consequence, not a cause."""
        return self.returncode == -signal.SIGPIPE or "broken pipe" in self.stderr.lower()

    def describe(self) -> str:
        """One line: which tool, how it ended, and the end of what it said."""
        how = (
            f"was killed by signal {-self.returncode}"
            if self.returncode < 0
            else f"exited with status {self.returncode}"
        )
        said = " ".join(self.stderr.split())
        if len(said) > _MESSAGE_CHARS:
            said = "..." + said[-_MESSAGE_CHARS:]
        return f"{self.name} {how}" + (f": {said}" if said else "")


class ProcessChain:
    """Tools started in order, each one's stdout piped into the next one's stdin."""

    def __init__(
        self,
        commands: Sequence[Command],
        *,
        feed_stdin: bool = False,
        read_stdout: bool = False,
        stream_limit: int = 4 * 1024 * 1024,
        hide: Sequence[str | None] = (),
    ) -> None:
        if not commands:
            raise ValueError("a chain needs at least one command")
        self._commands = list(commands)
        self._feed_stdin = feed_stdin
        self._read_stdout = read_stdout
        self._limit = stream_limit
        self._hide = tuple(hide)
        self._procs: list[asyncio.subprocess.Process] = []
        self._tails: list[bytearray] = []
        self._drains: list[asyncio.Task[None]] = []
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader | None = None

    async def __aenter__(self) -> ProcessChain:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is not None or any(p.returncode is None for p in self._procs):
                # Shielded: a cancelled caller must still wait for its children to be reaped.
                await asyncio.shield(self.stop())
        finally:
            self._release()

    def _release(self) -> None:
        """Close every process's transport now, while the loop runs.

        asyncio closes one only when its process has exited *and* all its pipes have
        been seen to close; one that is left to the garbage collector instead, after
        ``asyncio.run`` ended (``dockyard restore-run`` failing on a checksum), logs
        "RuntimeError: Event loop is closed" as the command's last line on stderr.
        The tools are reaped by now, so this only releases pipes.
        """
        for proc in self._procs:
            transport = getattr(proc, "_transport", None)  # no public close() on Process
            if transport is not None:
                transport.close()

    async def _start(self) -> None:
        upstream: int | None = None  # read end of the pipe from the previous tool
        last = len(self._commands) - 1
        for i, command in enumerate(self._commands):
            first_stdin = subprocess.PIPE if self._feed_stdin else subprocess.DEVNULL
            stdin = first_stdin if i == 0 else upstream
            pipe_read, pipe_write = os.pipe() if i < last else (None, None)
            last_stdout = subprocess.PIPE if self._read_stdout else subprocess.DEVNULL
            stdout = pipe_write if i < last else last_stdout
            try:
                proc = await asyncio.create_subprocess_exec(
                    *command.argv,
                    stdin=stdin,
                    stdout=stdout,
                    stderr=subprocess.PIPE,
                    env=dict(command.env) if command.env is not None else None,
                    limit=self._limit,
                )
            except BaseException as exc:
                _close(pipe_read)
                if isinstance(exc, FileNotFoundError):
                    missing = f"{command.name} is not installed ({command.argv[0]!r} not found)"
                    raise ToolFailed(command.name, missing) from None
                raise
            finally:
                # The child holds its own copies; ours would keep the pipes open forever.
                _close(upstream, pipe_write)
            upstream = pipe_read
            self._procs.append(proc)
            tail = bytearray()
            self._tails.append(tail)
            self._drains.append(asyncio.create_task(_drain(proc.stderr, tail)))
        self.stdin = self._procs[0].stdin
        self.stdout = self._procs[-1].stdout

    async def write(self, data: bytes) -> None:
        """Send ``data`` to the first tool, waiting while its pipe is full."""
        if self.stdin is None:
            raise RuntimeError("this chain's stdin is not fed from Python")
        self.stdin.write(data)
        await self.stdin.drain()

    async def close_stdin(self) -> None:
        """End the first tool's input (its EOF)."""
        if self.stdin is not None:
            self.stdin.close()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                await self.stdin.wait_closed()

    async def read_full(self, size: int) -> bytes:
        """Exactly ``size`` bytes from the last tool, fewer only at its end of output."""
        if self.stdout is None:
            raise RuntimeError("this chain's stdout is not read from Python")
        try:
            return await self.stdout.readexactly(size)
        except asyncio.IncompleteReadError as short:
            return short.partial

    async def wait(self) -> list[Exit]:
        """Wait for every tool to end; how each ended, in chain order."""
        codes = [await proc.wait() for proc in self._procs]
        await asyncio.gather(*self._drains, return_exceptions=True)
        return [
            Exit(command.name, code, _shown(bytes(tail).decode(errors="replace"), self._hide))
            for command, code, tail in zip(self._commands, codes, self._tails, strict=True)
        ]

    async def stop(self) -> None:
        """Stop every tool still running, politely then not, and reap them all."""
        running = [p for p in self._procs if p.returncode is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        try:
            async with asyncio.timeout(TERMINATE_GRACE_SECONDS):
                await asyncio.gather(*(p.wait() for p in running))
        except TimeoutError:
            for proc in running:
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.gather(*(p.wait() for p in running))
        if self.stdin is not None:
            self.stdin.close()
        # Read what is left in the pipes to their end: only then does asyncio release
        # the transports. The tools are gone, so the ends come at once.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TERMINATE_GRACE_SECONDS):
                await self._discard_output()
        for task in self._drains:
            task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)

    async def _discard_output(self) -> None:
        if self.stdout is not None:
            while await self.stdout.read(64 * 1024):
                pass
        await asyncio.gather(*self._drains, return_exceptions=True)


def _shown(stderr: str, hide: Sequence[str | None]) -> str:
    """What of a tool's stderr may go into an error: no password, no row values."""
    return without_row_values(redact(stderr, *hide))


def first_failure(exits: Sequence[Exit], *, cause_first: str) -> Exit | None:
    """The failure to report: ``cause_first``'s if it failed, else the first real one.

    A tool that died of a broken pipe only tells that its neighbour stopped reading;
    it is reported only when no other tool failed.
    """
    failed = [e for e in exits if not e.ok]
    if not failed:
        return None
    for e in failed:
        if e.name == cause_first:
            return e
    real = [e for e in failed if not e.broken_pipe]
    return (real or failed)[0]


async def _drain(stream: asyncio.StreamReader | None, tail: bytearray) -> None:
    if stream is None:
        return
    while chunk := await stream.read(64 * 1024):
        tail += chunk
        if len(tail) > STDERR_TAIL_BYTES:
            del tail[: len(tail) - STDERR_TAIL_BYTES]


def _close(*fds: int | None) -> None:
    for fd in fds:
        if fd is not None and fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


async def tool_version(binary: str) -> str:
    """The version a PostgreSQL tool reports, e.g. ``"15.18"`` from ``pg_dump --version``.

    The tool gets the same bare environment as a real run: the runner's own holds the
    source DSN, the backup key and the storage's keys, none of which it needs.
    """
    try:
        proc = await asyncio.create_subprocess_exec(
            binary,
            "--version",
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=base_env(),
        )
    except FileNotFoundError:
        raise ToolFailed(binary, f"{binary} is not installed") from None
    try:
        out, _ = await proc.communicate()
    finally:
        # Cancelled (the run it serves failed meanwhile): the tool is stopped and reaped
        # while the loop runs, not left for the loop's end to find still running.
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
        transport = getattr(proc, "_transport", None)  # no public close() on Process
        if transport is not None:
            transport.close()
    words = out.decode(errors="replace").split()
    # "pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)": the first word with a digit.
    return next((w for w in words if w[:1].isdigit()), " ".join(words) or "unknown")
