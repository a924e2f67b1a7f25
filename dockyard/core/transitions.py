"""Which events an object's persisted state announces.

The operator calls ``announced`` with each watch event's body, so the status it reads
is the one the apiserver stored: an event is never logged for a status that was not
written. The function is pure and answers the same for the same body, so it may be
asked again (a restart re-lists everything); the events' stable ids make the log keep
each occurrence once. ``happened_at`` says when the status records that a transition
happened, so that one older than the log keeps is not announced again (``Emitter``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from dockyard.core import events
from dockyard.core.events import (
    DrillEventData,
    EnvironmentEventData,
    Event,
    EventType,
    ObjectRef,
    RunEventData,
    ScalingEventData,
)

Body = Mapping[str, Any]


def _ref(body: Body) -> ObjectRef:
    meta = body.get("metadata", {})
    return ObjectRef(
        kind=str(body.get("kind", "")),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
    )


def _status(body: Body) -> Mapping[str, Any]:
    status = body.get("status")
    return status if isinstance(status, Mapping) else {}


def _condition(body: Body, type_: str) -> Mapping[str, Any]:
    for condition in _status(body).get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == type_:
            return condition
    return {}


def _environment_of(body: Body) -> str | None:
    spec = body.get("spec") or {}
    for key in ("environmentRef", "target"):
        ref = spec.get(key)
        if isinstance(ref, Mapping):
            name = ref.get("name") or (ref.get("environmentRef") or {}).get("name")
            if name:
                return str(name)
    source = spec.get("source") or {}
    ref = source.get("environmentRef") if isinstance(source, Mapping) else None
    return str(ref["name"]) if isinstance(ref, Mapping) and ref.get("name") else None


def _environment(watch: str | None, body: Body) -> list[Event]:
    ref, status = _ref(body), _status(body)
    if watch == "DELETED":
        return [events.make(EventType.ENVIRONMENT_DELETED, EnvironmentEventData(object=ref))]
    phase = status.get("phase")
    kinds = {"Ready": EventType.ENVIRONMENT_READY, "Degraded": EventType.ENVIRONMENT_DEGRADED}
    if phase not in kinds:
        return []
    data = EnvironmentEventData(object=ref, phase=phase, message=status.get("message"))
    # Ready and Degraded come and go at one generation (an outage, its recovery, the
    # next outage): the Ready condition's transition time tells them apart.
    since = _condition(body, "Ready").get("lastTransitionTime")
    return [events.make(kinds[phase], data, occurrence=str(since or ""))]


def _run_data(body: Body, outcome: str) -> RunEventData:
    status = _status(body)
    return RunEventData(
        object=_ref(body),
        environment=_environment_of(body),
        phase=status.get("phase"),
        reason=_condition(body, outcome).get("reason"),
        message=status.get("message"),
        size_bytes=status.get("size"),
    )


def _backup(watch: str | None, body: Body) -> list[Event]:
    phase = _status(body).get("phase")
    kinds = {"Completed": EventType.BACKUP_COMPLETED, "Failed": EventType.BACKUP_FAILED}
    if watch == "DELETED" or phase not in kinds:
        return []
    return [events.make(kinds[phase], _run_data(body, "Completed"))]


def _restore(watch: str | None, body: Body) -> list[Event]:
    if watch == "DELETED":
        return []
    status = _status(body)
    found = []
    approval = status.get("approval") or {}
    approver = approval.get("approvedBy") if isinstance(approval, Mapping) else None
    if approver:
        found.append(approved(body, str(approver)))
    rejecter = approval.get("rejectedBy") if isinstance(approval, Mapping) else None
    if rejecter:
        found.append(rejected(body, str(rejecter), approval.get("rejectionReason")))
    kinds = {
        "AwaitingApproval": EventType.RESTORE_AWAITING_APPROVAL,
        "Completed": EventType.RESTORE_COMPLETED,
        "Failed": EventType.RESTORE_FAILED,
    }
    phase = status.get("phase")
    if phase in kinds:
        found.append(events.make(kinds[phase], _run_data(body, "Completed")))
    return found


def approved(body: Body, approver: str) -> Event:
    """``restore.approved``: the same event whether the API or the operator announces it."""
    data = _run_data(body, "Approved").model_copy(update={"actor": approver, "message": None})
    return events.make(EventType.RESTORE_APPROVED, data)


def rejected(body: Body, rejecter: str, reason: object) -> Event:
    """``restore.rejected``: the same event whether the API or the operator announces it."""
    data = _run_data(body, "Approved").model_copy(
        update={"actor": rejecter, "reason": "Rejected", "message": str(reason) if reason else None}
    )
    return events.make(EventType.RESTORE_REJECTED, data)


def _drill(watch: str | None, body: Body) -> list[Event]:
    run = _status(body).get("lastRun")
    if watch == "DELETED" or not isinstance(run, Mapping) or not run.get("startedAt"):
        return []
    kinds = {"Passed": EventType.DRILL_PASSED, "Failed": EventType.DRILL_FAILED}
    if run.get("result") not in kinds:
        return []
    data = DrillEventData(
        object=_ref(body),
        environment=_environment_of(body),
        backup=run.get("backup"),
        started_at=run["startedAt"],
        restore_seconds=run.get("restoreSeconds"),
        backup_age_seconds=run.get("backupAgeSeconds"),
        failed_checks=len(run.get("failedChecks") or ()),
    )
    # A drill runs again at the same generation: its run's start tells runs apart.
    return [events.make(kinds[run["result"]], data, occurrence=str(run["startedAt"]))]


def _scaling(watch: str | None, body: Body) -> list[Event]:
    paused = _condition(body, "Paused")
    since = paused.get("lastTransitionTime")
    if watch == "DELETED" or paused.get("status") not in ("True", "False") or not since:
        return []
    kind = EventType.SCALING_PAUSED if paused["status"] == "True" else EventType.SCALING_RESUMED
    data = ScalingEventData(
        object=_ref(body),
        environment=_environment_of(body),
        reason=paused.get("reason"),
        message=paused.get("message"),
    )
    # Pauses come and go at one generation (a restore pauses it): the transition's time
    # tells them apart. A policy's first state is "not paused" too: the emitter logs a
    # resumed event only after a paused one (``Emitter``).
    return [events.make(kind, data, occurrence=str(since))]


ANNOUNCERS: dict[str, Callable[[str | None, Body], list[Event]]] = {
    "Environment": _environment,
    "Backup": _backup,
    "Restore": _restore,
    "RestoreDrill": _drill,
    "ScalingPolicy": _scaling,
}


def announced(watch: str | None, body: Body) -> list[Event]:
    """The events ``body`` (seen in a watch event of type ``watch``) announces."""
    announcer = ANNOUNCERS.get(str(body.get("kind", "")))
    return announcer(watch, body) if announcer is not None else []


def _approval(body: Body) -> Mapping[str, Any]:
    approval = _status(body).get("approval")
    return approval if isinstance(approval, Mapping) else {}


def _run_ended(body: Body) -> object:
    """When a drill's last run finished (its start, for a run that did not record it)."""
    run = _status(body).get("lastRun")
    return (run.get("finishedAt") or run.get("startedAt")) if isinstance(run, Mapping) else None


def _since(type_: str) -> Callable[[Body], object]:
    return lambda body: _condition(body, type_).get("lastTransitionTime")


def _ended(body: Body) -> object:
    return _status(body).get("completedAt")


# Where each transition's time is in the status: the time the operator wrote with it.
_WHEN: dict[EventType, Callable[[Body], object]] = {
    EventType.ENVIRONMENT_READY: _since("Ready"),
    EventType.ENVIRONMENT_DEGRADED: _since("Ready"),
    EventType.BACKUP_COMPLETED: _ended,
    EventType.BACKUP_FAILED: _ended,
    EventType.RESTORE_AWAITING_APPROVAL: _since("Approved"),
    EventType.RESTORE_APPROVED: lambda body: _approval(body).get("approvedAt"),
    EventType.RESTORE_REJECTED: lambda body: _approval(body).get("rejectedAt"),
    EventType.RESTORE_COMPLETED: _ended,
    EventType.RESTORE_FAILED: _ended,
    EventType.DRILL_PASSED: _run_ended,
    EventType.DRILL_FAILED: _run_ended,
    EventType.SCALING_PAUSED: _since("Paused"),
    EventType.SCALING_RESUMED: _since("Paused"),
}


def happened_at(event: Event, body: Body) -> datetime | None:
    """When the transition ``event`` announces happened, as ``body``'s status records it;
    ``None`` when it does not say (``environment.deleted`` has no time: it is now)."""
    when = _WHEN.get(event.type)
    value = when(body) if when is not None else None
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
