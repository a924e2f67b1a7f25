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
  then drops the database and role as Delete does. Only the Backup this deletion made
  counts (its uid, from the create's answer, is recorded in ``status.finalSnapshot``):
  one made earlier under the name holds the deletion like a failed one. The name is
  recorded before the create, so a pass that stops between the create and recording
  its uid is followed by one that recognises the Backup (``snapshots.made_here``)
  instead of holding for good. A snapshot that cannot be taken (its
  Backup failed, the key Secret is missing) never lets the database go: the
  environment stays with Ready=False, reason SnapshotFailed, and is looked at again
  every ``SNAPSHOT_RECHECK_INTERVALS`` reconcile intervals, so deleting the failed
  Backup (which takes it again) or switching to Retain or Delete lets the deletion
  go on. Without a database there is nothing to snapshot, and the deletion proceeds.

A disabled database (``database.enabled: false``) kept its data, its role locked out:
Retain keeps it and Delete drops it, as for an enabled one; Snapshot keeps it, with a
Warning Event, as no snapshot can be taken without a role that may log in.

A database server that cannot be reached holds the deletion too (with backoff), rather
than leaving a database behind that nobody knows about.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from dockyard.core.kube import KubeError
from dockyard.core.models.backup import Backup
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.environment import (
    DeletionPolicy,
    Environment,
    EnvironmentConditionType,
    EnvironmentPhase,
    EnvironmentStatus,
    FinalSnapshot,
)
from dockyard.core.models.references import SecretKeyReference
from dockyard.core.resources import ChildRef, Manifest
from dockyard.operator.apply import delete_child, namespace_terminating, namespace_uid
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.database import ManagedDatabaseError, ManagedPostgres, database_identity
from dockyard.operator.environments import snapshots
from dockyard.operator.environments import status as report
from dockyard.operator.environments.defaults import KEY_ENTRY
from dockyard.operator.environments.reconciler import Key, Reconciler
from dockyard.operator.environments.snapshots import SnapshotAction
from dockyard.operator.outcomes import Outcome
from dockyard.operator.runs.context import load_key, tenant_login
from dockyard.operator.store import InvalidObject, KindStore, post
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
    async with reconciler.locks.lock(key):
        raw = await reconciler.fetch(key)
        outcome = Outcome.done() if raw is None else await _apply_policy(reconciler, raw, runtime)
    if outcome == Outcome.done():
        reconciler.locks.forget(key)
        if raw is not None:
            reconciler.children.forget(raw["metadata"].get("uid", ""))
    return outcome


async def _apply_policy(reconciler: Reconciler, raw: Manifest, runtime: timedelta) -> Outcome:
    try:
        env = reconciler.environments.parse(raw)
    except InvalidObject:
        # Which policy was meant cannot be known; keeping the data is the safe reading.
        post(
            raw,
            warning=True,
            reason="DatabaseRetained",
            message="The spec is unreadable; the database, if any, is kept.",
        )
        return Outcome.done()
    deletion = _Deletion(reconciler, raw, env, runtime)
    policy = env.spec.database.deletion_policy
    if not env.spec.database.enabled:
        return await deletion.disabled(policy)
    if policy is DeletionPolicy.RETAIN:
        return deletion.retained()
    kept = await deletion.kept_if_not_its_own()
    if kept is not None:
        return kept
    if policy is DeletionPolicy.SNAPSHOT and reconciler.postgres is not None:
        return await deletion.snapshot(reconciler.postgres)
    return await deletion.drop()


@dataclass(slots=True)
class _Deletion:
    """One pass of the finalizer over the environment ``env`` (``raw`` as read)."""

    reconciler: Reconciler
    raw: Manifest
    env: Environment
    runtime: timedelta

    @property
    def owner(self) -> Owner:
        return Owner.of(self.env)

    @property
    def database(self) -> str:
        return database_identity(self.owner.namespace, self.owner.name)[0]

    async def kept_if_not_its_own(self) -> Outcome | None:
        """Done, with the database kept, when it was made for an earlier namespace of this
        name (``tenants.NAMESPACE_MARK``): this environment may neither snapshot nor drop
        another team's data. None when the policy applies."""
        postgres, owner = self.reconciler.postgres, self.owner
        if postgres is None:
            return None
        try:
            uid = await namespace_uid(self.reconciler.kube, owner.namespace)
            elsewhere = await postgres.made_elsewhere(
                namespace=owner.namespace, namespace_uid=uid, environment=owner.name
            )
        except ManagedDatabaseError as exc:
            return await self._server_trouble(exc)
        if not elsewhere:
            return None
        return self._left(
            "DatabaseRetained",
            f"Database {self.database} was made for an earlier namespace named "
            f"{owner.namespace}: it is kept, neither snapshotted nor dropped.",
        )

    def retained(self) -> Outcome:
        """deletionPolicy Retain: done, the database kept, and an Event that says so."""
        post(
            self.raw,
            reason="DatabaseRetained",
            message=f"Database {self.database} is kept (deletionPolicy Retain); drop it "
            "by hand when it is no longer needed.",
        )
        return Outcome.done()

    async def disabled(self, policy: DeletionPolicy) -> Outcome:
        """The policy of a disabled database, which kept its data with its role locked
        out: Delete drops it as it would an enabled one; Snapshot keeps it, as no final
        snapshot can be taken without a role that may log in. Done at once without one."""
        postgres, owner = self.reconciler.postgres, self.owner
        if postgres is None:
            return Outcome.done()
        try:
            if not await postgres.exists(namespace=owner.namespace, environment=owner.name):
                return Outcome.done()
        except ManagedDatabaseError as exc:
            return await self._server_trouble(exc)
        if policy is DeletionPolicy.RETAIN:
            return self.retained()
        if (kept := await self.kept_if_not_its_own()) is not None:
            return kept
        if policy is DeletionPolicy.SNAPSHOT:
            return self._left(
                "DatabaseRetained",
                f"Database {self.database} is disabled, so no final snapshot can be taken "
                "(its role may not log in): it is kept, not dropped (deletionPolicy "
                "Snapshot). Drop it by hand when it is no longer needed.",
            )
        return await self.drop()

    def _left(self, reason: str, message: str) -> Outcome:
        """Done, with the database left where it is, saying why in a Warning Event."""
        post(self.raw, warning=True, reason=reason, message=message)
        return Outcome.done()

    async def drop(self, *, snapshot: str | None = None) -> Outcome:
        """Stop the workload, let sessions drain (bounded), drop the database and role.

        ``snapshot`` names the final snapshot taken before, if one was.
        """
        policy = self.env.spec.database.deletion_policy
        postgres = self.reconciler.postgres
        if postgres is None:
            return self._left(
                "DatabaseNotDropped",
                f"deletionPolicy {policy}, but the operator has no managed PostgreSQL "
                f"server; database {self.database} was left where it is.",
            )
        owner = self.owner
        try:
            seconds = int(DRAIN_TIMEOUT.total_seconds())
            sessions, waiting = await self._stop_and_drain(
                postgres, f"to end before dropping it; after {seconds}s they are terminated"
            )
            if waiting is not None:
                return waiting
            await postgres.drop(namespace=owner.namespace, environment=owner.name)
        except ManagedDatabaseError as exc:
            return await self._server_trouble(exc)
        terminated = f"; {sessions} session(s) still open were terminated" if sessions else ""
        kept = f"; its final snapshot is Backup {snapshot}" if snapshot else ""
        post(
            self.raw,
            reason="DatabaseDropped",
            message=f"Database and role {self.database} dropped (deletionPolicy {policy})"
            f"{terminated}{kept}.",
        )
        return Outcome.done()

    async def snapshot(self, postgres: ManagedPostgres) -> Outcome:
        """deletionPolicy Snapshot: take the final snapshot, wait for it, then drop."""
        owner, database = self.owner, self.database
        name = snapshots.final_snapshot_name(owner.name, owner.uid)
        backup = await KindStore(self.reconciler.kube, Backup).find(owner.namespace, name)
        recorded = self.env.status.final_snapshot
        expected = snapshots.final_snapshot(self.env, self.reconciler.settings)
        step = snapshots.assess(
            backup,
            name=name,
            made=recorded.uid if recorded is not None and recorded.name == name else None,
            environment=owner.name,
            database=database,
            expected=Backup.model_validate(expected),
            since=self.env.metadata.deletion_timestamp,
        )
        if step.adopt is not None:
            # Written with this pass's status (a drop that succeeds writes none: no need).
            self._note(FinalSnapshot(name=name, uid=step.adopt))
            post(
                self.raw,
                reason="FinalSnapshotRecorded",
                message=f"Backup {name} (uid {step.adopt}) is the final snapshot of database "
                f"{database}: this deletion created it, and an earlier pass stopped before "
                "recording it.",
            )
        if step.action is SnapshotAction.DROP:
            return await self.drop(snapshot=name)
        if step.action is SnapshotAction.CREATE:
            try:
                if not await postgres.exists(namespace=owner.namespace, environment=owner.name):
                    post(
                        self.raw,
                        reason="NothingToSnapshot",
                        message=f"Database {database} does not exist: there is no final "
                        "snapshot to take.",
                    )
                    return await self.drop()
                return await self._start_snapshot(postgres)
            except ManagedDatabaseError as exc:
                return await self._server_trouble(exc)
        if step.action is SnapshotAction.WAIT:
            await self._write_deleting(step.verdict)
            return Outcome.again(step.verdict.message, delay=SNAPSHOT_POLL_SECONDS)
        return await self._hold(step.verdict)

    async def _start_snapshot(self, postgres: ManagedPostgres) -> Outcome:
        """Create the final snapshot, once the key is there and the sessions have drained."""
        owner, database = self.owner, self.database
        kube, settings = self.reconciler.kube, self.reconciler.settings
        secret = settings.default_backup_key_secret
        try:
            # Checked here, as the Backup would otherwise spend its attempts failing on it.
            await load_key(kube, owner.namespace, SecretKeyReference(name=secret, key=KEY_ENTRY))
        except BackupError as exc:
            problem = (
                f"{exc.message} in namespace {owner.namespace}; create it with the entry "
                f"{KEY_ENTRY} holding 32 random bytes (base64)"
            )
            return await self._hold(snapshots.cannot_start(problem, database=database))
        try:
            # And its login, which the Backup reads from the database Secret: a deletion
            # that cascades in the foreground has deleted that Secret with the children.
            await tenant_login(kube, owner.namespace, owner.name)
        except BackupError as exc:
            problem = (
                f"{exc.message} (deleted with the children, as by --cascade=foreground?), so "
                "no Backup can log in as its role"
            )
            return await self._hold(snapshots.cannot_start(problem, database=database))
        seconds = int(DRAIN_TIMEOUT.total_seconds())
        # The workload stops first, so the snapshot holds its last writes.
        _, waiting = await self._stop_and_drain(
            postgres,
            f"to end before taking its final snapshot; after {seconds}s it is taken regardless",
        )
        if waiting is not None:
            return waiting
        manifest = snapshots.final_snapshot(self.env, settings)
        name = manifest["metadata"]["name"]
        before = self.env.status.final_snapshot
        verdict = snapshots.taking(name, database=database)
        # Recorded before the create: should this pass stop after it (or lose its answer),
        # the next one knows that the Backup it finds may be its own (snapshots.made_here).
        self._note(FinalSnapshot(name=name, uid=snapshots.CREATING))
        await self._write_record()
        try:
            created = await KindStore(kube, Backup).create_object(manifest)
        except KubeError as exc:
            if exc.status >= 500:
                raise  # it may have been stored: the record stays for the next pass
            self._note(before)  # refused: nothing was created
            if namespace_terminating(exc):
                # Its Backups go with the namespace, the artifacts with them.
                problem = f"namespace {owner.namespace} is being deleted, and the snapshot with it"
            else:  # a quota, an admission policy: held where status and Events say why
                problem = f"the apiserver refused its Backup {name} ({exc})"
            return await self._hold(snapshots.cannot_start(problem, database=database))
        if created is None:
            # Another Backup took the name since this pass looked: the next pass holds.
            self._note(before)
        else:
            # The uid of the object this create made: a read afterwards could find
            # another, made under the name once this one was deleted.
            uid = (created.get("metadata") or {}).get("uid")
            if uid:  # else the record stays CREATING, and the next pass recognises it
                self._note(FinalSnapshot(name=name, uid=str(uid)))
            post(
                self.raw,
                reason="FinalSnapshotStarted",
                message=f"Taking the final snapshot of database {database}: Backup {name}.",
            )
        await self._write_deleting(verdict)
        return Outcome.again(verdict.message, delay=SNAPSHOT_POLL_SECONDS)

    async def _stop_and_drain(
        self, postgres: ManagedPostgres, then: str
    ) -> tuple[int, Outcome | None]:
        """Delete the Deployment, so that its connections end, and count the sessions left:
        with a wait while some remain and ``DRAIN_TIMEOUT`` has not passed yet."""
        owner = self.owner
        await delete_child(
            self.reconciler.kube,
            ChildRef("apps/v1", "Deployment", owner.name),
            namespace=owner.namespace,
            owner_uid=owner.uid,
        )
        sessions = await postgres.active_connections(
            namespace=owner.namespace, environment=owner.name
        )
        if not sessions or self.runtime >= DRAIN_TIMEOUT:
            return sessions, None
        message = f"Waiting for {sessions} session(s) on database {self.database} {then}."
        verdict = report.Verdict(ConditionStatus.FALSE, "DrainingConnections", message)
        await self._write_deleting(verdict)
        return sessions, Outcome.again(message, delay=DRAIN_RECHECK_SECONDS)

    async def _hold(self, verdict: report.Verdict) -> Outcome:
        """Keep the database and the environment: say why, and look again now and then."""
        if await self._write_deleting(verdict):  # once per reason, not per retry
            post(self.raw, warning=True, reason=verdict.reason, message=verdict.message)
        delay = self.reconciler.settings.reconcile_interval * SNAPSHOT_RECHECK_INTERVALS
        return Outcome.again(verdict.message, delay=delay)

    async def _server_trouble(self, exc: ManagedDatabaseError) -> Outcome:
        """The database server failed us: hold the deletion, retried with backoff."""
        verdict = report.Verdict(ConditionStatus.FALSE, exc.reason, exc.message)
        if await self._write_deleting(verdict):  # once per reason, not per retry
            post(
                self.raw,
                warning=True,
                reason="DatabaseNotDropped",
                message=f"{exc.reason}: {exc.message}",
            )
        return Outcome.again(f"cannot drop database {self.database}: {exc.message}")

    def _note(self, record: FinalSnapshot | None) -> None:
        """Have this pass's status writes record ``record`` as ``status.finalSnapshot``
        (``None``: none)."""
        status = self.env.status.model_copy(update={"final_snapshot": record})
        self.env = self.env.model_copy(update={"status": status})

    async def _write_record(self) -> None:
        """Write ``status.finalSnapshot`` as this pass noted it, the rest of the status as
        it is (Ready keeps saying what it said)."""
        await self._write(self.env.status)

    async def _write_deleting(self, verdict: report.Verdict) -> bool:
        """Write phase Deleting with ``verdict`` as Ready (and ``status.finalSnapshot`` as
        this pass noted it); whether that changed Ready's reason."""
        env = self.env
        previous = report.condition(env.status, EnvironmentConditionType.READY)
        await self._write(report.deleting(env, verdict=verdict))
        if env.status.phase is not EnvironmentPhase.DELETING:
            post(
                self.raw,
                reason="PhaseChanged",
                message=f"{env.status.phase or 'New'} -> Deleting: {verdict.message}",
            )
        return previous is None or previous.reason != verdict.reason

    async def _write(self, status: EnvironmentStatus) -> None:
        """Write ``status``; the pass's later writes build on it."""
        await self.reconciler.environments.write_status(
            self.owner.namespace,
            self.owner.name,
            report.status_patch(status)["status"],
            uid=self.owner.uid,
        )
        self.env = self.env.model_copy(update={"status": status})
