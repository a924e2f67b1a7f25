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
from typing import Final, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.backup import Backup
from dockyard.core.models.common import API_VERSION
from dockyard.core.models.environment import Environment
from dockyard.core.models.restore import Restore
from dockyard.core.models.scaling import ScalingPolicy, ScalingPolicyStatus
from dockyard.core.resources import (
    BACKUPS,
    ENVIRONMENTS,
    EVENTS,
    HORIZONTAL_POD_AUTOSCALERS,
    RESTORES,
    SCALING_POLICIES,
    ChildRef,
    Manifest,
    ResourceType,
    resource_type,
)
from dockyard.operator.apply import apply, delete_child, get
from dockyard.operator.builders import environment as environment_builders
from dockyard.operator.builders import scaling as builders
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.builders.scaling_windows import active_schedule, schedule_problems
from dockyard.operator.outcomes import Outcome
from dockyard.operator.scaling import decisions
from dockyard.operator.scaling import status as report

logger = logging.getLogger(__name__)

Key = tuple[str, str]
"""A policy's namespace and name."""
Clock = Callable[[], datetime]

REPORTING_COMPONENT: Final = "dockyard-operator"
_EVENT_MESSAGE_LIMIT: Final = 1024
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
        self._locks: dict[Key, asyncio.Lock] = {}
        self._queued: set[Key] = set()

    def lock(self, key: Key) -> asyncio.Lock:
        """The lock that serializes everything the operator does to one policy."""
        return self._locks.setdefault(key, asyncio.Lock())

    def forget(self, key: Key) -> None:
        """Drop what is kept in memory about a policy that no longer exists."""
        self._locks.pop(key, None)
        self._queued.discard(key)

    # -- the entry points ------------------------------------------------------------------

    async def reconcile(self, key: Key) -> Outcome:
        """One pass, for a spec change or the resume at start-up."""
        async with self.lock(key):
            raw = await get(self.kube, SCALING_POLICIES.path(*key))
            if raw is None or raw.get("metadata", {}).get("deletionTimestamp"):
                self.forget(key)
                return Outcome.done()
            return await self._pass(raw)

    async def refresh(self, key: Key) -> None:
        """A pass for the timer or a watch event; failures wait for the next one.

        Events that arrive while a pass waits for the lock are served by that pass, as
        it reads everything afresh.
        """
        if key in self._queued:
            return
        self._queued.add(key)
        try:
            await self.reconcile(key)
        except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
            logger.warning(
                "scaling policy pass failed; the next periodic pass retries",
                extra={"namespace": key[0], "policy": key[1], "error": str(exc)},
            )
        finally:
            self._queued.discard(key)

    async def refresh_namespace(self, namespace: str, *, skip: str | None = None) -> None:
        """A pass for every policy of ``namespace`` (but ``skip``): a Restore there changed,
        or a policy that may have held an environment went away."""
        listing = await self._list(SCALING_POLICIES, namespace)
        names = sorted(str(item["metadata"]["name"]) for item in listing)
        await asyncio.gather(*(self.refresh((namespace, name)) for name in names if name != skip))

    # -- one pass --------------------------------------------------------------------------

    async def _pass(self, raw: Manifest) -> Outcome:
        try:
            policy = ScalingPolicy.model_validate(raw)
        except ValidationError as exc:
            # The API server validates with the same schema, so only a CRD older than
            # the operator gets here; say so rather than guess.
            logger.error("unreadable scaling policy", extra={"error": str(exc)})
            return Outcome.failed(f"the policy does not match the operator's schema: {exc}")
        owner = Owner.of(policy)
        target = policy.spec.target_ref.name
        rivals = _parsed(ScalingPolicy, await self._list(SCALING_POLICIES, owner.namespace))
        environment = _parsed_one(
            Environment, await get(self.kube, ENVIRONMENTS.path(owner.namespace, target))
        )
        verdict = decisions.acceptance(
            policy,
            rival=decisions.prevailing_rival(policy, rivals),
            environment=environment,
            schedule_problems=schedule_problems(policy.spec.schedules),
        )
        if not verdict.accepted or environment is None:
            await self._remove_hpa(policy, owner)
            status = report.summarize(
                policy, acceptance=verdict, pause=None, replicas=None, hpa=None
            )
            await self._write_status(raw, policy, owner, status)
            return Outcome.done()
        pause = await self._pause(policy, owner.namespace)
        pinned = None
        if pause is not None:
            deployment = await get(
                self.kube, resource_type("apps/v1", "Deployment").path(owner.namespace, target)
            )
            current = await get(
                self.kube,
                HORIZONTAL_POD_AUTOSCALERS.path(owner.namespace, builders.hpa_name(policy)),
            )
            # With no Deployment yet (a paused policy made with its environment), the
            # count the environment declares is the one to hold.
            declared = (
                environment.spec.replicas
                or environment_builders.TIER_DEFAULTS[environment.spec.tier].replicas
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
        except KubeError as exc:
            if exc.status not in (400, 422):
                raise
            refused = decisions.Acceptance(
                False,
                decisions.AcceptanceReason.HPA_REJECTED,
                f"The API server rejected the HorizontalPodAutoscaler: {exc.message}",
            )
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
        restores = _parsed(Restore, await self._list(RESTORES, namespace))
        sources: dict[str, str] = {}
        if decisions.needs_backup_sources(restores):
            backups = _parsed(Backup, await self._list(BACKUPS, namespace))
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

    async def _list(self, rtype: ResourceType, namespace: str) -> list[Manifest]:
        """The objects of ``rtype`` in ``namespace``; none when the kind is not installed."""
        try:
            listing = await self.kube.get(rtype.path(namespace))
        except KubeError as exc:
            if exc.status == 404:
                return []
            raise
        return list(listing.get("items") or [])

    async def _write_status(
        self, raw: Manifest, policy: ScalingPolicy, owner: Owner, status: ScalingPolicyStatus
    ) -> None:
        """Write ``status`` when it differs from what is stored, and announce the change."""
        patch = report.status_patch(status)
        if patch == report.status_patch(policy.status):
            return
        try:
            await self.kube.merge_patch(
                SCALING_POLICIES.path(owner.namespace, owner.name, "status"), patch
            )
        except KubeError as exc:
            if exc.status == 404:
                return  # deleted meanwhile
            raise
        for announcement in report.announcements(policy.status, status):
            await self._post_event(raw, announcement)

    async def _post_event(self, raw: Manifest, announcement: report.Announcement) -> None:
        """Record a Kubernetes Event about the policy ``raw``.

        Posted through the operator's client rather than ``kopf.event``, which works only
        inside Kopf's handlers, and passes also run in the periodic task. An Event that
        cannot be recorded (a namespace being deleted) does not fail the pass: the status
        already says what the Event would.
        """
        meta = raw["metadata"]
        try:
            await self.kube.create(
                EVENTS.path(meta["namespace"]), _event(raw, announcement, self.clock())
            )
        except KubeError as exc:
            logger.warning(
                "could not record an event",
                extra={"namespace": meta["namespace"], "policy": meta["name"], "error": str(exc)},
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


M = TypeVar("M", bound=BaseModel)


def _parsed(model: type[M], items: list[Manifest]) -> list[M]:
    """The items that parse as ``model``; others are skipped (the API server validated
    them with the same schema, so only objects from an older CRD can fail)."""
    parsed: list[M] = []
    for item in items:
        try:
            parsed.append(model.model_validate(item))
        except ValidationError:
            logger.warning(
                "skipping an object that does not parse",
                extra={"kind": item.get("kind"), "name": item.get("metadata", {}).get("name")},
            )
    return parsed


def _parsed_one(model: type[M], item: Manifest | None) -> M | None:
    return None if item is None else next(iter(_parsed(model, [item])), None)


def _event(raw: Manifest, announcement: report.Announcement, now: datetime) -> Manifest:
    """A core/v1 Event about ``raw`` saying ``announcement``."""
    meta = raw["metadata"]
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": raw.get("apiVersion", API_VERSION),
            "kind": raw.get("kind", ScalingPolicy.crd.kind),
            "name": meta["name"],
            "namespace": meta["namespace"],
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": "Warning" if announcement.warning else "Normal",
        "reason": announcement.reason,
        "message": announcement.message[:_EVENT_MESSAGE_LIMIT],
        "source": {"component": REPORTING_COMPONENT},
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": REPORTING_COMPONENT,
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
