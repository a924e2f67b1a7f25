"""What an Environment reports, computed from what the reconciler observed: no I/O.

This module owns the meaning of the phases and of the Ready, DatabaseReady and
WorkloadAvailable conditions:

- **Failed**: the spec cannot work (it does not parse, or the API server rejects a
  child built from it); nothing is retried until the spec changes.
- **Suspended**: ``spec.suspend``; no pods run, the database is kept.
- **Ready**: the database is ready (or disabled) and every desired pod is ready on the
  current revision.
- **Degraded**: it was Ready before and no longer is (a database outage, pods lost).
- **Pending**: it has never been Ready and waits for its database server.
- **Provisioning**: its pods are on their way: it has never been Ready, or a rollout
  (a spec change) is in progress.
- **Deleting**: the environment is being deleted and its finalizer is at work.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

from pydantic import ValidationError

from dockyard.core.conditions import Verdict as Verdict
from dockyard.core.conditions import find, set_condition
from dockyard.core.durations import parse_duration
from dockyard.core.models.common import Condition, ConditionStatus
from dockyard.core.models.environment import (
    DatabaseStatus,
    Environment,
    EnvironmentConditionType,
    EnvironmentPhase,
    EnvironmentStatus,
    FinalSnapshot,
    ReplicaStatus,
    Tier,
)
from dockyard.operator.builders import environment as builders
from dockyard.operator.store import replacing

if TYPE_CHECKING:
    from dockyard.operator.environments.protection import ProtectionReport

# The phases from which a lapse is a degradation rather than an incomplete start.
_ONCE_READY: Final = frozenset({EnvironmentPhase.READY, EnvironmentPhase.DEGRADED})
ROLLOUT_IN_PROGRESS: Final = "RolloutInProgress"
# Condition messages stay well below the API's 32 KiB limit, and readable in kubectl.
_MESSAGE_LIMIT: Final = 1024


@dataclass(frozen=True, slots=True)
class DatabaseReport:
    """What the database step found: the condition, and where the credentials live."""

    verdict: Verdict
    secret_name: str
    name: str
    ensured: str | None = None
    """The digest of what ``ensure`` made sure of (see ``DatabaseStatus.ensured``)."""

    @property
    def ready(self) -> bool:
        return self.verdict.holds


@dataclass(frozen=True, slots=True)
class WorkloadReport:
    """The Deployment's replica counts and rollout state, as its controller reports them."""

    desired: int
    ready: int = 0
    available: int = 0
    updated: int = 0
    minimum_available: bool = False
    observed: bool = False

    @classmethod
    def from_deployment(cls, deployment: Mapping[str, Any] | None, desired: int) -> WorkloadReport:
        """The report of a Deployment as the API server returned it (``None``: not there)."""
        if deployment is None:
            return cls(desired=desired)
        status = deployment.get("status") or {}
        generation = deployment.get("metadata", {}).get("generation") or 0
        available_condition: Mapping[str, Any] = next(
            (c for c in status.get("conditions", ()) if c.get("type") == "Available"), {}
        )
        return cls(
            desired=desired,
            ready=int(status.get("readyReplicas") or 0),
            available=int(status.get("availableReplicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
            minimum_available=available_condition.get("status") == "True",
            # Until the controller has seen the latest spec, its counts describe an older one.
            observed=int(status.get("observedGeneration") or 0) >= generation,
        )

    def replicas(self) -> ReplicaStatus:
        return ReplicaStatus(desired=self.desired, ready=self.ready, available=self.available)


def workload_verdict(report: WorkloadReport, *, suspended: bool) -> Verdict:
    """WorkloadAvailable: every desired pod ready on the Deployment's current revision."""
    if report.desired == 0:
        why = "the environment is suspended" if suspended else "spec.replicas is 0"
        return Verdict(ConditionStatus.FALSE, "ScaledToZero", f"No pods run: {why}.")
    counts = f"{report.ready}/{report.desired} pods ready"
    if not report.observed or report.updated < report.desired:
        return Verdict(
            ConditionStatus.FALSE,
            ROLLOUT_IN_PROGRESS,
            f"The Deployment is rolling out its latest revision; {counts}.",
        )
    if report.minimum_available and report.ready >= report.desired:
        return Verdict(ConditionStatus.TRUE, "ReplicasReady", f"{counts}.")
    return Verdict(ConditionStatus.FALSE, "ReplicasNotReady", f"{counts}.")


def next_phase(
    *,
    previous: EnvironmentPhase | None,
    failed: bool,
    suspended: bool,
    database_ready: bool,
    workload: Verdict,
) -> EnvironmentPhase:
    """The phase for what was observed, given the phase before (see the module docstring)."""
    if failed:
        return EnvironmentPhase.FAILED
    if suspended:
        return EnvironmentPhase.SUSPENDED
    if database_ready and workload.holds:
        return EnvironmentPhase.READY
    once_ready = previous in _ONCE_READY
    if not database_ready:
        return EnvironmentPhase.DEGRADED if once_ready else EnvironmentPhase.PENDING
    # A rollout (a new spec, or a new password) is a change being made, not a lapse.
    if workload.reason == ROLLOUT_IN_PROGRESS or not once_ready:
        return EnvironmentPhase.PROVISIONING
    return EnvironmentPhase.DEGRADED


def expires_at(env: Environment) -> datetime | None:
    """When a development environment with a ttl is due for deletion."""
    created = env.metadata.creation_timestamp
    if env.spec.ttl is None or env.spec.tier is not Tier.DEVELOPMENT or created is None:
        return None
    return created + parse_duration(env.spec.ttl)


def summarize(
    env: Environment,
    *,
    database: DatabaseReport | None,
    workload: WorkloadReport,
    failure: Verdict | None = None,
    protection: ProtectionReport | None = None,
    host: Verdict | None = None,
    now: datetime | None = None,
) -> EnvironmentStatus:
    """The status after one reconcile pass.

    ``database`` is ``None`` when the environment has no database; ``failure`` is the
    reason the API server rejected a child, when it did; ``protection`` is what its
    backups and drills say (``None`` keeps what the status said; an environment without
    a database has neither condition); ``host`` whether it may publish its ingress host
    (``None``: it names none, and has no ``HostAdmitted`` condition).
    """
    previous = env.status
    generation = env.metadata.generation
    suspended = env.spec.suspend
    workload_ok = workload_verdict(workload, suspended=suspended)
    database_ok = (
        database.verdict
        if database is not None
        else Verdict(ConditionStatus.TRUE, "Disabled", "The environment has no database.")
    )
    phase = next_phase(
        previous=previous.phase,
        failed=failure is not None,
        suspended=suspended,
        database_ready=database_ok.holds,
        workload=workload_ok,
    )
    url = builders.url(env, host_admitted=host is None or host.holds)
    conditions = previous.conditions
    for kind, verdict in (
        (EnvironmentConditionType.DATABASE_READY, database_ok),
        (EnvironmentConditionType.WORKLOAD_AVAILABLE, workload_ok),
        (
            EnvironmentConditionType.READY,
            _ready_verdict(url, phase, failure, database_ok, workload_ok),
        ),
    ):
        conditions = _set(conditions, kind, verdict, generation, now)
    if host is not None:
        conditions = _set(conditions, EnvironmentConditionType.HOST_ADMITTED, host, generation, now)
    else:
        conditions = [c for c in conditions if c.type != EnvironmentConditionType.HOST_ADMITTED]
    last_backup, last_drill = previous.last_backup, previous.last_drill
    if database is None:
        # No database, nothing to back up: neither condition applies.
        unprotected = {
            EnvironmentConditionType.BACKUPS_HEALTHY,
            EnvironmentConditionType.DRILL_PASSING,
        }
        conditions = [c for c in conditions if c.type not in unprotected]
        last_backup = last_drill = None
    elif protection is not None:
        conditions = _set(
            conditions,
            EnvironmentConditionType.BACKUPS_HEALTHY,
            protection.backups,
            generation,
            now,
        )
        conditions = _set(
            conditions, EnvironmentConditionType.DRILL_PASSING, protection.drill, generation, now
        )
        last_backup, last_drill = protection.last_backup, protection.last_drill
    return EnvironmentStatus(
        observed_generation=generation,
        phase=phase,
        conditions=conditions,
        url=url,
        replicas=workload.replicas(),
        database=(
            None
            if database is None
            else DatabaseStatus(
                secret_name=database.secret_name,
                name=database.name,
                ready=database.ready,
                ensured=database.ensured if database.ready else None,
            )
        ),
        expires_at=expires_at(env),
        last_backup=last_backup,
        last_drill=last_drill,
    )


def _ready_verdict(
    url: str,
    phase: EnvironmentPhase,
    failure: Verdict | None,
    database: Verdict,
    workload: Verdict,
) -> Verdict:
    if failure is not None:
        return failure
    if phase is EnvironmentPhase.SUSPENDED:
        return Verdict(
            ConditionStatus.FALSE,
            "Suspended",
            "The environment is suspended: it runs no pods and keeps its database.",
        )
    if phase is EnvironmentPhase.READY:
        return Verdict(ConditionStatus.TRUE, "Available", f"The service is available at {url}.")
    if not database.holds:
        return Verdict(ConditionStatus.FALSE, "DatabaseNotReady", database.message)
    return Verdict(ConditionStatus.FALSE, workload.reason, workload.message)


def invalid_spec(
    env_status: EnvironmentStatus, generation: int | None, problem: str
) -> EnvironmentStatus:
    """The status of an environment whose spec the operator cannot read: Failed, and why."""
    verdict = Verdict(ConditionStatus.FALSE, "InvalidSpec", problem)
    return EnvironmentStatus(
        observed_generation=generation,
        phase=EnvironmentPhase.FAILED,
        conditions=_set(env_status.conditions, EnvironmentConditionType.READY, verdict, generation),
        url=env_status.url,
    )


def deleting(
    env: Environment,
    *,
    verdict: Verdict,
    final_snapshot: FinalSnapshot | None = None,
    now: datetime | None = None,
) -> EnvironmentStatus:
    """The status while the finalizer works: phase Deleting, and what it waits for in Ready;
    with ``final_snapshot``, the Backup the finalizer just made as the final snapshot."""
    status = env.status.model_copy()
    status.phase = EnvironmentPhase.DELETING
    if final_snapshot is not None:
        status.final_snapshot = final_snapshot
    status.conditions = _set(
        status.conditions, EnvironmentConditionType.READY, verdict, env.metadata.generation, now
    )
    return status


def database_report(env: Environment) -> DatabaseReport | None:
    """The database step's report as the status holds it (``None``: no database);
    ``LookupError`` when the status does not say enough (the step has to run)."""
    if not env.spec.database.enabled:
        if env.status.database is not None:
            raise LookupError("the database was disabled: its role is to be locked out")
        return None
    stored = env.status.database
    ready = find(env.status.conditions, EnvironmentConditionType.DATABASE_READY)
    if stored is None or ready is None or stored.secret_name is None or stored.name is None:
        raise LookupError("the status holds no database verdict")
    verdict = Verdict(ready.status, ready.reason, ready.message or "")
    return DatabaseReport(verdict, stored.secret_name, stored.name, stored.ensured)


def host_verdict(env: Environment) -> Verdict | None:
    """Whether the environment may publish its host, as the status holds it (``None``: it
    names none); ``LookupError`` when the status does not say (the full pass decides)."""
    if env.spec.ingress is None:
        return None
    admitted = find(env.status.conditions, EnvironmentConditionType.HOST_ADMITTED)
    if admitted is None:
        raise LookupError("the status holds no host verdict")
    return Verdict(admitted.status, admitted.reason, admitted.message or "")


def condition(status: EnvironmentStatus, kind: EnvironmentConditionType) -> Condition | None:
    return find(status.conditions, kind)


def status_patch(status: EnvironmentStatus) -> dict[str, Any]:
    """``status`` as a JSON merge patch body: fields it no longer has are removed."""
    return {"status": replacing(status)}


def readable_status(raw: Mapping[str, Any]) -> EnvironmentStatus:
    """The stored status of an environment whose spec does not validate; one that does
    not validate either is started afresh."""
    try:
        return EnvironmentStatus.model_validate(raw.get("status") or {})
    except ValidationError:
        return EnvironmentStatus()


def _set(
    conditions: list[Condition],
    kind: EnvironmentConditionType,
    verdict: Verdict,
    generation: int | None,
    now: datetime | None = None,
) -> list[Condition]:
    return set_condition(
        conditions,
        type=kind.value,
        status=verdict.status,
        reason=verdict.reason,
        message=verdict.message[:_MESSAGE_LIMIT],
        generation=generation,
        now=now,
    )
