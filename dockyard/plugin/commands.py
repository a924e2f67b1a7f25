"""The plugin's commands, each an ``async`` function of a ``Session`` that returns the exit
status: 0 done, 1 the thing failed (a Failed backup, restore or drill, or an object that
does not exist). Every failure the user must act on is one ``PluginError`` line.

Waiting reads the object again every ``Session.poll`` seconds (one GET of one object)
until it reaches a final phase or ``timeout`` passes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.restore import REQUESTED_BY_ANNOTATION
from dockyard.core.models.scheduling import RUN_NOW_ANNOTATION
from dockyard.core.resources import (
    BACKUP_SCHEDULES,
    BACKUP_STORES,
    BACKUPS,
    ENVIRONMENTS,
    NAMESPACES,
    RESTORE_DRILLS,
    RESTORES,
    ResourceType,
)
from dockyard.plugin import views

Object = dict[str, Any]
FINAL = ("Completed", "Failed")


class PluginError(Exception):
    """A failure told in one line; the command exits 1."""


@dataclass
class Session:
    """One command's connection, namespace and terminal."""

    kube: KubeClient
    namespace: str
    console: Console
    poll: float = 1.0

    async def get(self, rtype: ResourceType, name: str) -> Object | None:
        try:
            return await self.kube.get(rtype.path(self.namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def need(self, rtype: ResourceType, name: str) -> Object:
        found = await self.get(rtype, name)
        if found is None:
            raise PluginError(f"{rtype.kind} {self.namespace}/{name} not found")
        return found

    async def until(
        self,
        rtype: ResourceType,
        name: str,
        done: Callable[[Object], bool],
        *,
        within: float,
        seen: Callable[[Object], Awaitable[None] | None] | None = None,
    ) -> Object:
        """Read the object every ``poll`` seconds until ``done`` says so."""
        deadline = time.monotonic() + within
        while True:
            obj = await self.need(rtype, name)
            if seen is not None:
                shown = seen(obj)
                if shown is not None:
                    await shown
            if done(obj):
                return obj
            if time.monotonic() >= deadline:
                phase = phase_of(obj) or "no phase yet"
                raise PluginError(
                    f"{rtype.kind} {self.namespace}/{name} is still {phase} after {within:g}s; "
                    "wait again or raise --timeout"
                )
            await asyncio.sleep(self.poll)


def phase_of(obj: Mapping[str, Any]) -> str | None:
    """An object's ``status.phase``, None while it has none."""
    phase = (obj.get("status") or {}).get("phase")
    return str(phase) if phase else None


def _message(obj: Mapping[str, Any]) -> str:
    return str((obj.get("status") or {}).get("message") or "no message")


def _stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")


# -- status ----------------------------------------------------------------------------------


async def status(session: Session, environment: str) -> int:
    env = await session.need(ENVIRONMENTS, environment)
    session.console.print(views.environment_status(env))
    return 0


# -- stores ----------------------------------------------------------------------------------


async def stores(session: Session) -> int:
    """The BackupStores and which of them serve the session's namespace."""
    found = (await session.kube.get(BACKUP_STORES.path(None))).get("items") or []
    if not found:
        raise PluginError("no BackupStore in the cluster; see docs/backups.md")
    labels: dict[str, str] | None = None  # unknown to a caller who may not read them
    try:
        namespace = await session.kube.get(NAMESPACES.path(None, session.namespace))
        labels = dict((namespace.get("metadata") or {}).get("labels") or {})
    except KubeError as exc:
        if exc.status not in (403, 404):
            raise
    session.console.print(views.backup_stores(found, session.namespace, labels))
    return 0


# -- backup ----------------------------------------------------------------------------------


async def backup(
    session: Session,
    environment: str,
    *,
    name: str | None,
    schedule: str | None,
    wait: bool,
    within: float,
) -> int:
    await session.need(ENVIRONMENTS, environment)
    template = await _template(session, environment, schedule)
    name = name or f"{environment}-manual-{_stamp()}"
    body = {
        "apiVersion": BACKUPS.api_version,
        "kind": BACKUPS.kind,
        "metadata": {"name": name, "namespace": session.namespace},
        "spec": {"environmentRef": {"name": environment}, **template},
    }
    await session.kube.create(BACKUPS.path(session.namespace), body)
    session.console.print(f"backup {session.namespace}/{name} created")
    if not wait:
        return 0
    with session.console.status(f"backup {name}: Pending") as shown:

        def seen(obj: Object) -> None:
            shown.update(f"backup {name}: {phase_of(obj) or 'Pending'}")

        done = await session.until(
            BACKUPS, name, lambda o: phase_of(o) in FINAL, within=within, seen=seen
        )
    st = done.get("status") or {}
    if phase_of(done) == "Failed":
        raise PluginError(f"backup {name} failed: {_message(done)}")
    session.console.print(
        f"backup {name} Completed: {views.size(st.get('size'))} at {st.get('location', '-')}"
    )
    return 0


async def _template(session: Session, environment: str, schedule: str | None) -> Object:
    """Storage, encryption, method and runner of the environment's BackupSchedule; with
    none, nothing: the Backup names only its environment, and a BackupStore fills it."""
    if schedule is not None:
        found = await session.need(BACKUP_SCHEDULES, schedule)
        ref = (found.get("spec") or {}).get("environmentRef", {}).get("name")
        if ref != environment:
            raise PluginError(f"BackupSchedule {schedule} backs up {ref}, not {environment}")
        return dict(found["spec"]["template"])
    listed = await session.kube.get(BACKUP_SCHEDULES.path(session.namespace))
    items = sorted(
        (
            o
            for o in listed.get("items") or []
            if ((o.get("spec") or {}).get("environmentRef") or {}).get("name") == environment
        ),
        key=lambda o: o["metadata"]["name"],
    )
    if not items:
        return {}
    if len(items) > 1:
        names = ", ".join(o["metadata"]["name"] for o in items)
        raise PluginError(f"environment {environment} has several BackupSchedules ({names}); "
                          "pick one with --schedule")  # fmt: skip
    return dict(items[0]["spec"]["template"])


# -- restore ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestoreSource:
    """Where a new Restore takes its backup from, and where it restores into."""

    backup: str | None = None
    environment: str | None = None
    latest_verified: bool = False
    into: str | None = None
    safety_backup: bool = True
    job: bool = False

    @property
    def given(self) -> bool:
        return self.backup is not None or self.environment is not None

    def spec(self, *, dry_run: bool) -> Object:
        if (self.backup is None) == (self.environment is None):
            raise PluginError("name the source with exactly one of --backup and --env")
        source: Object = (
            {"backupRef": {"name": self.backup}}
            if self.backup is not None
            else {
                "environmentRef": {"name": self.environment},
                "select": "latestVerified" if self.latest_verified else "latest",
            }
        )
        spec: Object = {"source": source, "dryRun": dry_run, "safetyBackup": self.safety_backup}
        if self.into:
            spec["target"] = {"environmentRef": {"name": self.into}}
        if self.job:
            spec["runner"] = "Job"
        return spec


async def _create_restore(session: Session, name: str, spec: Object) -> None:
    me = await session.kube.own_username()
    metadata: Object = {"name": name, "namespace": session.namespace}
    if me:  # proof of who asked: the admission policy checks it names the creator
        metadata["annotations"] = {REQUESTED_BY_ANNOTATION: me}
    body = {
        "apiVersion": RESTORES.api_version,
        "kind": RESTORES.kind,
        "metadata": metadata,
        "spec": spec,
    }
    await session.kube.create(RESTORES.path(session.namespace), body)


async def restore_plan(session: Session, name: str, source: RestoreSource, within: float) -> int:
    await _create_restore(session, name, source.spec(dry_run=True))
    with session.console.status(f"restore {name}: planning"):
        planned = await session.until(
            RESTORES,
            name,
            lambda o: bool((o.get("status") or {}).get("plan")) or phase_of(o) == "Failed",
            within=within,
        )
    if phase_of(planned) == "Failed":
        raise PluginError(f"restore {name} failed: {_message(planned)}")
    session.console.print(views.restore_plan(planned))
    session.console.print(
        f"nothing changed (dry run); carry it out: kubectl dockyard restore create {name}"
    )
    return 0


async def restore_create(session: Session, name: str, source: RestoreSource) -> int:
    existing = await session.get(RESTORES, name)
    if existing is None:
        if not source.given:
            raise PluginError(
                f"restore {name} does not exist; name its source with --backup or --env"
            )
        await _create_restore(session, name, source.spec(dry_run=False))
        session.console.print(f"restore {session.namespace}/{name} created")
    elif source.given or not (existing.get("spec") or {}).get("dryRun"):
        raise PluginError(f"restore {name} exists already; pick another name")
    else:  # the planned dry run: carry out the plan it showed
        await session.kube.merge_patch(
            RESTORES.path(session.namespace, name), {"spec": {"dryRun": False}}
        )
        session.console.print(f"restore {session.namespace}/{name}: dry run off, carrying it out")
    session.console.print(
        f"follow it: kubectl dockyard restore wait {name}; a production target also "
        f"needs another user's kubectl dockyard restore approve {name}"
    )
    return 0


async def restore_wait(session: Session, name: str, within: float) -> int:
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=session.console) as bar:
        task = bar.add_task(f"restore {name}", total=None)
        last: list[str | None] = [None]

        def seen(obj: Object) -> None:
            st = obj.get("status") or {}
            phase = phase_of(obj) or "Pending"
            if phase != last[0]:
                if last[0] is not None:
                    bar.console.print(f"{last[0]} → {phase}")
                last[0] = phase
            progress = st.get("progress") or {}
            if not progress or phase not in ("Restoring", "Verifying", "Completed"):
                # Nothing read yet (planning, approval, the safety backup): a pulse.
                bar.update(task, description=f"{name}: {phase}")
                return
            total = progress.get("bytesTotal")
            if phase == "Restoring":
                checking = progress.get("step") == "Checksum"
                description = f"{name}: Restoring" + (
                    " (checking the artifact)" if checking else ""
                )
                done = progress.get("bytesDone", 0)
            else:  # the artifact has been read whole
                description, done = f"{name}: {phase}", total
            bar.update(task, description=description, total=total, completed=done)

        done = await session.until(
            RESTORES, name, lambda o: phase_of(o) in FINAL, within=within, seen=seen
        )
    st = done.get("status") or {}
    if phase_of(done) == "Failed":
        raise PluginError(f"restore {name} failed: {_message(done)}")
    safety = f"; safety backup {st['safetyBackup']}" if st.get("safetyBackup") else ""
    session.console.print(
        f"restore {name} Completed in {views.duration(st.get('durationSeconds'))}{safety}"
    )
    return 0


# -- drill -----------------------------------------------------------------------------------


async def drill_run(session: Session, name: str, *, watch: bool, within: float) -> int:
    drill = await session.need(RESTORE_DRILLS, name)
    before = ((drill.get("status") or {}).get("lastRun") or {}).get("startedAt")
    await session.kube.merge_patch(
        RESTORE_DRILLS.path(session.namespace, name),
        {"metadata": {"annotations": {RUN_NOW_ANNOTATION: datetime.now(UTC).isoformat()}}},
    )
    session.console.print(f"drill {session.namespace}/{name}: run requested")
    if not watch:
        return 0

    def finished(obj: Object) -> bool:
        run = (obj.get("status") or {}).get("lastRun") or {}
        return run.get("startedAt") not in (None, before) and bool(run.get("finishedAt"))

    with session.console.status(f"drill {name}: waiting for the operator") as shown:

        def seen(obj: Object) -> None:
            current = (obj.get("status") or {}).get("currentRun")
            if current:
                shown.update(
                    f"drill {name}: restoring {current.get('backup')} into "
                    f"{current.get('scratchDatabase') or 'a scratch database'} "
                    f"(attempt {current.get('attempts', 1)})"
                )

        done = await session.until(RESTORE_DRILLS, name, finished, within=within, seen=seen)
    session.console.print(views.drill_result(done))
    return 0 if (done["status"]["lastRun"].get("result") == "Passed") else 1
