"""What happens to an environment's database when the environment is deleted.

The operator's finalizer holds the Environment until its ``spec.database.deletionPolicy``
has been applied (its children go afterwards, through their owner references):

- **Retain** keeps the database and its role; the finalizer is released at once.
- **Delete** first deletes the Deployment, so the service's connections end, then waits
  for the sessions still open on the database to close, for at most ``DRAIN_TIMEOUT``
  (work in flight gets a chance to finish); after that they are terminated and the
  database and role are dropped.
- **Snapshot** stops the workload and lets sessions drain the same way, then takes a
  final Backup of the database (``snapshots``: no owner reference, so it outlives the
  environment), looks again every ``SNAPSHOT_POLL_SECONDS`` until it completes, and
  then drops the database and role as Delete does. A snapshot that cannot be taken (its
  Backup failed, the key Secret is missing) never lets the database go: the
  environment stays with Ready=False, reason SnapshotFailed, and is looked at again
  every ``SNAPSHOT_RECHECK_INTERVALS`` reconcile intervals, so deleting the failed
  Backup (which takes it again) or switching to Retain or Delete lets the deletion
  go on. Without a database there is nothing to snapshot, and the deletion proceeds.

A database server that cannot be reached holds the deletion too (with backoff), rather
than leaving a database behind that nobody knows about.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from pydantic import ValidationError

from dockyard.core.kube import KubeError
from dockyard.core.models.backup import Backup
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.environment import (
    DeletionPolicy,
    Environment,
    EnvironmentConditionType,
    EnvironmentPhase,
)
from dockyard.core.models.references import SecretKeyReference
from dockyard.core.resources import BACKUPS, ENVIRONMENTS, ChildRef, Manifest
from dockyard.operator.apply import delete_child, get, namespace_terminating
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.database import ManagedDatabaseError, ManagedPostgres, database_identity
from dockyard.operator.environments import snapshots
from dockyard.operator.environments import status as report
from dockyard.operator.environments.defaults import KEY_ENTRY
from dockyard.operator.environments.reconciler import Key, Reconciler, post
from dockyard.operator.environments.snapshots import SnapshotAction
from dockyard.operator.outcomes import Outcome
from dockyard.operator.runs.context import load_key
from dockyard.runner import BackupError

DRAIN_TIMEOUT: Final = timedelta(minutes=2)
DRAIN_RECHECK_SECONDS: Final = 5.0
SNAPSHOT_POLL_SECONDS: Final = 5.0
SNAPSHOT_RECHECK_INTERVALS: Final = 5


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
    if policy is DeletionPolicy.SNAPSHOT and reconciler.postgres is not None:
        return await _snapshot(reconciler, reconciler.postgres, raw, env, database, runtime)
    return await _drop(reconciler, raw, env, database, runtime)


async def _drop(
    reconciler: Reconciler,
    raw: Manifest,
    env: Environment,
    database: str,
    runtime: timedelta,
    *,
    snapshot: str | None = None,
) -> Outcome:
    """Stop the workload, let sessions drain (bounded), drop the database and role.

    ``snapshot`` names the final snapshot taken before, if one was.
    """
    policy = env.spec.database.deletion_policy
    if reconciler.postgres is None:
        post(
            raw,
            warning=True,
            reason="DatabaseNotDropped",
            message=f"deletionPolicy {policy}, but the operator has no managed PostgreSQL "
            f"server; database {database} was left where it is.",
        )
        return Outcome.done()
    owner = Owner.of(env)
    try:
        seconds = int(DRAIN_TIMEOUT.total_seconds())
        sessions, waiting = await _stop_and_drain(
            reconciler,
            reconciler.postgres,
            raw,
            env,
            runtime,
            f"to end before dropping it; after {seconds}s they are terminated",
        )
        if waiting is not None:
            return waiting
        await reconciler.postgres.drop(namespace=owner.namespace, environment=owner.name)
    except ManagedDatabaseError as exc:
        return await _server_trouble(reconciler, raw, env, database, exc)
    terminated = f"; {sessions} session(s) still open were terminated" if sessions else ""
    kept = f"; its final snapshot is Backup {snapshot}" if snapshot else ""
    post(
        raw,
        reason="DatabaseDropped",
        message=f"Database and role {database} dropped (deletionPolicy {policy}){terminated}"
        f"{kept}.",
    )
    return Outcome.done()


async def _snapshot(
    reconciler: Reconciler,
    postgres: ManagedPostgres,
    raw: Manifest,
    env: Environment,
    database: str,
    runtime: timedelta,
) -> Outcome:
    """deletionPolicy Snapshot: take the final snapshot, wait for it, then drop."""
    owner = Owner.of(env)
    name = snapshots.final_snapshot_name(owner.name, owner.uid)
    found = await get(reconciler.kube, BACKUPS.path(owner.namespace, name))
    backup = None if found is None else Backup.model_validate(found)
    step = snapshots.assess(backup, name=name, environment=owner.name, database=database)
    if step.action is SnapshotAction.DROP:
        return await _drop(reconciler, raw, env, database, runtime, snapshot=name)
    if step.action is SnapshotAction.CREATE:
        try:
            if not await postgres.exists(namespace=owner.namespace, environment=owner.name):
                post(
                    raw,
                    reason="NothingToSnapshot",
                    message=f"Database {database} does not exist: there is no final "
                    "snapshot to take.",
                )
                return await _drop(reconciler, raw, env, database, runtime)
            return await _start_snapshot(reconciler, postgres, raw, env, database, runtime)
        except ManagedDatabaseError as exc:
            return await _server_trouble(reconciler, raw, env, database, exc)
    if step.action is SnapshotAction.WAIT:
        await _write_deleting(reconciler, raw, env, step.verdict)
        return Outcome.again(step.verdict.message, delay=SNAPSHOT_POLL_SECONDS)
    return await _hold(reconciler, raw, env, step.verdict)


async def _start_snapshot(
    reconciler: Reconciler,
    postgres: ManagedPostgres,
    raw: Manifest,
    env: Environment,
    database: str,
    runtime: timedelta,
) -> Outcome:
    """Create the final snapshot, once the key is there and the sessions have drained."""
    owner = Owner.of(env)
    kube, settings = reconciler.kube, reconciler.settings
    secret = settings.default_backup_key_secret
    try:
        # Checked here, as the Backup would otherwise spend its attempts failing on it.
        await load_key(kube, owner.namespace, SecretKeyReference(name=secret, key=KEY_ENTRY))
    except BackupError as exc:
        problem = (
            f"{exc.message} in namespace {owner.namespace}; create it with the entry "
            f"{KEY_ENTRY} holding 32 random bytes (base64)"
        )
        return await _hold(reconciler, raw, env, snapshots.cannot_start(problem, database=database))
    seconds = int(DRAIN_TIMEOUT.total_seconds())
    # The workload stops first, so the snapshot holds its last writes.
    _, waiting = await _stop_and_drain(
        reconciler,
        postgres,
        raw,
        env,
        runtime,
        f"to end before taking its final snapshot; after {seconds}s it is taken regardless",
    )
    if waiting is not None:
        return waiting
    manifest = snapshots.final_snapshot(env, settings)
    name = manifest["metadata"]["name"]
    try:
        await kube.create(BACKUPS.path(owner.namespace), manifest)
    except KubeError as exc:
        if namespace_terminating(exc):
            # Its Backups go with the namespace, the artifacts with them.
            problem = f"namespace {owner.namespace} is being deleted, and the snapshot with it"
            verdict = snapshots.cannot_start(problem, database=database)
            return await _hold(reconciler, raw, env, verdict)
        if exc.status != 409:  # 409: it exists; the next pass reads it
            raise
    else:
        post(
            raw,
            reason="FinalSnapshotStarted",
            message=f"Taking the final snapshot of database {database}: Backup {name}.",
        )
    verdict = snapshots.taking(name, database=database)
    await _write_deleting(reconciler, raw, env, verdict)
    return Outcome.again(verdict.message, delay=SNAPSHOT_POLL_SECONDS)


async def _stop_and_drain(
    reconciler: Reconciler,
    postgres: ManagedPostgres,
    raw: Manifest,
    env: Environment,
    runtime: timedelta,
    then: str,
) -> tuple[int, Outcome | None]:
    """Delete the Deployment, so that its connections end, and count the sessions left:
    with a wait while some remain and ``DRAIN_TIMEOUT`` has not passed yet."""
    owner = Owner.of(env)
    await delete_child(
        reconciler.kube,
        ChildRef("apps/v1", "Deployment", owner.name),
        namespace=owner.namespace,
        owner_uid=owner.uid,
    )
    sessions = await postgres.active_connections(namespace=owner.namespace, environment=owner.name)
    if not sessions or runtime >= DRAIN_TIMEOUT:
        return sessions, None
    database, _ = database_identity(owner.namespace, owner.name)
    message = f"Waiting for {sessions} session(s) on database {database} {then}."
    verdict = report.Verdict(ConditionStatus.FALSE, "DrainingConnections", message)
    await _write_deleting(reconciler, raw, env, verdict)
    return sessions, Outcome.again(message, delay=DRAIN_RECHECK_SECONDS)


async def _hold(
    reconciler: Reconciler, raw: Manifest, env: Environment, verdict: report.Verdict
) -> Outcome:
    """Keep the database and the environment: say why, and look again now and then."""
    if await _write_deleting(reconciler, raw, env, verdict):  # once per reason, not per retry
        post(raw, warning=True, reason=verdict.reason, message=verdict.message)
    delay = reconciler.settings.reconcile_interval * SNAPSHOT_RECHECK_INTERVALS
    return Outcome.again(verdict.message, delay=delay)


async def _server_trouble(
    reconciler: Reconciler,
    raw: Manifest,
    env: Environment,
    database: str,
    exc: ManagedDatabaseError,
) -> Outcome:
    """The database server failed us: hold the deletion, retried with backoff."""
    verdict = report.Verdict(ConditionStatus.FALSE, exc.reason, exc.message)
    if await _write_deleting(reconciler, raw, env, verdict):  # once per reason, not per retry
        post(raw, warning=True, reason="DatabaseNotDropped", message=f"{exc.reason}: {exc.message}")
    return Outcome.again(f"cannot drop database {database}: {exc.message}")


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
