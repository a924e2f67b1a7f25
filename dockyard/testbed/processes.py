"""The test bed's processes: how each is started, recognised, waited for and stopped.

Every component module (``controlplane``, ``nodes``, ``postgres``, ``redis``, ``oidc``)
starts its processes through one :class:`Launcher`, which logs each to its own file in
the test bed's directory and keeps a :class:`ProcessRecord` of it for the state file.
A record holds the pid with its kernel start time, so stopping never signals a recycled
pid that now belongs to someone else.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockyard.testbed import build
from dockyard.testbed.config import TestbedConfig


class TestbedError(RuntimeError):
    """The test bed could not be started; the message says which component and why."""


@dataclass
class ProcessRecord:
    """One process the test bed started: its pid, and its start time to recognise it.

    ``argv`` and ``user`` are how it was started, so a fault test can start it again
    after killing it (``faults.crashed``).
    """

    name: str
    pid: int
    started: int
    log: str
    argv: list[str] = field(default_factory=list)
    user: str | None = None

    def alive(self) -> bool:
        return start_time(self.pid) == self.started


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may hold spaces and parentheses; fields resume after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[19])


def stop(processes: list[ProcessRecord], progress: build.Progress) -> None:
    """Stop ``processes``: SIGTERM, then SIGKILL after 10 s, each one's process group."""
    # Reverse start order, one at a time: clients go before the servers they talk to, so
    # nothing hangs in its shutdown waiting for a peer that is already gone.
    for record in reversed(processes):
        if not record.alive():
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while record.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if record.alive():
            progress(f"{record.name} (pid {record.pid}) still running after SIGTERM; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(record.pid, signal.SIGKILL)
    for record in processes:
        # Reap the children of this very process, when it was the one that started them.
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(record.pid, os.WNOHANG)


class Launcher:
    """Starts processes in one test bed directory and waits for each to be ready.

    It holds what every component needs: the settings, the binaries, the directory
    (``logs/`` and ``pki/`` inside it) and the progress reporter.
    """

    def __init__(
        self,
        config: TestbedConfig,
        binaries: build.Binaries,
        directory: Path,
        progress: build.Progress,
    ) -> None:
        self.config = config
        self.bin = binaries
        self.dir = directory
        self.progress = progress
        self.processes: list[ProcessRecord] = []
        self.logs = directory / "logs"
        self.logs.mkdir()
        self.pki = directory / "pki"
        self.pki.mkdir()

    def spawn(self, name: str, argv: list[str], *, user: str | None = None) -> ProcessRecord:
        """Start ``argv`` in its own session (as ``user``), logging to ``logs/<name>.log``."""
        try:
            record = spawn(name, argv, user=user, cwd=self.dir, log=self.logs / f"{name}.log")
        except TestbedError as exc:
            raise TestbedError(f"{exc}:\n{self.tail(name)}") from None
        self.processes.append(record)
        return record

    def tail(self, name: str, lines: int = 30) -> str:
        """The end of ``name``'s log, for an error message."""
        try:
            text = (self.logs / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(self, name: str, probe: Callable[[], bool], what: str) -> None:
        """Poll ``probe`` until it holds; ``TestbedError`` if ``name`` dies or times out."""
        deadline = time.monotonic() + self.config.start_timeout
        record = next(p for p in self.processes if p.name == name)
        while time.monotonic() < deadline:
            if not record.alive():
                raise TestbedError(f"{name} exited while starting:\n{self.tail(name)}")
            if probe():
                return
            time.sleep(0.2)
        raise TestbedError(
            f"{name} was not {what} after {self.config.start_timeout:.0f}s:\n{self.tail(name)}"
        )

    def stop_all(self) -> None:
        stop(self.processes, self.progress)


# The processes this one started and has not reaped. A test bed process outlives its
# starter (``testbed up`` exits; a test restarts PostgreSQL for all), and once it is
# killed, by whichever process, it stays a zombie until its parent reaps it: PostgreSQL
# takes a zombie in its lock file for a live postmaster. See ``reap``.
_SPAWNED: list[subprocess.Popen[bytes]] = []


def reap() -> None:
    """Reap every process ``spawn`` started here that has exited. A process that may
    start test bed processes and outlive them (a test worker) calls this now and then."""
    for proc in list(_SPAWNED):
        if proc.poll() is not None:  # Popen's own wait: never another child's pid
            _SPAWNED.remove(proc)


def spawn(name: str, argv: list[str], *, user: str | None, cwd: Path, log: Path) -> ProcessRecord:
    """Start ``argv`` in a session of its own, its output appended to ``log``; its record."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
            **run_as(user),
        )
    _SPAWNED.append(proc)
    started = None
    for _ in range(100):
        started = start_time(proc.pid)
        if started is not None:
            break
        time.sleep(0.01)
    if started is None:
        raise TestbedError(f"{name} exited at once")
    return ProcessRecord(name, proc.pid, started, str(log), list(argv), user)


def run_as(user: str | None) -> dict[str, Any]:
    """``subprocess`` arguments that run a child as ``user`` with its group alone."""
    if user is None:
        return {}
    return {"user": user, "group": user, "extra_groups": []}


# Ports handed out by this process, never handed out twice.
_HANDED_OUT: set[int] = set()
_LOWEST = 20_000


def free_port() -> int:
    """A loopback port nothing listens on, for a server started next.

    Below the kernel's ephemeral range: a port of that range (what binding port 0 gives)
    can be taken by any outgoing connection before the server binds it, and a busy test
    run makes thousands of them (seen as "address already in use" at a test bed start).
    """
    highest = _ephemeral_low() - 1
    for _ in range(500):
        port = random.randint(_LOWEST, highest)  # noqa: S311  # nosec B311: not a secret
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:  # pragma: no cover
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768
    return low if low > _LOWEST + 1000 else 32_768


def accepts(port: int) -> bool:
    """Something on loopback ``port`` accepts TCP connections."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    """``url`` answers 200."""
    try:
        # Only the test bed's own loopback http(s) URLs reach here.
        with urllib.request.urlopen(url, timeout=2, context=context) as response:  # noqa: S310  # nosec B310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False
