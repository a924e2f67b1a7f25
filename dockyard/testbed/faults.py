"""Faults a test bed process can be put through: hung (SIGSTOP/SIGCONT) or crashed.

A hung dependency is the hard case for a client: its sockets stay open and accept
bytes, and nothing ever comes back. ``hung`` stops a process and every process below it
(PostgreSQL's backends are children of the postmaster, each in a session of its own, so
stopping the process group would leave them answering).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from dockyard.testbed.cluster import State


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
    """The pid of the test bed process ``name`` (postgres, redis, kube-apiserver...)."""
    for record in state.processes:
        if record.name == name:
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
