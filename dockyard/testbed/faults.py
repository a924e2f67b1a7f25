"""Faults a test bed process can be put through: hung (SIGSTOP/SIGCONT) or crashed.

A hung dependency is the hard case for a client: its sockets stay open and accept
bytes, and nothing ever comes back. ``hung`` stops a process and every process below it
(PostgreSQL's backends are children of the postmaster, each in a session of its own, so
stopping the process group would leave them answering).

A crashed one refuses connections at once: ``crashed`` kills the process and everything
below it with SIGKILL (no shutdown, as in an OOM kill), and when the block ends starts
it again with its recorded command line, waits until it serves, and records the new
process in the state file so ``dockyard testbed down`` stops the right one.
"""

from __future__ import annotations

import os
import signal
import ssl
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit

from dockyard.testbed.cluster import State, Testbed
from dockyard.testbed.processes import (
    ProcessRecord,
    TestbedError,
    accepts,
    http_ok,
    spawn,
)

# How long a restarted process has to serve again.
RESTART_TIMEOUT = 60.0


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, parents before children."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone meanwhile
        # The command may hold spaces and parentheses: the fields follow the last ')'.
        fields = text[text.rindex(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, queue = [], [pid]
    while queue:
        current = queue.pop(0)
        tree.append(current)
        queue.extend(children.get(current, ()))
    return tree


def pid_of(state: State, name: str) -> int:
    """The pid of the test bed process ``name`` (postgres, redis, kube-apiserver...).

    ``state`` may predate a restart (``crashed``): the state file, which ``restart``
    keeps current, is asked when ``state``'s record no longer runs.
    """
    for source in (state, Testbed().state()):
        for record in source.processes if source else ():
            if record.name == name and record.alive():
                return record.pid
    raise LookupError(f"the test bed runs no process named {name!r}")


@contextmanager
def hung(state: State, name: str) -> Iterator[list[int]]:
    """The block runs while ``name`` and its descendants are stopped; they resume after."""
    stopped = process_tree(pid_of(state, name))
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield stopped
    finally:
        for pid in stopped:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


@contextmanager
def crashed(testbed: Testbed, name: str) -> Iterator[ProcessRecord]:
    """The block runs while ``name`` is dead (killed with SIGKILL, its descendants too);
    after it, ``name`` is started again and serves. Yields the killed process's record."""
    record = killed(testbed, name)
    try:
        yield record
    finally:
        restart(testbed, record)


def killed(testbed: Testbed, name: str) -> ProcessRecord:
    """Kill the test bed's ``name`` and its descendants; the record to ``restart`` it from.
    Another process may be down already (a test that takes out two at once)."""
    state = testbed.require_state()
    record = next((p for p in state.processes if p.name == name and p.alive()), None)
    if record is None:
        raise LookupError(f"the test bed runs no process named {name!r}")
    if not record.argv:
        raise TestbedError(f"{name} was started by an older test bed that did not record how")
    kill(record.pid)
    return record


def kill(pid: int) -> None:
    """SIGKILL ``pid`` and its descendants; return once none of them runs."""
    doomed = process_tree(pid)
    for each in doomed:
        with suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)
    for each in doomed:
        with suppress(ChildProcessError, OSError):
            os.waitpid(each, os.WNOHANG)  # our own child when this process started it
    # Gone means reaped, not only dead: a zombie still answers kill(pid, 0), and
    # PostgreSQL refuses to start while the pid in its lock file does.
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{each}").exists() for each in doomed):
        if time.monotonic() > deadline:
            raise TestbedError(f"process {pid} or a descendant survived SIGKILL")
        for each in doomed:
            with suppress(ChildProcessError, OSError):
                os.waitpid(each, os.WNOHANG)
        time.sleep(0.02)


def restart(testbed: Testbed, record: ProcessRecord) -> ProcessRecord:
    """Start ``record``'s command again, wait until it serves, and save it in the state."""
    state = testbed.require_state()
    fresh = spawn(
        record.name, record.argv, user=record.user, cwd=Path(state.directory), log=Path(record.log)
    )
    ready = _readiness(state, record.name)
    deadline = time.monotonic() + RESTART_TIMEOUT
    while not ready():
        if not fresh.alive():
            raise TestbedError(f"{record.name} exited while restarting; see {record.log}")
        if time.monotonic() > deadline:
            raise TestbedError(f"{record.name} did not serve {RESTART_TIMEOUT:.0f}s after restart")
        time.sleep(0.1)
    testbed.replace_process(fresh)
    return fresh


def _readiness(state: State, name: str) -> Callable[[], bool]:
    """How to tell that the restarted ``name`` serves again."""
    if name == "postgres":
        return lambda: accepts(urlsplit(state.database_url).port or 5432)
    if name == "redis":
        return lambda: accepts(urlsplit(state.redis_url).port or 6379)
    if name == "kube-apiserver":
        pki = Path(state.directory) / "pki"
        context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        context.load_cert_chain(str(pki / "client-admin.crt"), str(pki / "client-admin.key"))
        return lambda: http_ok(f"{state.apiserver_url}/readyz", context)
    return lambda: True
