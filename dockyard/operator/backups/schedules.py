"""The BackupSchedule life cycle: Backups on a cron, concurrency, run-now and retention.

``plan_tick`` is the whole decision, pure: given the schedule, its Backups and the time,
which Backup to create (if any), which running ones a Replace cancels, what to report,
and which completed ones retention deletes. ``ScheduleRuns.tick`` reads the objects,
applies the plan and writes the status; the handler calls it from a timer and on every
change of the schedule (which is how the ``dockyard.io/run-now`` annotation is seen).

Decisions worth knowing:

- The cron is parsed strictly by ``dockyard.core.cron``; an expression or time zone it
  refuses makes Ready False with reason InvalidSchedule and the parser's message, and
  nothing runs. The API server's CEL rules refuse most bad crons before this sees them.
  One it accepts with no run within 9 years (``0 0 */30 4 3``) is reported the same
  way, and retention still applies.
- A run is due at the latest cron time after the last one (``latest_due``): after an
  outage one catch-up run, not one per missed time; a new schedule does not backfill.
- Forbid skips a due run while a Backup of the schedule is Pending or Running (an
  Event says so, and the skipped time counts as handled); Replace cancels those runs
  (they end Failed) and starts the new one; Allow runs both.
- ``suspend`` stops cron runs, not run-now; retention keeps applying.
- Backups are named ``<schedule>-<yyyymmddhhmm>`` after their cron time (UTC), so two
  passes can never create the same run twice, and run-now ones get seconds too. They
  carry the label ``dockyard.io/backup-schedule`` and an owner reference to the
  schedule, so deleting the schedule deletes its backups with their artifacts (use
  ``kubectl delete --cascade=orphan`` to keep them).
- Retention (``dockyard.core.retention``) deletes Backup objects; their finalizer
  deletes the artifacts. It never deletes the newest backup a drill verified, nor one
  a Restore not finished or a drill's current run takes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from dockyard.core.conditions import find
from dockyard.core.cron import CronError, latest_due, validate_schedule
from dockyard.core.kube import KubeClient
from dockyard.core.models.backup import Backup, BackupPhase, BackupRunner
from dockyard.core.models.backup_schedule import (
    ACTIVE_MAX,
    BackupSchedule,
    BackupScheduleConditionType,
    BackupScheduleStatus,
    ConcurrencyPolicy,
)
from dockyard.core.models.common import API_VERSION, ConditionStatus
from dockyard.core.models.restore import Restore
from dockyard.core.models.restore_drill import RestoreDrill
from dockyard.core.models.scheduling import RUN_NOW_ANNOTATION
from dockyard.core.models.storage import RUNNER_OWN_PATH_MESSAGE
from dockyard.core.names import OBJECT_NAME_MAX, fitted, label_value
from dockyard.core.resources import Manifest
from dockyard.core.retention import BackupRecord, apply_retention, backups_in_use
from dockyard.operator.builders.metadata import MANAGED_BY, MANAGED_BY_LABEL, Owner
from dockyard.operator.runs import jobs
from dockyard.operator.runs.context import RunContext
from dockyard.operator.runs.runner_jobs import stop_runner_jobs
from dockyard.operator.store import KindStore, ObjectLocks, OnInvalid, post

SCHEDULE_LABEL: Final = "dockyard.io/backup-schedule"
ENVIRONMENT_LABEL: Final = "dockyard.io/environment"
SCHEDULED_AT_ANNOTATION: Final = "dockyard.io/scheduled-at"
_CRON_STAMP: Final = "%Y%m%d%H%M"
_RUN_NOW_STAMP: Final = "%Y%m%d%H%M%S"


@dataclass(frozen=True, slots=True)
class Tick:
    """What one pass over a schedule does."""

    status: BackupScheduleStatus
    create: str | None = None
    due: datetime | None = None
    replace: tuple[str, ...] = ()
    skipped: str | None = None
    consume_run_now: bool = False
    delete: tuple[str, ...] = ()
    invalid: str | None = None


def backup_name(schedule: str, due: datetime, *, run_now: bool) -> str:
    """The name of the schedule's Backup for the run due at ``due``."""
    stamp = due.astimezone(UTC).strftime(_RUN_NOW_STAMP if run_now else _CRON_STAMP)
    return fitted(schedule, OBJECT_NAME_MAX, suffix=f"-{stamp}")


def _requested_at(value: str, now: datetime) -> datetime:
    """When a run-now was asked for: the annotation's time, as the REST API writes it
    (``2026-12-06T22:00:00Z``), so that a pass retried after it created the run names
    the same run; ``now`` for any other value (``kubectl annotate ... run-now=1``) or a
    time not yet come."""
    try:
        requested = datetime.fromisoformat(value)
    except ValueError:
        return now
    if requested.tzinfo is None or requested > now:
        return now
    return requested


def _in_flight(backup: Backup) -> bool:
    """Running or yet to run; not an inline one being deleted, whose run is stopped
    (``InlineRuns``). A runner Job goes only with its Backup, so that one still counts."""
    inline = backup.spec.runner is not BackupRunner.JOB
    if backup.metadata.deletion_timestamp is not None and inline:
        return False
    return not (backup.status.phase is not None and backup.status.phase.is_done)


def _in_flight_object(raw: Mapping[str, Any]) -> bool:
    """Whether the Backup ``raw`` (as read from the apiserver) has not finished."""
    phase = (raw.get("status") or {}).get("phase")
    return phase not in {done.value for done in BackupPhase if done.is_done}


def made_for(schedule: BackupSchedule, backup: Backup) -> bool:
    """Whether ``backup`` is one ``schedule`` made for the environment it names now.

    Only such Backups count for its concurrency and its retention. Not a Backup that
    merely carries its label (anyone who may edit Backups can set one), nor one an
    earlier schedule of the same name left behind (deleted with ``--cascade=orphan``),
    nor one of the environment it named before: retention never deletes those.
    """
    return (
        backup.metadata.controller_uid() == schedule.metadata.uid
        and backup.spec.environment_ref.name == schedule.spec.environment_ref.name
    )


def _template_refused(schedule: BackupSchedule) -> str | None:
    storage = schedule.spec.template.storage
    filesystem = storage.filesystem if storage is not None else None
    if filesystem is None or not filesystem.covers_the_runner():
        return None
    return f"template.storage.filesystem.path {filesystem.path}: {RUNNER_OWN_PATH_MESSAGE}"


def plan_tick(
    schedule: BackupSchedule,
    backups: list[Backup],
    now: datetime,
    in_use: Collection[str] = (),
) -> Tick:
    """Decide one pass over ``schedule`` at ``now``; ``backups`` are those carrying its
    label, of which only those it made for its environment count (``made_for``);
    retention keeps those ``in_use`` names (``backups_in_use``)."""
    backups = [b for b in backups if made_for(schedule, b)]
    spec, previous = schedule.spec, schedule.status
    generation = schedule.metadata.generation
    run_now = RUN_NOW_ANNOTATION in schedule.metadata.annotations
    try:
        cron, tz = validate_schedule(spec.schedule, spec.time_zone)
    except CronError as exc:
        status = previous.schedule_refused(str(exc), generation=generation, now=now)
        return Tick(status=status, invalid=str(exc))
    if (refused := _template_refused(schedule)) is not None:
        # Stored before the API server refused such a path: it would refuse each Backup.
        # Its earlier Backups are still its own, so retention keeps applying to them.
        status = previous.refused(
            BackupScheduleConditionType.READY, "InvalidTemplate", refused,
            generation=generation, now=now,
            update={previous.next_time_field: None},
        )  # fmt: skip
        kept = apply_retention([BackupRecord.of(b) for b in backups], spec.retention, tz, in_use)
        return Tick(status=status, invalid=refused, delete=kept.delete)
    try:
        next_time = None if spec.suspend else cron.next_after(now, tz)
    except CronError as exc:
        # The parser accepts it, but no run comes within its horizon (0 0 */30 4 3,
        # April 1st on a Wednesday, is 2037 after 2026): as invalid, and nothing runs.
        status = previous.schedule_refused(str(exc), generation=generation, now=now)
        kept = apply_retention([BackupRecord.of(b) for b in backups], spec.retention, tz, in_use)
        return Tick(status=status, invalid=str(exc), delete=kept.delete)

    active = sorted(b.metadata.name or "" for b in backups if _in_flight(b))
    anchor = previous.last_schedule_time or schedule.metadata.creation_timestamp or now
    due: datetime | None = now if run_now else None
    if due is None and not spec.suspend:
        due = latest_due(cron, anchor, now, tz)
    create: str | None = None
    replace: tuple[str, ...] = ()
    skipped: str | None = None
    last_schedule = previous.last_schedule_time
    if due is not None:
        requested = due
        if run_now:
            requested = _requested_at(schedule.metadata.annotations[RUN_NOW_ANNOTATION], now)
        name = backup_name(schedule.metadata.name or "backup", requested, run_now=run_now)
        if run_now and name not in active and any(b.metadata.name == name for b in backups):
            # That request's run is done already: this is another one (the same
            # annotation set again), named for the pass.
            name = backup_name(schedule.metadata.name or "backup", now, run_now=True)
        # A pass retried after it created this run (its status write failed, say) finds
        # the run among the active ones: it is this run, not one to forbid or replace.
        others = [backup for backup in active if backup != name]
        if others and spec.concurrency_policy is ConcurrencyPolicy.FORBID:
            skipped = (
                f"Skipped the run due at {due.isoformat()}: {', '.join(others)} still "
                "running (concurrencyPolicy Forbid)"
            )
        else:
            if spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
                replace = tuple(others)
            create = name
        if not run_now:
            last_schedule = due  # a skipped cron time counts as handled
        elif create is not None:
            last_schedule = due

    completed = [b for b in backups if b.status.phase is BackupPhase.COMPLETED]
    newest = max(completed, key=lambda b: b.status.completed_at or now, default=None)
    decision = apply_retention(
        [BackupRecord.of(b) for b in backups if b.metadata.name not in replace],
        spec.retention,
        tz,
        in_use,
    )
    still_active = [name for name in active if name not in replace]
    if create is not None and create not in still_active:
        still_active.append(create)
    message = (
        "Suspended: no backups run on the schedule (run-now still works)."
        if spec.suspend
        else f"Next backup at {next_time.isoformat() if next_time else 'never'}."
    )
    status = (
        previous.observed(generation)
        .model_copy(
            update={
                "last_schedule_time": last_schedule,
                "next_schedule_time": next_time.astimezone(UTC) if next_time else None,
                "last_successful_backup": newest.metadata.name if newest else None,
                "last_successful_time": newest.status.completed_at if newest else None,
                "active": sorted(still_active)[:ACTIVE_MAX],
            }
        )
        .scheduled(message, suspended=spec.suspend, generation=generation, now=now)
    )
    return Tick(
        status=status,
        create=create,
        due=due,
        replace=replace,
        skipped=skipped,
        consume_run_now=run_now,
        delete=decision.delete,
    )


def backup_for(schedule: BackupSchedule, name: str, due: datetime) -> Manifest:
    """The Backup a schedule creates for the run due at ``due``."""
    owner = Owner.of(schedule)
    template = schedule.spec.template
    environment = schedule.spec.environment_ref.name
    return {
        "apiVersion": API_VERSION,
        "kind": "Backup",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": {
                SCHEDULE_LABEL: label_value(owner.name),
                ENVIRONMENT_LABEL: label_value(environment),
                MANAGED_BY_LABEL: MANAGED_BY,
            },
            "annotations": {SCHEDULED_AT_ANNOTATION: due.astimezone(UTC).isoformat()},
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "environmentRef": {"name": environment},
            **template.model_dump(mode="json", by_alias=True, exclude_none=True),
        },
    }


async def held_backups(kube: KubeClient, namespace: str) -> frozenset[str]:
    """The backups of ``namespace`` its Restores not finished and its drills' current
    runs take: neither retention nor a ttl deletes them (``backups_in_use``)."""
    restores = await KindStore(kube, Restore).in_namespace(namespace)
    drills = await KindStore(kube, RestoreDrill).in_namespace(namespace)
    return backups_in_use(restores, drills)


class ScheduleRuns:
    """Applies ``plan_tick``; one per operator, in the memo."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self.schedules = KindStore(context.kube, BackupSchedule)
        self.backups = KindStore(context.kube, Backup)
        self.locks: ObjectLocks[tuple[str, str]] = ObjectLocks()

    def forget(self, namespace: str, name: str) -> None:
        self.locks.forget((namespace, name))

    async def tick(self, namespace: str, name: str, now: datetime | None = None) -> None:
        """One pass; passes over one schedule never interleave."""
        async with self.locks.lock((namespace, name)):
            await self._tick(namespace, name, now or datetime.now(UTC))

    async def _tick(self, namespace: str, name: str, now: datetime) -> None:
        loaded = await self.schedules.load(namespace, name, on_invalid=OnInvalid.SKIP)
        if loaded is None:
            return
        raw, schedule = loaded.raw, loaded.resource
        backups = await self.backups.in_namespace(
            namespace, params={"labelSelector": f"{SCHEDULE_LABEL}={label_value(name)}"}
        )
        plan = plan_tick(schedule, backups, now, await held_backups(self.context.kube, namespace))
        by_name = {b.metadata.name: b for b in backups}
        for victim in plan.replace:
            await self._cancel(raw, by_name[victim], replaced_by=plan.create or "")
        if plan.create is not None and plan.due is not None:
            manifest = backup_for(schedule, plan.create, plan.due)
            if await self.backups.create(manifest):  # else an earlier pass created this run
                post(raw, reason="BackupCreated", message=f"Created Backup {plan.create}")
        if plan.skipped is not None:
            post(raw, reason="Skipped", message=plan.skipped)
        if plan.consume_run_now:
            # Removed once the run started (or was refused by Forbid), as documented.
            await self.schedules.patch(
                namespace,
                name,
                {"metadata": {"annotations": {RUN_NOW_ANNOTATION: None}}},
                uid=loaded.uid,
            )
        deleted = []
        for doomed in plan.delete:
            backup = by_name.get(doomed)
            if backup is None:
                continue
            # Decided on what was listed: a backup changed since (a drill verified it)
            # is left for the next pass to decide again.
            meta = backup.metadata
            if await self.backups.delete(
                namespace, doomed, uid=meta.uid, resource_version=meta.resource_version
            ):
                deleted.append(doomed)
                await self.context.audited(
                    "DELETE backups (retention)",
                    "backups",
                    namespace,
                    doomed,
                    f"retention of BackupSchedule {name} no longer keeps it",
                    schedule=name,
                )
        if deleted:
            post(raw, reason="RetentionApplied", message=f"Deleted {', '.join(deleted)}")
        await self._write_status(raw, schedule, plan)

    async def _cancel(self, raw: Mapping[str, Any], backup: Backup, *, replaced_by: str) -> None:
        """Stop ``backup``'s run: its inline task, or else its status (only while it is
        still Pending or Running as read now: one that completed since the listing keeps
        its artifact) and its runner Job, whose pg_dump would otherwise go on beside the
        replacement."""
        uid = backup.metadata.uid or ""
        if self.context.inline_runs.cancel(uid):
            return  # the inline run ends Failed with reason Cancelled by itself
        namespace, name = backup.metadata.namespace or "", backup.metadata.name or ""
        message = f"Cancelled: replaced by {replaced_by} (concurrencyPolicy Replace)"
        cancelled = await self.backups.write_status(
            namespace,
            name,
            {
                "phase": BackupPhase.FAILED.value,
                "message": message,
                "completedAt": datetime.now(UTC).isoformat(),
            },
            uid=uid,
            only_if=_in_flight_object,
        )
        if not cancelled:
            return
        if backup.spec.runner is BackupRunner.JOB:
            selector = f"{jobs.BACKUP_LABEL}={label_value(name)}"
            await stop_runner_jobs(self.context.kube, namespace, uid, selector=selector)
        post(raw, reason="Replaced", message=f"Backup {name} {message[0].lower()}{message[1:]}")

    async def _write_status(
        self, raw: Mapping[str, Any], schedule: BackupSchedule, plan: Tick
    ) -> None:
        previous = schedule.status
        body = plan.status.body()
        if body == previous.body():
            return
        meta = schedule.metadata
        if not await self.schedules.write_status(
            meta.namespace or "", meta.name or "", body, uid=meta.uid
        ):
            return
        before = find(previous.conditions, BackupScheduleConditionType.READY)
        after = find(plan.status.conditions, BackupScheduleConditionType.READY)
        if after is not None and (before is None or before.reason != after.reason):
            post(
                raw,
                reason=after.reason,
                message=after.message,
                warning=after.status is ConditionStatus.FALSE,
            )
