"""When the namespace now under a name was made: the event log's replay shows a caller
only the events of that namespace, not those of an earlier one of the same name.

A namespace's name may be used again, by another team, once the namespace is deleted.
The event log keeps events by namespace name for ``DOCKYARD_EVENT_RETENTION_DAYS``, so an
event that happened before the namespace of its name was created belongs to an earlier
namespace. (Webhooks follow the same rule: a Webhook's deliveries start after its own
creation.)

The answer is asked as the API itself (``get`` on namespaces) and kept for a few
seconds, and not at all while the namespace is being deleted: a name deleted and made
again within ``BIRTH_TTL`` of a read from before its deletion began is seen as the new
namespace only once that read expires.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from aiocache import SimpleMemoryCache

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.common import ObjectMeta
from dockyard.core.resources import NAMESPACES

BIRTH_TTL: Final = 5.0
"""Seconds a namespace's creation time is kept: a stream's replay asks per event."""


@dataclass(frozen=True, slots=True)
class _Birth:
    created: datetime | None


class NamespaceBirths:
    """The creation time of each namespace now in the cluster, briefly cached."""

    def __init__(self, kube: KubeClient, *, ttl: float = BIRTH_TTL) -> None:
        self.kube = kube
        self.ttl = ttl
        self.cache = SimpleMemoryCache(timeout=None)

    async def born(self, namespace: str) -> datetime | None:
        """When ``namespace`` was created; None while there is no such namespace.

        Raises what the apiserver call raises (``KubeError``, ``DependencyUnavailable``):
        a caller that cannot tell which namespace an event was in must not show it.
        """
        cached = await self.cache.get(namespace)
        if isinstance(cached, _Birth):
            return cached.created
        try:
            body = await self.kube.get(NAMESPACES.path(None, namespace))
        except KubeError as exc:
            if exc.status != 404:
                raise
            return None
        meta = ObjectMeta.model_validate(body.get("metadata") or {})
        if meta.deletion_timestamp is None:
            await self.cache.set(namespace, _Birth(meta.creation_timestamp), ttl=self.ttl)
        return meta.creation_timestamp
