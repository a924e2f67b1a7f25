"""Kopf's index gate, released for watch streams that end before they have listed.

Kopf holds back every handler of the operator until each indexed resource
(``kopf.index``: the Environment children and related kinds) has been listed once in
every watched namespace. Each (resource, namespace) watch stream, and each object's
worker during the first listing, holds a toggle of that gate and drops it when its
listing, or its first indexing, is done.

A stream can end before that: with ``--namespace`` patterns, Kopf stops the streams of a
namespace that is deleted, and a namespace still terminating when the operator starts is
listed and deleted within moments. Kopf 1.45 then leaves the stream's toggle, or its
workers' toggles, in the gate for good, and the operator handles nothing at all, with no
error. (The test suite met it: 21 namespaces deleted just before an operator started.)

:func:`install` wraps Kopf's ``watcher`` and ``worker`` so that each drops its toggle when
it ends, however it ends. A stream that ended has nothing left to list, and dropping a
toggle twice is harmless (``ToggleSet.drop_toggle`` discards).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from kopf._cogs.aiokits import aiotoggles
from kopf._core.reactor import queueing

Coroutine = Callable[..., Awaitable[Any]]


def releasing(stream: Coroutine) -> Coroutine:
    """``stream`` (Kopf's watcher or worker), dropping its ``resource_indexed`` toggle
    from ``operator_indexed`` when it ends."""

    @functools.wraps(stream)
    async def run(**kwargs: Any) -> Any:
        try:
            return await stream(**kwargs)
        finally:
            gate: aiotoggles.ToggleSet | None = kwargs.get("operator_indexed")
            toggle: aiotoggles.Toggle | None = kwargs.get("resource_indexed")
            if gate is not None and toggle is not None:
                await gate.drop_toggle(toggle)

    run.__dockyard_releasing__ = True  # type: ignore[attr-defined]
    return run


def install() -> None:
    """Wrap Kopf's watcher and worker once (Kopf calls both through the module)."""
    for name in ("watcher", "worker"):
        current = getattr(queueing, name)
        if not getattr(current, "__dockyard_releasing__", False):
            setattr(queueing, name, releasing(current))
