"""Leader election: of the operator's replicas, the one holding a coordination.k8s.io
Lease reconciles; the others stand by, watching it.

The rules are client-go's leader election:

- The leader renews the Lease every ``retry`` seconds. When it has not managed to for
  ``renew_deadline`` seconds it gives the lead up: its Kopf stops and the process exits,
  so that it never reconciles beside a new leader (``renew_deadline`` is shorter than
  ``duration``, so it stops before anyone may take over). A renewal whose calls hang
  (an apiserver that accepts and never answers) is cut off at that deadline too. The
  deadline counts from when the last renewal that succeeded was *sent*, not from when
  its answer came: the apiserver wrote its ``renewTime`` in between, and a standby counts
  from seeing that write, however late a loaded apiserver answers the leader.
- A standby takes the Lease when the holder's renewals have stopped for ``duration``
  seconds, measured on its own clock from when it last saw the Lease change (the
  replicas' clocks need not agree), or at once when the Lease is released.
- Every write carries the ``resourceVersion`` it read: of two standbys, one wins.
- A leader that stops cleanly (SIGTERM, a rolling update) releases the Lease, so its
  successor takes over within ``retry`` seconds instead of ``duration``.

The Lease is ``dockyard-operator`` in the platform namespace for an operator of the whole
cluster; an operator of some namespaces only (``--namespace``) has a Lease of its own,
named for them, so operators of different scopes do not exclude each other.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

import aiohttp

from dockyard.core.breakers import DependencyUnavailable
from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.settings import Settings

logger = logging.getLogger(__name__)

LEASE_NAME: Final = "dockyard-operator"
_LEASES: Final = "/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
_FAILURES: Final = (KubeError, aiohttp.ClientError, TimeoutError, DependencyUnavailable)


def lease_name(namespaces: Sequence[str]) -> str:
    """The Lease of an operator of ``namespaces`` (all of them when empty)."""
    if not namespaces:
        return LEASE_NAME
    scope = hashlib.sha256(",".join(sorted(namespaces)).encode()).hexdigest()[:10]
    return f"{LEASE_NAME}-{scope}"


def identity() -> str:
    """This replica's name in the Lease: the pod's (``POD_NAME``), else host and a nonce."""
    pod = os.environ.get("POD_NAME")
    return pod or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Leadership:
    """This replica's side of the election for one Lease."""

    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration: float,
        renew_deadline: float,
        retry: float,
    ) -> None:
        if not retry < renew_deadline < duration:
            raise ValueError(
                "DOCKYARD_OPERATOR_LEASE_RETRY < _RENEW_DEADLINE < _DURATION must hold, got "
                f"{retry:g} < {renew_deadline:g} < {duration:g}"
            )
        self.kube = kube
        self.path = f"{_LEASES.format(namespace=namespace)}/{name}"
        self.collection = _LEASES.format(namespace=namespace)
        self.name = name
        self.identity = identity
        self.duration = duration
        self.renew_deadline = renew_deadline
        self.retry = retry
        self.leading = False
        # The Lease as last seen, and when (on this replica's clock) it last changed.
        self._seen: tuple[Any, Any] | None = None
        self._seen_at = time.monotonic()
        # When the look that last took or renewed the Lease began: ``hold`` counts its
        # deadline from there (its write landed after that, never before).
        self._led_at = time.monotonic()

    @classmethod
    def of(cls, kube: KubeClient, settings: Settings, namespaces: Sequence[str]) -> Leadership:
        return cls(
            kube,
            namespace=settings.namespace,
            name=lease_name(namespaces),
            identity=identity(),
            duration=settings.operator_lease_duration,
            renew_deadline=settings.operator_lease_renew_deadline,
            retry=settings.operator_lease_retry,
        )

    async def acquire(self) -> None:
        """Return once this replica leads; until then, stand by."""
        waiting = False
        while True:
            attempt = time.monotonic()
            try:
                if await self.try_lead():
                    self._led_at = attempt
                    logger.info(
                        "leading: this replica reconciles",
                        extra={"lease": self.name, "identity": self.identity},
                    )
                    return
            except _FAILURES as exc:
                logger.warning("lease not read", extra={"lease": self.name, "error": str(exc)})
            if not waiting:
                logger.info(
                    "standing by: another replica leads",
                    extra={"lease": self.name, "identity": self.identity},
                )
                waiting = True
            await asyncio.sleep(self.retry)

    async def hold(self, lost: asyncio.Event) -> None:
        """Renew the Lease every ``retry`` seconds; set ``lost`` and return once renewing
        has failed for ``renew_deadline`` seconds (or another replica took it)."""
        renewed = self._led_at
        while True:
            await asyncio.sleep(self.retry)
            attempt = time.monotonic()
            left = renewed + self.renew_deadline - attempt
            try:
                # A call that hangs ends at the deadline: past it, a standby may take over
                # soon, and this replica must have stopped by then.
                async with asyncio.timeout(max(left, 0.0)):
                    if await self.try_lead():
                        # From the attempt, not its answer: the renewTime was written in
                        # between, and a standby counts from seeing it.
                        renewed = attempt
                        continue
            except _FAILURES as exc:
                logger.warning("lease not renewed", extra={"lease": self.name, "error": str(exc)})
            if not self.leading or time.monotonic() - renewed >= self.renew_deadline:
                self.leading = False
                logger.error(
                    "lead lost: stopping so as never to reconcile beside another leader",
                    extra={"lease": self.name, "identity": self.identity},
                )
                lost.set()
                return

    async def release(self) -> None:
        """Give the Lease up at a clean stop, so a standby takes over at once."""
        if not self.leading:
            return
        self.leading = False
        try:
            lease = await self.kube.get(self.path)
            spec = lease.get("spec") or {}
            if spec.get("holderIdentity") != self.identity:
                return
            spec.update({"holderIdentity": None, "leaseDurationSeconds": 1, "renewTime": _now()})
            await self.kube.request("PUT", self.path, body={**lease, "spec": spec})
            logger.info("lease released", extra={"lease": self.name, "identity": self.identity})
        except _FAILURES as exc:
            logger.warning("lease not released", extra={"lease": self.name, "error": str(exc)})

    async def try_lead(self) -> bool:
        """One look: take or renew the Lease when this replica may; whether it leads."""
        try:
            lease = await self.kube.get(self.path)
        except KubeError as exc:
            if exc.status != 404:
                raise
            return await self._create()
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        seen = (holder, spec.get("renewTime"))
        if seen != self._seen:
            self._seen, self._seen_at = seen, time.monotonic()
        if holder and holder != self.identity:
            self.leading = False
            if time.monotonic() - self._seen_at < self.duration:
                return False  # a live leader: stand by
        now = _now()
        taking = holder != self.identity
        spec = {
            **spec,
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "renewTime": now,
        }
        if taking:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
        try:
            # The resourceVersion read: of two replicas taking it, one gets 409.
            await self.kube.request("PUT", self.path, body={**lease, "spec": spec})
        except KubeError as exc:
            if exc.status != 409:
                raise
            # Written since our read. A take lost the race; a renewal is tried again, as
            # client-go does, until the renew deadline: the next read shows whether
            # another replica took the Lease (then this one stops at once).
            if taking:
                self.leading = False
            return False
        if taking:
            logger.info(
                "lease taken",
                extra={"lease": self.name, "identity": self.identity, "from": holder or None},
            )
        self.leading = True
        return True

    async def _create(self) -> bool:
        now = _now()
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "labels": {"app.kubernetes.io/part-of": "dockyard"},
            },
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.duration),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        try:
            await self.kube.create(self.collection, body)
        except KubeError as exc:
            if exc.status == 409:
                return False  # another replica made it first
            raise
        self.leading = True
        return True


__all__ = ["LEASE_NAME", "Leadership", "identity", "lease_name"]
