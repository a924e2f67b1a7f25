"""``Observed``: the operator's metrics that describe the objects, rebuilt from their status.

Kopf hands every watch event of the announcing kinds (and BackupSchedules) to
``observe``, starting with the full listing at start-up, so what this collector reports
is computed from the objects' stored status, not counted in memory: it is the same
after a restart. At scrape time it yields:

- ``dockyard_backup_last_success_timestamp_seconds{namespace,environment}``: the newest
  ``completedAt`` of a Completed Backup of the environment;
- ``dockyard_backup_schedule_interval_seconds{namespace,environment,schedule}``: the
  longest gap between two of the schedule's runs over the next week (alerts compare
  the age of the last success against it);
- ``dockyard_backups{namespace,phase}`` and ``dockyard_restores{namespace,phase}``: the
  objects by phase (Completed and Failed are the results);
- ``dockyard_drill_last_passed{namespace,drill}`` (1 or 0) and
  ``dockyard_drill_runs_kept{namespace,drill,result}``: a drill's history by result;
- ``dockyard_drill_last_pass_timestamp_seconds{namespace,environment}``;
- ``dockyard_drill_last_restore_seconds`` (RTO), ``dockyard_drill_last_backup_age_seconds``
  (RPO) and ``dockyard_drill_rpo_objective_seconds`` ``{namespace,drill}``;
- ``dockyard_restore_awaiting_approval_since_timestamp_seconds{namespace,restore}``.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, time, timedelta
from itertools import pairwise
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from dockyard.core import cron

Body = Mapping[str, Any]
Key = tuple[str, str]

_INSTANT: Final = timedelta(microseconds=1)


def _timestamp(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _key(body: Body) -> Key:
    meta = body.get("metadata", {})
    return str(meta.get("namespace", "")), str(meta.get("name", ""))


def _environment(body: Body) -> str:
    ref = (body.get("spec") or {}).get("environmentRef") or {}
    return str(ref.get("name", ""))


def _status(body: Body) -> Mapping[str, Any]:
    status = body.get("status")
    return status if isinstance(status, Mapping) else {}


@functools.lru_cache(maxsize=1024)
def schedule_gap(expression: str, time_zone: str) -> float:
    """``longest_gap`` of a schedule, computed once per (expression, time zone): a
    BackupSchedule's every status change comes by. (The week it measures is the first
    one seen; only DST moves it, by an hour.)"""
    return longest_gap(expression, time_zone)


def longest_gap(
    expression: str,
    time_zone: str,
    *,
    within: timedelta = timedelta(days=7),
    now: datetime | None = None,
) -> float:
    """The longest gap in seconds between a run of a schedule in the ``within`` from
    ``now`` and the run after it.

    Measured a day at a time, since a watch event of the operator waits for it: a few
    cron look-ups a day, not one per run (10,080 a week, for a minutely schedule).
    Within a day, the widest step between its wall-clock times (hours x minutes), so
    on a day the clocks change a step across the change is off by the shift; from the
    day's last run to the next, the real time between them.
    """
    schedule = cron.parse(expression)
    tz = ZoneInfo(time_zone)
    start = datetime.now(UTC) if now is None else now
    end = start + within
    times = sorted(60 * hour + minute for hour in schedule.hours for minute in schedule.minutes)
    at, gap = cron.next_after(schedule, start, tz), 0.0
    while at < end:
        midnight = datetime.combine(at.date() + timedelta(days=1), time(), tzinfo=tz)
        day_end = min(midnight.astimezone(UTC), end) - _INSTANT
        # at is a run in (start, day_end], so the latest one is there too.
        last = cron.latest_due(schedule, start, day_end, tz) or at
        following = cron.next_after(schedule, last, tz)
        gap = max(gap, _widest_step(times, at, last), (following - last).total_seconds())
        at = following
    return gap or within.total_seconds()


def _widest_step(times: Sequence[int], first: datetime, last: datetime) -> float:
    """The widest step in seconds between ``times`` (minutes of the day, in order) from
    ``first``'s wall-clock time to ``last``'s."""
    low, high = 60 * first.hour + first.minute, 60 * last.hour + last.minute
    steps = [later - earlier for earlier, later in pairwise(t for t in times if low <= t <= high)]
    return 60.0 * max(steps, default=0)


class Observed(Collector):
    """What the objects' status says, per kind, for ``/metrics``."""

    def __init__(self) -> None:
        self.backups: dict[Key, tuple[str, str, float | None]] = {}
        self.schedules: dict[Key, tuple[str, float]] = {}
        self.restores: dict[Key, tuple[str, float | None]] = {}
        self.drills: dict[Key, dict[str, Any]] = {}

    def observe(self, watch: str | None, body: Body) -> None:
        kind, key = body.get("kind"), _key(body)
        tables: dict[str, dict[Key, Any]] = {
            "Backup": self.backups,
            "BackupSchedule": self.schedules,
            "Restore": self.restores,
            "RestoreDrill": self.drills,
        }
        table = tables.get(str(kind))
        if table is None:
            return
        if watch == "DELETED":
            table.pop(key, None)
            return
        status = _status(body)
        if kind == "Backup":
            completed = _timestamp(status.get("completedAt"))
            self.backups[key] = (
                _environment(body),
                str(status.get("phase") or "Pending"),
                completed,
            )
        elif kind == "BackupSchedule":
            spec = body.get("spec") or {}
            try:
                gap = schedule_gap(str(spec.get("schedule")), str(spec.get("timeZone") or "UTC"))
            except (cron.CronError, ZoneInfoNotFoundError, ValueError):
                self.schedules.pop(key, None)  # refused: its Ready condition says why
                return
            self.schedules[key] = (_environment(body), gap)
        elif kind == "Restore":
            since = None
            if status.get("phase") == "AwaitingApproval":
                approved: Mapping[str, Any] = next(
                    (c for c in status.get("conditions") or () if c.get("type") == "Approved"),
                    {},
                )
                since = _timestamp(approved.get("lastTransitionTime"))
            self.restores[key] = (str(status.get("phase") or "Pending"), since)
        else:
            self.drills[key] = {
                "environment": _environment(body),
                "objective": (body.get("spec") or {}).get("rpoSeconds"),
                "last": status.get("lastRun") or {},
                "history": status.get("history") or [],
            }

    # -- collection ---------------------------------------------------------------------

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self._backups()
        yield from self._drills()
        yield from self._restores()

    def _backups(self) -> Iterator[GaugeMetricFamily]:
        last = GaugeMetricFamily(
            "dockyard_backup_last_success_timestamp_seconds",
            "When the environment's newest completed backup completed (Unix time).",
            labels=["namespace", "environment"],
        )
        newest: dict[Key, float] = {}
        phases: Counter[tuple[str, str]] = Counter()
        for (namespace, _), (environment, phase, completed) in self.backups.items():
            phases[namespace, phase] += 1
            if phase == "Completed" and completed is not None:
                at = (namespace, environment)
                newest[at] = max(newest.get(at, 0.0), completed)
        for (namespace, environment), value in sorted(newest.items()):
            last.add_metric([namespace, environment], value)
        yield last
        yield _counted("dockyard_backups", "Backups by phase.", phases)
        interval = GaugeMetricFamily(
            "dockyard_backup_schedule_interval_seconds",
            "The longest gap between two runs of the schedule over the next week.",
            labels=["namespace", "environment", "schedule"],
        )
        for (namespace, name), (environment, gap) in sorted(self.schedules.items()):
            interval.add_metric([namespace, environment, name], gap)
        yield interval

    def _restores(self) -> Iterator[GaugeMetricFamily]:
        phases: Counter[tuple[str, str]] = Counter()
        waiting = GaugeMetricFamily(
            "dockyard_restore_awaiting_approval_since_timestamp_seconds",
            "When the restore started waiting for its approval (Unix time).",
            labels=["namespace", "restore"],
        )
        for (namespace, name), (phase, since) in sorted(self.restores.items()):
            phases[namespace, phase] += 1
            if since is not None:
                waiting.add_metric([namespace, name], since)
        yield _counted("dockyard_restores", "Restores by phase.", phases)
        yield waiting

    def _drills(self) -> Iterator[GaugeMetricFamily]:
        drill_labels = ["namespace", "drill"]
        rto = GaugeMetricFamily(
            "dockyard_drill_last_restore_seconds",
            "How long the last run's restore took (the measured RTO), by drill.",
            labels=drill_labels,
        )
        rpo = GaugeMetricFamily(
            "dockyard_drill_last_backup_age_seconds",
            "How old the last run's backup was when it started (the measured RPO), by drill.",
            labels=drill_labels,
        )
        objective = GaugeMetricFamily(
            "dockyard_drill_rpo_objective_seconds",
            "The drill's recovery point objective (spec.rpoSeconds).",
            labels=drill_labels,
        )
        passing = GaugeMetricFamily(
            "dockyard_drill_last_passed",
            "1 when the drill's last run passed, 0 when it failed.",
            labels=drill_labels,
        )
        kept = GaugeMetricFamily(
            "dockyard_drill_runs_kept",
            "The runs a drill's status.history keeps, by result.",
            labels=[*drill_labels, "result"],
        )
        passed = GaugeMetricFamily(
            "dockyard_drill_last_pass_timestamp_seconds",
            "When the environment's newest passing drill run finished (Unix time).",
            labels=["namespace", "environment"],
        )
        newest: dict[Key, float] = {}
        for (namespace, name), drill in sorted(self.drills.items()):
            last = drill["last"]
            if last.get("restoreSeconds") is not None:
                rto.add_metric([namespace, name], float(last["restoreSeconds"]))
            if last.get("backupAgeSeconds") is not None:
                rpo.add_metric([namespace, name], float(last["backupAgeSeconds"]))
            if last.get("result") in ("Passed", "Failed"):
                passing.add_metric([namespace, name], 1.0 if last["result"] == "Passed" else 0.0)
            if drill["objective"] is not None:
                objective.add_metric([namespace, name], float(drill["objective"]))
            results = Counter(str(run.get("result")) for run in drill["history"])
            for result in ("Passed", "Failed"):
                kept.add_metric([namespace, name, result], results[result])
            for run in [last, *drill["history"]]:
                finished = _timestamp(run.get("finishedAt"))
                if run.get("result") == "Passed" and finished is not None:
                    at = (namespace, drill["environment"])
                    newest[at] = max(newest.get(at, 0.0), finished)
        for (namespace, environment), value in sorted(newest.items()):
            passed.add_metric([namespace, environment], value)
        yield from (rto, rpo, objective, passing, kept, passed)


def _counted(name: str, documentation: str, counts: Counter[tuple[str, str]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["namespace", "phase"])
    for (namespace, phase), count in sorted(counts.items()):
        family.add_metric([namespace, phase], count)
    return family
