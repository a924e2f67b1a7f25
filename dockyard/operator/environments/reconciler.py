"""Reconcile passes over one Environment: its database, its children, its status, its events.

Whatever triggers a pass (a spec change, the resume at start-up, the drift-repair
timer, a change to one of the children), it does the same idempotent work: take the
environment's lock, read the environment afresh, make sure its database and role exist
with the password its Secret holds, apply every child it should have and delete those
it should not (the Ingress only for a host the environment may publish:
``hosts``), and write the status with the conditions and phase that follow. So a
child deleted or edited by hand is restored by the next pass, and the passes of one
environment never interleave (two would otherwise race to create its password).

A pass that finds nothing to change costs nothing: no apiserver write and no new
database connection. The full database ``ensure`` runs only when its digest (identity,
credentials, ``spec.database``, the ensure steps' version; kept in
``status.database.ensured``) changes, or when one catalog query on a pooled connection
finds the role or database not as it left them. Children are applied only when their
desired manifest or the stored object changed (``children``), and the status is
written only when it differs.
While a ScalingPolicy scales the environment, the Deployment's replicas are its HPA's
to set and the pass leaves them alone (``dockyard.operator.scaling.targets``).

Kubernetes Events record each transition: phase changes, the database provisioned or
unavailable, children restored after drift, a ttl expiring. A ttl deleting an
environment is the operator's own decision, so it is in the audit trail as well.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.backup import Backup
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.declarations import ENVIRONMENT_FIELD
from dockyard.core.models.environment import Environment, EnvironmentPhase, EnvironmentStatus
from dockyard.core.models.restore_drill import RestoreDrill
from dockyard.core.resources import (
    BACKUPS,
    RESTORE_DRILLS,
    SCALING_POLICIES,
    ChildRef,
    Manifest,
)
from dockyard.core.settings import Settings
from dockyard.operator.apply import Applied, Change, ChildConflict, namespace_terminating
from dockyard.operator.builders import environment as builders
from dockyard.operator.builders import tiers
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.database import (
    ManagedPostgres,
)
from dockyard.operator.environments import hosts
from dockyard.operator.environments import status as report
from dockyard.operator.environments.announcements import announce
from dockyard.operator.environments.children import ChildMemory
from dockyard.operator.environments.protection import ProtectionReport, protection_report
from dockyard.operator.environments.provisioning import DatabaseProvisioner, DatabaseStep
from dockyard.operator.environments.secret_refs import refused_secret
from dockyard.operator.outcomes import Outcome
from dockyard.operator.runs.audit import OperatorAudit
from dockyard.operator.scaling import targets as scaling_targets
from dockyard.operator.store import InvalidObject, KindStore, ObjectLocks, deleting, post

logger = logging.getLogger(__name__)

# How often an environment whose child's name is taken by someone else's object looks again.
CONFLICT_RETRY_SECONDS = 60.0

Key = tuple[str, str]
"""An environment's namespace and name."""


@dataclass(slots=True)
class _Children:
    """What a pass did to the children: each change (``None``: deleted), and the Deployment."""

    changes: list[tuple[ChildRef, Change | None]] = field(default_factory=list)
    deployment: Manifest | None = None
    autoscaled: bool = False

    def record(self, applied: Applied) -> None:
        self.changes.append((applied.ref, applied.change))
        if applied.ref.kind == "Deployment":
            self.deployment = applied.object


class Reconciler:
    """Reconciles Environments; one per operator, kept in Kopf's memo.

    ``postgres`` is ``None`` when the operator has no managed PostgreSQL server, in which
    case environments that want a database wait for one (DatabaseReady=False). ``audit``
    records the deletions a ttl decides (None: not recorded, in unit tests).
    """

    def __init__(
        self,
        *,
        kube: KubeClient,
        postgres: ManagedPostgres | None,
        settings: Settings,
        audit: OperatorAudit | None = None,
    ) -> None:
        self.kube = kube
        self.postgres = postgres
        self.settings = settings
        self.audit = audit
        self.environments = KindStore(kube, Environment)
        # Read on every pass for BackupsHealthy and DrillPassing (environments/protection).
        self.backups = KindStore(kube, Backup)
        self.drills = KindStore(kube, RestoreDrill)
        self.locks: ObjectLocks[Key] = ObjectLocks()
        self.children = ChildMemory()
        self.database = DatabaseProvisioner(kube=kube, postgres=postgres, children=self.children)

    async def fetch(self, key: Key) -> Manifest | None:
        """The environment as stored now, or ``None`` when it is gone."""
        return await self.environments.read(*key)

    # -- the entry points ------------------------------------------------------------------

    async def reconcile(self, key: Key) -> Outcome:
        """One pass, for a spec change or the resume at start-up."""
        async with self.locks.lock(key):
            raw = await self.fetch(key)
            if raw is None or deleting(raw):
                return Outcome.done()
            return await self._pass(raw)

    async def repair(self, key: Key) -> None:
        """The periodic pass: delete the environment if its ttl has passed, else reconcile."""
        async with self.locks.lock(key):
            raw = await self.fetch(key)
            if raw is None or deleting(raw):
                return
            if await self._expire_if_due(raw):
                return
            await self._pass(raw)

    async def reconcile_owner(self, key: Key) -> None:
        """A pass after one of the environment's children changed or went away.

        Changes to several children (or several changes to one) while a pass waits for
        the lock are served by that one pass, as it reads everything afresh.
        """
        await self.locks.coalesced(key, lambda: self._pass_after_child(key))

    async def _pass_after_child(self, key: Key) -> None:
        try:
            raw = await self.fetch(key)
            if raw is None or deleting(raw):
                return
            await self._pass(raw)
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            # Not retried here: the drift-repair timer runs the same pass shortly.
            logger.warning(
                "reconcile after a child changed failed; the next periodic pass retries",
                extra={"namespace": key[0], "environment": key[1], "error": str(exc)},
            )

    async def refresh_status(self, key: Key) -> None:
        """The status after the Deployment's status changed and nothing else did.

        Children and the database are as the last pass left them (the caller checked the
        Deployment against what was applied), so only the status is computed again: from
        the Deployment in the index, the database's verdict as the status holds it, and
        the backups and drills in theirs. A pass whose spec is not yet handled, or whose
        status lacks a verdict, does the full pass instead.
        """
        if key in self.locks.queued:
            return  # a full pass is waiting: it reads everything afresh
        async with self.locks.lock(key):
            raw = await self.fetch(key)
            if raw is None or deleting(raw):
                return
            try:
                env = self.environments.parse(raw)
            except InvalidObject:
                return  # the spec's own pass reports it
            owner = Owner.of(env)
            seen = self.children.seen(owner.namespace, "Deployment", owner.name)
            known: report.DatabaseReport | None = None
            host: report.Verdict | None = None
            try:
                known = report.database_report(env)
                host = report.host_verdict(env)
            except LookupError:
                seen = None
            if seen is None or env.status.observed_generation != env.metadata.generation:
                await self._pass(raw)
                return
            policies = self.children.related(SCALING_POLICIES, owner.namespace, owner.name)
            children = _Children(
                deployment=seen.deployment,
                autoscaled=not env.spec.suspend
                and scaling_targets.scaling_policy_for(policies or (), owner.name) is not None,
            )
            status = report.summarize(
                env,
                database=known,
                workload=report.WorkloadReport.from_deployment(
                    children.deployment, _desired_replicas(env, children)
                ),
                protection=await self._protection(owner) if env.spec.database.enabled else None,
                host=host,
            )
            if status != env.status and await self._write_status(owner, status):
                announce(raw, env, status, ())

    # -- one pass --------------------------------------------------------------------------

    async def _pass(self, raw: Manifest) -> Outcome:
        try:
            env = self.environments.parse(raw)
        except InvalidObject as invalid:
            return await self._reject_spec(raw, invalid.problem)
        if (refused := await refused_secret(self.kube, env)) is not None:
            # Unlike other invalid specs, the pods are not left as they were: a Secret
            # allowed when they were made (absent then, say) may be a ServiceAccount token
            # now, and the next pod the Deployment starts would read it.
            owner = Owner.of(env)
            await self.children.delete(
                self.kube, ChildRef("apps/v1", "Deployment", owner.name),
                namespace=owner.namespace, owner_uid=owner.uid,
            )  # fmt: skip
            stopped = f"{refused}; its Deployment is deleted until then, so that no pod reads it"
            return await self._reject_spec(raw, stopped)
        host = await hosts.admission(self.kube, env, self.settings.ingress_domains)
        owner = Owner.of(env)
        database: DatabaseStep | None = None
        children = _Children()
        failure: report.Verdict | None = None
        conflicted: ChildConflict | None = None
        try:
            database = await self.database.step(env, owner)
            if database is not None and database.secret is not None:
                children.record(database.secret)
            await self._apply_children(
                env, owner, database, children, host_admitted=host is None or host.holds
            )
        except KubeError as exc:
            if namespace_terminating(exc):
                return Outcome.done()
            if exc.status not in (400, 422):
                raise
            # The API server refuses a child built from this spec: retrying cannot help.
            failure = report.Verdict(
                ConditionStatus.FALSE,
                "ChildRejected",
                f"The API server rejected a child of the environment: {exc.message}",
            )
        except ChildConflict as conflict:
            # Someone else's object has a child's name: it is not taken over. Looked at
            # again later, since the watch does not see objects Dockyard did not make.
            conflicted = conflict
            failure = report.Verdict(ConditionStatus.FALSE, conflict.reason, conflict.message)
        workload = report.WorkloadReport.from_deployment(
            children.deployment, _desired_replicas(env, children)
        )
        status = report.summarize(
            env,
            database=database.report if database else None,
            workload=workload,
            failure=failure,
            protection=await self._protection(owner) if env.spec.database.enabled else None,
            host=host,
        )
        if status != env.status and not await self._write_status(owner, status):
            return Outcome.done()
        announce(raw, env, status, children.changes)
        if conflicted is not None:
            return Outcome.again(conflicted.message, delay=CONFLICT_RETRY_SECONDS)
        if failure is not None:
            return Outcome.failed(failure.message)
        if database is not None and database.retryable:
            verdict = database.report.verdict
            return Outcome.again(f"database not ready: {verdict.reason}: {verdict.message}")
        return Outcome.done()

    async def _apply_children(
        self,
        env: Environment,
        owner: Owner,
        database: DatabaseStep | None,
        into: _Children,
        *,
        host_admitted: bool,
    ) -> None:
        """Apply every child the spec asks for, delete those it does not (see builders)."""
        policies = self.children.related(SCALING_POLICIES, owner.namespace, owner.name)
        into.autoscaled = not env.spec.suspend and (
            (
                scaling_targets.scaling_policy_for(policies, owner.name)
                if policies is not None
                else await scaling_targets.scaling_policy_of(self.kube, owner.namespace, owner.name)
            )
            is not None
        )
        if into.autoscaled:
            # The HPA sets the replicas: hand the field over before the Deployment
            # stops applying it, or the API server would reset it to 1.
            await scaling_targets.hand_over_replicas(
                self.kube,
                owner.namespace,
                owner.name,
                fallback=env.spec.replicas or tiers.TIER_DEFAULTS[env.spec.tier].replicas,
            )
        desired = builders.workload_children(
            env,
            ingress_namespace=self.settings.ingress_namespace,
            credentials_digest=database.credentials_digest if database else None,
            autoscaled=into.autoscaled,
            host_admitted=host_admitted,
        )
        # The children do not depend on one another at apply time (a Deployment may name
        # a ServiceAccount or Secret that appears a moment later; its controller retries),
        # so they are applied together: one round trip per pass instead of one per child.
        # All are claimed first: one object of a child's name that is not the
        # environment's (ChildConflict) stops the pass before any of them is applied.
        children = self.children
        await asyncio.gather(*(children.claim(self.kube, m) for m in desired.present))
        applied = await asyncio.gather(*(children.apply(self.kube, m) for m in desired.present))
        for result in applied:
            into.record(result)
        deleted = await asyncio.gather(
            *(
                children.delete(self.kube, ref, namespace=owner.namespace, owner_uid=owner.uid)
                for ref in desired.absent
            )
        )
        into.changes.extend(
            (ref, None) for ref, gone in zip(desired.absent, deleted, strict=True) if gone
        )

    async def _protection(self, owner: Owner) -> ProtectionReport | None:
        """What the environment's Backups and RestoreDrills say; ``None`` (the status keeps
        what it said) when they cannot be listed."""
        # Filtered by the API server (the CRDs' selectableFields): only this
        # environment's own, however many others share the namespace.
        backups = self.children.related(BACKUPS, owner.namespace, owner.name)
        drills = self.children.related(RESTORE_DRILLS, owner.namespace, owner.name)
        if backups is not None and drills is not None:
            return protection_report(
                owner.name, self.backups.valid(backups), self.drills.valid(drills)
            )
        own = {"fieldSelector": f"{ENVIRONMENT_FIELD.removeprefix('.')}={owner.name}"}
        try:
            listed = await asyncio.gather(
                self.backups.in_namespace(owner.namespace, params=own),
                self.drills.in_namespace(owner.namespace, params=own),
            )
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning(
                "backups and drills not listed; BackupsHealthy and DrillPassing keep their "
                "last verdicts",
                extra={"namespace": owner.namespace, "environment": owner.name, "error": str(exc)},
            )
            return None
        return protection_report(owner.name, *listed)

    async def _reject_spec(self, raw: Manifest, problem: str) -> Outcome:
        previous = report.readable_status(raw)
        meta = raw["metadata"]
        status = report.invalid_spec(previous, meta.get("generation"), problem)
        await self.environments.write_status(
            meta["namespace"], meta["name"], report.status_patch(status)["status"], uid=meta["uid"]
        )
        if previous.phase is not EnvironmentPhase.FAILED:
            post(raw, warning=True, reason="InvalidSpec", message=problem)
        return Outcome.failed(problem)

    async def _write_status(self, owner: Owner, status: EnvironmentStatus) -> bool:
        """Write ``status``; ``False`` when the environment was deleted meanwhile."""
        body = report.status_patch(status)["status"]
        return await self.environments.write_status(
            owner.namespace, owner.name, body, uid=owner.uid
        )

    # -- ttl -------------------------------------------------------------------------------

    async def _expire_if_due(self, raw: Manifest, now: datetime | None = None) -> bool:
        """Delete a development environment whose ttl has passed; whether it did."""
        try:
            env = self.environments.parse(raw)
        except InvalidObject:
            return False  # the pass reports the spec as invalid
        due = report.expires_at(env)
        if due is None or due > (now or datetime.now(UTC)):
            return False
        owner = Owner.of(env)
        passed = f"ttl {env.spec.ttl} passed at {due.isoformat()}"
        post(raw, reason="Expired", message=f"{passed}; deleting the environment.")
        deleted = await self.environments.delete(owner.namespace, owner.name, uid=owner.uid)
        if deleted and self.audit is not None:
            # What becomes of the data is the deletion policy's: part of the decision.
            database = env.spec.database
            policy = database.deletion_policy.value if database.enabled else None
            fate = f"its database's deletionPolicy is {policy}" if policy else "it has no database"
            await self.audit.record(
                "DELETE environments (ttl)",
                "environments",
                owner.namespace,
                owner.name,
                f"{passed}; {fate}",
                ttl=env.spec.ttl,
                deletionPolicy=policy,
            )
        return True


def _desired_replicas(env: Environment, children: _Children) -> int:
    """Pods the environment should run: what its HPA set when a policy scales it."""
    if children.autoscaled and children.deployment is not None:
        replicas = (children.deployment.get("spec") or {}).get("replicas")
        if isinstance(replicas, int):
            return replicas
    return tiers.desired_replicas(env.spec)
