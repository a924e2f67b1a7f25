"""Inline runs: a Backup, Restore or RestoreDrill carried out in the operator's own event
loop, and everything that may stop one.

``InlineRuns.run`` bounds every inline run:

- **slots** (``FairSlots``): at most ``DOCKYARD_BACKUP_CONCURRENCY`` at once, at most a
  namespace's share of them, restores first;
- **the deadline**: a run longer than ``DOCKYARD_RUN_DEADLINE`` is stopped
  (``RunDeadlineExceeded``, as a runner Job's ``activeDeadlineSeconds`` would be);
- **cancel** (``cancel(uid, why)``): a schedule's ``Replace`` policy, or a finalizer,
  stops a run on purpose (``RunCancelled``, saying why);
- **its object**: every ``GONE_POLL_SECONDS`` the run's object is read, and a run whose
  object is gone, being deleted or made again under its name is cancelled
  (``RunOrphaned``: its caller writes nothing more to the object's name, which may
  belong to another object by then, and only cleans up after the run). Kopf handles
  one object's events one at a time, so the deletion of an object whose handler is
  running a restore reaches no handler of it before that run ends: without this a
  Restore deleted to abort it would still be switched over;
- **the point of no return** (``uninterruptible(uid)``): from there on the run goes to
  its end, neither cancelled nor stopped by its deadline. A restore's switch-over passes
  it: cut short, it would leave the target refusing connections with no Restore left
  to recover it.

An operator that is stopping cancels its runs whatever their point: the resume after
a restart counts them as interrupted, and recovery finishes or retries them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from typing import Final, TypeVar

from dockyard.core.kube import KubeClient
from dockyard.core.tasks import cancel_and_wait
from dockyard.operator.apply import get
from dockyard.operator.runs.slots import FairSlots
from dockyard.runner import BackupError

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

GONE_POLL_SECONDS: Final = 2.0
"""How often a running inline run's object is read, to stop the run once it is gone."""

REPLACED: Final = "a newer run replaced it"


class RunCancelled(BackupError):
    """The run was cancelled on purpose: a schedule's Replace policy, or its object went."""

    reason = "Cancelled"


class RunOrphaned(RunCancelled):
    """The run's object is gone, being deleted or made again under its name: nothing may
    be written to it any more (a write by name could land on a new object)."""


class RunDeadlineExceeded(RunCancelled):
    """An inline run outlived ``DOCKYARD_RUN_DEADLINE`` (a Job's activeDeadlineSeconds)
    and was stopped; not retried, as another run would most likely take as long."""

    reason = "DeadlineExceeded"


class InlineRuns:
    """The inline runs of this process, by the uid of their object; one per operator."""

    def __init__(self, kube: KubeClient, slots: FairSlots, deadline: float) -> None:
        self.kube = kube
        self.slots = slots
        self.deadline = deadline
        self._active: dict[str, asyncio.Task[object]] = {}
        self._why: dict[str, RunCancelled] = {}
        """Why a run was cancelled: what it raises."""
        self._timers: dict[str, asyncio.Timeout] = {}
        self._committed: set[str] = set()
        """Runs past their point of no return."""

    def running_here(self, uid: str) -> bool:
        """Whether this process executes the run of object ``uid`` right now."""
        return uid in self._active

    def running(self) -> frozenset[str]:
        """The uids of the objects whose runs this process executes right now."""
        return frozenset(self._active)

    async def run(
        self, uid: str, work: Awaitable[_T], *, path: str, namespace: str, urgent: bool = False
    ) -> _T:
        """Run ``work`` for the object at ``path`` (of uid ``uid``) once ``namespace`` may
        have a slot (``urgent`` runs go first); ``RunCancelled`` if it was cancelled or its
        object went, ``RunDeadlineExceeded`` if it ran for too long. Marked as running here
        while it waits for its slot, too."""
        slot = self.slots.hold(namespace, urgent=urgent)
        task: asyncio.Task[_T] = asyncio.ensure_future(self._slotted(uid, work, slot))
        self._active[uid] = task
        watch = asyncio.create_task(self._cancel_when_gone(uid, path), name=f"watch {path}")
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and not (current is not None and current.cancelling()):
                raise self._why.get(uid) or _cancelled(REPLACED) from None
            # The operator is stopping: the run dies with it (the resume counts it).
            task.cancel()
            raise
        finally:
            self._active.pop(uid, None)
            self._why.pop(uid, None)
            self._timers.pop(uid, None)
            self._committed.discard(uid)
            await cancel_and_wait(watch)

    def cancel(self, uid: str, why: str = REPLACED) -> bool:
        """Stop the inline run of object ``uid``; whether there was one to stop (a run past
        its point of no return is not stopped)."""
        return self._cancel(uid, _cancelled(why))

    def _cancel(self, uid: str, error: RunCancelled) -> bool:
        task = self._active.get(uid)
        if task is None or uid in self._committed or task.done():
            return False
        self._why.setdefault(uid, error)
        return task.cancel()

    async def uninterruptible(self, uid: str) -> None:
        """Called by the run of ``uid``: from here on it goes to its end. A cancel asked
        for before this ends the run here, before anything that must not be cut short."""
        await asyncio.sleep(0)  # a cancel already asked for is raised now
        current = asyncio.current_task()
        # A cancel that some cleanup on the way swallowed still ends the run here, and
        # so does the operator's stop, which may have let the run go already.
        if current is not None and current.cancelling() > 0:
            raise asyncio.CancelledError
        if uid not in self._active:
            return  # not an inline run
        timer = self._timers.get(uid)
        if uid in self._why or (timer is not None and timer.expired()):
            raise asyncio.CancelledError
        self._committed.add(uid)
        if timer is not None:
            timer.reschedule(None)

    async def _slotted(
        self, uid: str, work: Awaitable[_T], slot: AbstractAsyncContextManager[None]
    ) -> _T:
        async with slot:
            timer = asyncio.timeout(self.deadline)
            self._timers[uid] = timer
            try:
                async with timer:
                    return await work
            except TimeoutError:
                if not timer.expired():
                    raise  # a timeout of the work's own
                raise RunDeadlineExceeded(
                    f"the run did not finish within {self.deadline}s (DOCKYARD_RUN_DEADLINE) "
                    "and was stopped"
                ) from None

    async def _cancel_when_gone(self, uid: str, path: str) -> None:
        while uid in self._active:
            await asyncio.sleep(GONE_POLL_SECONDS)
            try:
                found = await get(self.kube, path)
            except Exception as exc:
                # The apiserver is out or slow: the run goes on; its own calls will say so.
                logger.debug("run's object not read", extra={"path": path, "error": repr(exc)})
                continue
            meta = (found or {}).get("metadata") or {}
            if found is None:
                why = "its object was deleted"
            elif meta.get("uid") != uid:
                why = "its object was deleted and made again under its name"
            elif meta.get("deletionTimestamp"):
                why = "its object is being deleted"
            else:
                continue
            if self._cancel(uid, RunOrphaned(f"the run was cancelled: {why}")):
                logger.info("inline run cancelled", extra={"path": path, "why": why})
            return


def _cancelled(why: str) -> RunCancelled:
    return RunCancelled(f"the run was cancelled: {why}")


__all__ = ["GONE_POLL_SECONDS", "InlineRuns", "RunCancelled", "RunDeadlineExceeded", "RunOrphaned"]
