"""What happens to an environment's database when the environment is deleted.

The operator's finalizer holds the Environment until its ``spec.database.deletionPolicy``
has been applied (its children go afterwards, through their owner references):

- **Retain** keeps the database and its role; the finalizer is released at once.
- **Delete** first deletes the Deployment, so the service's connections end, then waits
  for the sessions still open on the database to close, for at most ``DRAIN_TIMEOUT``
  (work in flight gets a chance to finish); after that they are terminated and the
  database and role are dropped.
- **Snapshot** would take a final backup first. This version has no backups, so the
  deletion is refused: the environment stays, Ready=False with reason
  SnapshotUnavailable says why, and the policy is checked again every
  ``SNAPSHOT_RECHECK_INTERVALS`` reconcile intervals, so switching it to Retain or Delete
  lets the deletion finish.

A database server that cannot be reached holds the deletion too (with backoff), rather
than leaving a database behind that nobody knows about.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from pydantic import ValidationError

from dockyard.core.kube import KubeError
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.environment import (
    DeletionPolicy,
    Environment,
    EnvironmentConditionType,
    EnvironmentPhase,
)
from dockyard.operator.apply import ENVIRONMENTS, delete_child
from dockyard.operator.builders.metadata import ChildRef, Manifest, Owner
from dockyard.operator.database import ManagedDatabaseError, database_identity
from dockyard.operator.environments import status as report
from dockyard.operator.environments.outcomes import Outcome
from dockyard.operator.environments.reconciler import Key, Reconciler, post

DRAIN_TIMEOUT: Final = timedelta(minutes=2)
DRAIN_RECHECK_SECONDS: Final = 5.0
SNAPSHOT_RECHECK_INTERVALS: Final = 5
SNAPSHOT_UNAVAILABLE: Final = (
    "deletionPolicy Snapshot needs backups, which this version does not have; set Retain or Delete"
)


async def finalize(reconciler: Reconciler, key: Key, *, runtime: timedelta) -> Outcome:
    """Apply the deletion policy of the environment ``key``; done means the finalizer may go.

    ``runtime`` is how long the deletion has been going on, which bounds the wait for
    open sessions.
    """
    async with reconciler.lock(key):
        raw = await reconciler.fetch(key)
        outcome = Outcome.done() if raw is None else await _apply_policy(reconciler, raw, runtime)
    if outcome == Outcome.done():
        reconciler.forget(key)
    return outcome


async def _apply_policy(reconciler: Reconciler, raw: Manifest, runtime: timedelta) -> Outcome:
    try:
        env = Environment.model_validate(raw)
    except ValidationError:
        # Which policy was meant cannot be known; keeping the data is the safe reading.
        post(
            raw,
            warning=True,
            reason="DatabaseRetained",
            message="The spec is unreadable; the database, if any, is kept.",
        )
        return Outcome.done()
    if not env.spec.database.enabled:
        return Outcome.done()
    owner = Owner.of(env)
    database, _ = database_identity(owner.namespace, owner.name)
    policy = env.spec.database.deletion_policy
    if policy is DeletionPolicy.RETAIN:
        post(
            raw,
            reason="DatabaseRetained",
            message=f"Database {database} is kept (deletionPolicy Retain); drop it by hand "
            "when it is no longer needed.",
        )
        return Outcome.done()
    if policy is DeletionPolicy.SNAPSHOT:
        verdict = report.Verdict(ConditionStatus.FALSE, "SnapshotUnavailable", SNAPSHOT_UNAVAILABLE)
        if await _write_deleting(reconciler, raw, env, verdict):
            post(raw, warning=True, reason="SnapshotUnavailable", message=SNAPSHOT_UNAVAILABLE)
        delay = reconciler.settings.reconcile_interval * SNAPSHOT_RECHECK_INTERVALS
        return Outcome.again(SNAPSHOT_UNAVAILABLE, delay=delay)
    return await _drop(reconciler, raw, env, owner, database, runtime)


async def _drop(
    reconciler: Reconciler,
    raw: Manifest,
    env: Environment,
    owner: Owner,
    database: str,
    runtime: timedelta,
) -> Outcome:
    """deletionPolicy Delete: stop the workload, let sessions drain (bounded), drop."""
    if reconciler.postgres is None:
        post(
            raw,
            warning=True,
            reason="DatabaseNotDropped",
            message=f"deletionPolicy Delete, but the operator has no managed PostgreSQL "
            f"server; database {database} was left where it is.",
        )
        return Outcome.done()
    try:
        # The workload goes first, so that its connections end before the database does.
        await delete_child(
            reconciler.kube,
            ChildRef("apps/v1", "Deployment", owner.name),
            namespace=owner.namespace,
            owner_uid=owner.uid,
        )
        sessions = await reconciler.postgres.active_connections(
            namespace=owner.namespace, environment=owner.name
        )
        if sessions and runtime < DRAIN_TIMEOUT:
            message = (
                f"Waiting for {sessions} session(s) on database {database} to end before "
                f"dropping it; after {int(DRAIN_TIMEOUT.total_seconds())}s they are terminated."
            )
            verdict = report.Verdict(ConditionStatus.FALSE, "DrainingConnections", message)
            await _write_deleting(reconciler, raw, env, verdict)
            return Outcome.again(message, delay=DRAIN_RECHECK_SECONDS)
        await reconciler.postgres.drop(namespace=owner.namespace, environment=owner.name)
    except ManagedDatabaseError as exc:
        verdict = report.Verdict(ConditionStatus.FALSE, exc.reason, exc.message)
        if await _write_deleting(reconciler, raw, env, verdict):  # once per reason, not per retry
            post(
                raw,
                warning=True,
                reason="DatabaseNotDropped",
                message=f"{exc.reason}: {exc.message}",
            )
        return Outcome.again(f"cannot drop database {database}: {exc.message}")
    terminated = f"; {sessions} session(s) still open were terminated" if sessions else ""
    post(
        raw,
        reason="DatabaseDropped",
        message=f"Database and role {database} dropped (deletionPolicy Delete){terminated}.",
    )
    return Outcome.done()


async def _write_deleting(
    reconciler: Reconciler, raw: Manifest, env: Environment, verdict: report.Verdict
) -> bool:
    """Write phase Deleting with ``verdict`` as Ready; whether that changed Ready's reason."""
    previous = report.condition(env.status, EnvironmentConditionType.READY)
    status = report.deleting(env, verdict=verdict)
    owner = Owner.of(env)
    try:
        await reconciler.kube.merge_patch(
            ENVIRONMENTS.path(owner.namespace, owner.name, "status"), report.status_patch(status)
        )
    except KubeError as exc:
        if exc.status != 404:
            raise
    if env.status.phase is not EnvironmentPhase.DELETING:
        post(
            raw,
            reason="PhaseChanged",
            message=f"{env.status.phase or 'New'} -> Deleting: {verdict.message}",
        )
    return previous is None or previous.reason != verdict.reason
