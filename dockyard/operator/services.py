"""What every handler shares, and what Kopf hands a handler, typed.

``main`` builds one ``Services`` at start-up (one API client, one managed PostgreSQL
server, the platform database's catalog, one reconciler or run life cycle per kind)
and closes it at cleanup; nothing is made at import time. Handlers receive Kopf's memo
as an ``OperatorMemo`` and reach what they need as ``memo.services.backups``: one key,
typed, no casts. Kopf gives each object a shallow copy of the memo, so all of them
share the one ``Services``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import kopf
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from dockyard.core import metrics, telemetry
from dockyard.core.kube import KubeClient
from dockyard.core.models.common import API_VERSION
from dockyard.core.resources import ResourceType
from dockyard.core.settings import Settings

if TYPE_CHECKING:
    from dockyard.operator.backups.lifecycle import BackupRuns
    from dockyard.operator.backups.schedules import ScheduleRuns
    from dockyard.operator.database import ManagedPostgres
    from dockyard.operator.drills.lifecycle import DrillRuns
    from dockyard.operator.environments.reconciler import Reconciler
    from dockyard.operator.events.emitter import Emitter
    from dockyard.operator.events.observed import Observed
    from dockyard.operator.restores.lifecycle import RestoreRuns
    from dockyard.operator.runs.catalog import Catalog
    from dockyard.operator.runs.context import RunContext
    from dockyard.operator.scaling.reconciler import ScalingReconciler
    from dockyard.operator.webhooks.dispatcher import Dispatcher


@dataclass(frozen=True, slots=True)
class Services:
    """The operator's clients and its reconcilers, one of each, made at start-up."""

    settings: Settings
    kube: KubeClient
    postgres: ManagedPostgres | None
    """The managed server; ``None`` when none is configured."""
    catalog: Catalog | None
    """The platform database's backup catalog; ``None`` when it was not reachable."""
    runs: RunContext
    """What the Backup, Restore and RestoreDrill life cycles share."""
    environments: Reconciler
    scaling: ScalingReconciler
    backups: BackupRuns
    schedules: ScheduleRuns
    restores: RestoreRuns
    drills: DrillRuns
    drill_metrics: metrics.DrillMetrics
    metrics: metrics.OperatorMetrics
    """Reconcile passes and webhook deliveries (on the drill metrics' registry)."""
    observed: Observed
    """The metrics computed from the objects' status."""
    tracer: trace.Tracer
    """Reconcile spans, continuing the trace of the REST request that caused them."""
    events: Emitter
    """The event log's writer."""
    webhooks: Dispatcher
    """Delivers the event log to the Webhooks."""
    closing: AsyncExitStack = field(default_factory=AsyncExitStack)
    """What cleanup closes, in the reverse order of opening."""

    async def close(self) -> None:
        await self.closing.aclose()


class OperatorMemo(kopf.Memo):
    """Kopf's memo: the settings and the namespaces watched (from ``main.run``), and the
    services (from start-up)."""

    settings: Settings
    namespaces: tuple[str, ...]
    """Names or Kopf's patterns; empty: every namespace."""
    services: Services

    def started(self) -> Services | None:
        """The services, if start-up made them (cleanup runs after a failed start-up too)."""
        found = self.get("services")
        return found if isinstance(found, Services) else None


def namespaced(namespace: str | None, name: str) -> str:
    """The namespace of the object ``name``: Dockyard's kinds are all namespaced, Kopf's
    arguments are general; one without would be a bug that no retry can fix."""
    if namespace is None:
        raise kopf.PermanentError(f"{name} has no namespace")
    return namespace


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def measured(kind: str) -> Callable[[Handler], Handler]:
    """Time a reconcile handler of ``kind``, count its outcome (``OperatorMetrics``) and
    trace it: a span ``reconcile <kind>`` continuing the trace in the object's
    ``dockyard.io/traceparent`` (the REST request that created or changed it), current
    while the handler runs, so its apiserver and SQL calls and the runner Jobs it
    creates belong to that trace.

    Kopf names a handler by its function, and ``functools.wraps`` keeps the name: the
    progress Kopf stored under it stays valid.
    """

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def timed(**kwargs: Any) -> Any:
            memo: OperatorMemo = kwargs["memo"]
            services = memo.started()
            started, outcome = time.perf_counter(), "failed"
            annotations = kwargs.get("annotations") or {}
            tracer = services.tracer if services is not None else trace.get_tracer(__name__)
            try:
                with telemetry.current_span(
                    tracer,
                    f"reconcile {kind}",
                    kind=SpanKind.CONSUMER,
                    attributes={
                        "k8s.namespace.name": kwargs.get("namespace") or "",
                        "dockyard.object": kwargs.get("name") or "",
                        "dockyard.kind": kind,
                    },
                    context=telemetry.continued(annotations.get(telemetry.TRACEPARENT_ANNOTATION)),
                ):
                    result = await handler(**kwargs)
                outcome = "succeeded"
                return result
            except kopf.TemporaryError:
                outcome = "retried"
                raise
            finally:
                if services is not None:
                    services.metrics.reconcile_seconds.labels(kind).observe(
                        time.perf_counter() - started
                    )
                    services.metrics.reconciles.labels(kind, outcome).inc()

        return timed  # type: ignore[return-value]

    return wrap


def reconciles(
    resource: ResourceType, *, on_update: Literal["any", "spec", "none"] = "any"
) -> Callable[[Handler], Handler]:
    """Register ``handler`` as the reconcile handler of ``resource``'s kind: for Kopf's
    resume and create causes and, as ``on_update`` says, for any change, for spec changes
    only or for none; timed and traced by :func:`measured`."""

    def register(handler: Handler) -> Handler:
        handler = measured(resource.kind)(handler)
        if on_update != "none":
            field = "spec" if on_update == "spec" else None
            kopf.on.update(API_VERSION, resource.plural, field=field)(handler)
        kopf.on.create(API_VERSION, resource.plural)(handler)
        kopf.on.resume(API_VERSION, resource.plural)(handler)
        return handler

    return register
