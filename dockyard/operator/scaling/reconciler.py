"""Reconcile passes over one ScalingPolicy: accept or refuse it, apply its HPA, report.

Whatever triggers a pass (a spec change, the resume at start-up, the periodic refresh
that moves schedule windows, a Restore changing in the namespace, a rival policy going
away), it does the same idempotent work under the policy's lock: read the policy, its
rivals, its Environment and the Restores of the namespace afresh; decide whether the
policy is in force and whether it is paused; apply the HPA with the replica range that
follows (or delete it, for a refused policy); and write the status when it changed.
Kubernetes Events record the transitions: accepted or refused, paused or resumed, a
schedule window opening or closing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Final

import aiohttp

from dockyard.core.conditions import Verdict
from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.backup import Backup
from dockyard.core.models.environment import Environment
from dockyard.core.models.restore import Restore
from dockyard.core.models.scaling import ScalingPolicy, ScalingPolicyStatus
from dockyard.core.resources import DEPLOYMENTS, HORIZONTAL_POD_AUTOSCALERS, ChildRef, Manifest
from dockyard.operator.apply import ChildConflict, apply, controlled_by, delete_child, get
from dockyard.operator.builders import scaling as builders
from dockyard.operator.builders import tiers
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.builders.scaling_windows import active_schedule, schedule_problems
from dockyard.operator.outcomes import Outcome
from dockyard.operator.scaling import decisions
from dockyard.operator.scaling import status as report
from dockyard.operator.store import InvalidObject, KindStore, ObjectLocks, deleting

logger = logging.getLogger(__name__)

Key = tuple[str, str]
"""A policy's namespace and name."""
Clock = Callable[[], datetime]

# Passes the periodic refresh runs at once, so a thousand policies do not become a
# thousand simultaneous reads of the apiserver.
_CONCURRENT_REFRESHES: Final = 16


def _utc_now() -> datetime:
    return datetime.now(UTC)


class ScalingReconciler:
    """Reconciles ScalingPolicies; one per operator, kept in Kopf's memo.

    ``clock`` says what time it is (schedule windows are judged by it); tests pass their
    own.
    """

    def __init__(self, *, kube: KubeClient, clock: Clock = _utc_now) -> None:
        self.kube = kube
        self.clock = clock
        self.policies = KindStore(kube, ScalingPolicy)
        self.environments = KindStore(kube, Environment)
        self.restores = KindStore(kube, Restore)
        self.backups = KindStore(kube, Backup)
        self.locks: ObjectLocks[Key] = ObjectLocks()
        # The policies the operator serves, for the periodic passes; handlers.scaling
        # keeps it from watch events.
        self.known: set[Key] = set()

    # -- the entry points ------------------------------------------------------------------

    async def reconcile(self, key: Key) -> Outcome:
        """One pass, for a spec change or the resume at start-up."""
        async with self.locks.lock(key):
            return await self._reconcile(key)

    async def _reconcile(self, key: Key) -> Outcome:
        raw = await self.policies.read(*key)
        if raw is None or deleting(raw):
            self.locks.forget(key)
            return Outcome.done()
        return await self._pass(raw)

    async def refresh(self, key: Key) -> None:
        """A pass for the timer or a watch event; failures wait for the next one.

        Events that arrive while a pass waits for the lock are served by that pass, as
        it reads everything afresh. One arriving while a pass runs queues the next: the
        pass may have read the Restore that paused or resumed the policy before it changed.
        """
        await self.locks.coalesced(key, lambda: self._refresh(key))

    async def _refresh(self, key: Key) -> None:
        try:
            await self._reconcile(key)
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning(
                "scaling policy pass failed; the next periodic pass retries",
                extra={"namespace": key[0], "policy": key[1], "error": str(exc)},
            )

    async def refresh_namespace(self, namespace: str, *, skip: str | None = None) -> None:
        """A pass for every policy of ``namespace`` (but ``skip``): a Restore there changed,
        or a policy that may have held an environment went away."""
        listing = await self.policies.items(namespace)
        names = sorted(str(item["metadata"]["name"]) for item in listing)
        await asyncio.gather(*(self.refresh((namespace, name)) for name in names if name != skip))

    # -- one pass --------------------------------------------------------------------------

    async def _pass(self, raw: Manifest) -> Outcome:
        try:
            policy = self.policies.parse(raw)
        except InvalidObject as invalid:
            # The API server validates with the same schema, so only a CRD older than
            # the operator gets here; say so rather than guess.
            logger.error("unreadable scaling policy", extra={"error": invalid.problem})
            return Outcome.failed(f"the policy does not match the operator's schema: {invalid}")
        owner = Owner.of(policy)
        target = policy.spec.target_ref.name
        rivals = await self.policies.in_namespace(owner.namespace)
        environment = await self.environments.find(owner.namespace, target)
        # The Deployment of the target's name must be the environment's own (or not be
        # there yet): an HPA would scale whatever Deployment has that name.
        deployment = (
            None
            if environment is None
            else await get(self.kube, DEPLOYMENTS.path(owner.namespace, target))
        )
        verdict = decisions.acceptance(
            policy,
            rival=decisions.prevailing_rival(policy, rivals),
            environment=environment,
            schedule_problems=schedule_problems(policy.spec.schedules),
            foreign_target=deployment is not None
            and environment is not None
            and not controlled_by(deployment, environment.metadata.uid or ""),
        )
        if not verdict.holds or environment is None:
            await self._remove_hpa(policy, owner)
            status = report.summarize(
                policy, acceptance=verdict, pause=None, replicas=None, hpa=None
            )
            await self._write_status(raw, policy, owner, status)
            return Outcome.done()
        pause = await self._pause(policy, owner.namespace)
        pinned = None
        if pause is not None:
            current = await get(
                self.kube,
                HORIZONTAL_POD_AUTOSCALERS.path(owner.namespace, builders.hpa_name(policy)),
            )
            # With no Deployment yet (a paused policy made with its environment), the
            # count the environment declares is the one to hold.
            declared = (
                environment.spec.replicas or tiers.TIER_DEFAULTS[environment.spec.tier].replicas
            )
            pinned = decisions.pinned_replicas(
                deployment,
                current,
                declared,
                held=decisions.held_replicas(policy, current),
            )
        window = active_schedule(policy.spec.schedules, self.clock())
        replicas = builders.replica_range(policy.spec, window, pinned=pinned)
        try:
            applied = await apply(self.kube, builders.hpa(policy, environment, replicas))
        except (KubeError, ChildConflict) as exc:
            if isinstance(exc, ChildConflict):
                refused = Verdict.of(False, decisions.AcceptanceReason.HPA_CONFLICT, exc.message)
            elif exc.status not in (400, 403, 422):
                # 403 too: an admission policy or webhook that denies answers Forbidden.
                raise
            else:
                refused = Verdict.of(
                    False,
                    decisions.AcceptanceReason.HPA_REJECTED,
                    f"The API server rejected the HorizontalPodAutoscaler: {exc.message}",
                )
                # Not accepted, the environment applies its own count again: the HPA
                # of an earlier pass, left running, would fight it.
                await self._remove_hpa(policy, owner)
            status = report.summarize(
                policy, acceptance=refused, pause=None, replicas=None, hpa=None
            )
            await self._write_status(raw, policy, owner, status)
            return Outcome.failed(refused.message)
        status = report.summarize(
            policy, acceptance=verdict, pause=pause, replicas=replicas, hpa=applied.object
        )
        await self._write_status(raw, policy, owner, status)
        return Outcome.done()

    async def _pause(self, policy: ScalingPolicy, namespace: str) -> decisions.Pause | None:
        """Why the policy is paused, reading the namespace's Restores only when they matter."""
        if policy.spec.paused or not policy.spec.pause_during_restore:
            return decisions.pause_decision(policy, (), {})
        restores = await self.restores.in_namespace(namespace)
        sources: dict[str, str] = {}
        if decisions.needs_backup_sources(restores):
            backups = await self.backups.in_namespace(namespace)
            sources = {
                str(b.metadata.name): b.spec.environment_ref.name
                for b in backups
                if b.metadata.name
            }
        return decisions.pause_decision(policy, restores, sources)

    async def _remove_hpa(self, policy: ScalingPolicy, owner: Owner) -> None:
        ref = ChildRef(
            HORIZONTAL_POD_AUTOSCALERS.api_version,
            HORIZONTAL_POD_AUTOSCALERS.kind,
            builders.hpa_name(policy),
        )
        await delete_child(self.kube, ref, namespace=owner.namespace, owner_uid=owner.uid)

    async def _write_status(
        self, raw: Manifest, policy: ScalingPolicy, owner: Owner, status: ScalingPolicyStatus
    ) -> None:
        """Write ``status`` when it differs from what is stored, and announce the change."""
        body = report.status_patch(status)["status"]
        if body == report.status_patch(policy.status)["status"]:
            return
        if not await self.policies.write_status(owner.namespace, owner.name, body, uid=owner.uid):
            return  # deleted meanwhile
        # Through the operator's client: passes also run in the periodic task, outside
        # Kopf's handlers (where ``kopf.event`` works).
        for announcement in report.announcements(policy.status, status):
            await self.policies.record(
                raw,
                reason=announcement.reason,
                message=announcement.message,
                warning=announcement.warning,
                now=self.clock(),
            )


async def refresh_periodically(
    reconciler: Callable[[], ScalingReconciler],
    keys: Callable[[], Iterable[Key]],
    interval: float,
) -> None:
    """Every ``interval`` seconds, a pass for every policy ``keys`` names; until cancelled.

    Runs as the operator's one background task (not in a handler), so waiting between
    rounds is its job. A pass that fails unexpectedly is logged with its traceback and
    retried at the next round rather than ending the loop for every other policy.
    """
    limit = asyncio.Semaphore(_CONCURRENT_REFRESHES)

    async def one(key: Key) -> None:
        async with limit:
            await reconciler().refresh(key)

    while True:
        await asyncio.sleep(interval)
        batch = sorted(keys())
        results = await asyncio.gather(*(one(key) for key in batch), return_exceptions=True)
        for key, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                logger.error(
                    "scaling policy pass failed unexpectedly",
                    exc_info=result,
                    extra={"namespace": key[0], "policy": key[1]},
                )
