"""Run the operator: Kopf with Dockyard's settings in its memo and its handlers loaded.

This module owns the operator's life cycle: Kopf's own settings, the ``Services`` every
handler shares (made at start-up with one API client and one managed PostgreSQL
server, kept in the memo under one key, closed at cleanup, never made at import time)
and which handlers are registered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import aiohttp
import kopf
from opentelemetry import trace
from prometheus_client import CollectorRegistry

from dockyard.core import metrics, telemetry
from dockyard.core.kube import KubeClient, KubeError, load_config
from dockyard.core.resources import CHILD_TYPES
from dockyard.core.settings import Settings
from dockyard.core.tasks import cancel_and_wait
from dockyard.operator import bookkeeping, index_gate, kopf_logs
from dockyard.operator.builders.metadata import MANAGED_BY, MANAGED_BY_LABEL
from dockyard.operator.leadership import Leadership
from dockyard.operator.services import OperatorMemo, Services

logger = logging.getLogger(__name__)

USER_AGENT = "dockyard-operator"
"""How the operator's own apiserver calls introduce themselves (audit logs count them)."""


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: OperatorMemo, **_: Any) -> None:
    # In annotations, each read only by the object it was written for (bookkeeping.py).
    settings.persistence.progress_storage = bookkeeping.ProgressStorage()
    settings.persistence.diffbase_storage = bookkeeping.DiffBaseStorage()
    settings.persistence.finalizer = "dockyard.io/operator"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # A deletion waits for the object's timers to stop. The drift-repair timer is often
    # mid-pass (or is the one deleting an expired environment), so let it finish rather
    # than fall back to Kopf's one-minute polling.
    settings.background.instant_exit_timeout = 5.0
    settings.background.cancellation_polling = 5.0
    # Unbounded unless configured (docs/configuration.md): with a bound, Kopf 1.45.2 left
    # the environments of a deleted namespace unfinalized in our tests. What a thousand
    # environments at once would race for is bounded instead: the admin pool of the
    # managed server and the apiserver client's connections.
    settings.queueing.worker_limit = memo.settings.operator_worker_limit
    # Children are watched to repair drift quickly; only Dockyard's own, filtered by the
    # API server, so the operator never lists every Secret or Deployment of the cluster.
    for child in CHILD_TYPES:
        settings.watching.label_selectors[child.api_version, child.plural] = (
            f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        )


@kopf.on.startup()
async def connect(memo: OperatorMemo, **kwargs: Any) -> None:
    """Make the services: one API client, one managed server, the catalog, the reconcilers.

    The environment reconciler gets Kopf's live indexes of the children (``kwargs``
    holds every index by its id, empty until Kopf has listed them).

    A step that fails (an apiserver not answering yet) fails the start-up, and Kopf tries
    it again: what this attempt opened is closed first, or every attempt would leave a
    running webhook dispatcher, an API client and a pool behind.
    """
    closing = contextlib.AsyncExitStack()
    try:
        await _start(memo, closing, kwargs)
    except BaseException:
        memo.pop("services", None)  # closed: not to be found by the clean-up
        await closing.aclose()
        raise


async def _start(
    memo: OperatorMemo, closing: contextlib.AsyncExitStack, kwargs: dict[str, Any]
) -> None:
    """``connect``'s steps; whatever they open goes on ``closing``."""
    from dockyard.core.breakers import Breakers
    from dockyard.core.db import create_pool
    from dockyard.operator.backups.lifecycle import BackupRuns
    from dockyard.operator.backups.schedules import ScheduleRuns
    from dockyard.operator.database import ManagedPostgres
    from dockyard.operator.drills.lifecycle import DrillRuns
    from dockyard.operator.environments.children import (
        RELATED_TYPES,
        index_id,
        related_index_id,
    )
    from dockyard.operator.environments.reconciler import Reconciler
    from dockyard.operator.events.emitter import Emitter
    from dockyard.operator.events.observed import Observed
    from dockyard.operator.restores.lifecycle import RestoreRuns
    from dockyard.operator.runs.audit import OperatorAudit, identity
    from dockyard.operator.runs.catalog import Catalog
    from dockyard.operator.runs.context import RunContext
    from dockyard.operator.runs.strays import Scope, sweep_periodically
    from dockyard.operator.scaling.reconciler import ScalingReconciler, refresh_periodically
    from dockyard.operator.webhooks.dispatcher import Dispatcher

    settings = memo.settings
    # OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set; installed globally at the end.
    tracing = telemetry.build_tracing(
        telemetry.TelemetrySettings(), default_service_name="dockyard-operator"
    )
    closing.push_async_callback(tracing.shutdown)
    kube = KubeClient.connect(
        load_config(settings.kubeconfig, os.environ),
        limit=settings.operator_kube_connections,
        user_agent=USER_AGENT,
        tracer_provider=tracing.provider,
    )
    closing.push_async_callback(kube.close)
    if settings.restore_spool_dir is not None:
        # What restores of this pod's earlier process spooled (decrypted dumps), left
        # by a crash: nothing of this process's is there yet.
        from dockyard.runner.streaming import remove_stale_spools

        removed = await asyncio.to_thread(remove_stale_spools, settings.restore_spool_dir)
        if removed:
            logger.warning("removed restore spools a crash left", extra={"spools": removed})
    postgres = None
    if settings.managed_postgres_url is not None:
        postgres = ManagedPostgres(
            settings.managed_postgres_url.get_secret_value(),
            public_host=settings.managed_postgres_host,
            pool_size=settings.managed_postgres_pool_size,
        )
        closing.push_async_callback(postgres.close)
    else:
        logger.warning("no managed PostgreSQL server: environments with a database stay Pending")
    # Opened empty: the operator starts whether or not the platform database answers,
    # and the pool connects on first use (the catalog's writes are retried until then).
    pool = await create_pool(
        settings.model_copy(update={"database_pool_min": 0}), tracer_provider=tracing.provider
    )
    closing.push_async_callback(pool.close)
    catalog = Catalog(pool)
    drill_metrics = metrics.DrillMetrics()
    emitter = Emitter(pool, retention_days=settings.event_retention_days)
    closing.push_async_callback(emitter.close)
    operator_metrics = metrics.OperatorMetrics(drill_metrics.registry)
    observed = Observed()
    drill_metrics.registry.register(observed)
    dispatcher = Dispatcher(kube, pool, settings, operator_metrics)
    await dispatcher.start()
    closing.push_async_callback(dispatcher.close)
    # On the operator's metrics registry: dockyard_dependency_breaker_state{dependency}.
    breakers = Breakers(
        failure_threshold=settings.breaker_failure_threshold,
        open_seconds=settings.breaker_open_seconds,
        registry=drill_metrics.registry,
    )
    audit = OperatorAudit(pool, await identity(kube))
    context = RunContext.create(kube, settings, catalog, postgres, breakers, audit)
    scaling = ScalingReconciler(kube=kube)
    environments = Reconciler(kube=kube, postgres=postgres, settings=settings, audit=audit)
    indexes = {
        child.kind: kwargs[index_id(child)] for child in CHILD_TYPES if index_id(child) in kwargs
    }
    related = {
        rtype.plural: kwargs[related_index_id(rtype)]
        for rtype in RELATED_TYPES
        if related_index_id(rtype) in kwargs
    }
    if len(indexes) == len(CHILD_TYPES) and len(related) == len(RELATED_TYPES):
        environments.children.watch(indexes, related)
    memo.services = Services(
        settings=settings,
        kube=kube,
        postgres=postgres,
        catalog=catalog,
        runs=context,
        environments=environments,
        scaling=scaling,
        backups=BackupRuns(context),
        schedules=ScheduleRuns(context),
        restores=RestoreRuns(context),
        drills=DrillRuns(context, drill_metrics),
        drill_metrics=drill_metrics,
        events=emitter,
        webhooks=dispatcher,
        tracer=tracing.tracer("dockyard.operator"),
        metrics=operator_metrics,
        observed=observed,
        closing=closing,
    )
    if settings.operator_metrics_port is not None:
        # Off unless configured; a pod sets the host to 0.0.0.0 to be scraped.
        await closing.enter_async_context(
            metrics.serving(
                drill_metrics.registry,
                host=settings.operator_metrics_host,
                port=settings.operator_metrics_port,
            )
        )
    if settings.creates_default_backup_store:
        await _default_store(kube, settings)
    # The scaling policies' periodic passes (see handlers.scaling for why not a timer).
    refresh = asyncio.create_task(
        refresh_periodically(
            lambda: scaling, lambda: list(scaling.known), settings.scaling_interval
        ),
        name="scaling-policy-refresh",
    )
    closing.push_async_callback(_stop, refresh)
    if postgres is not None:
        # The databases of Restores and drills deleted unseen (dockyard.operator.runs.strays).
        strays = asyncio.create_task(
            sweep_periodically(context, Scope(memo.namespaces), settings.stray_database_interval),
            name="stray-databases",
        )
        closing.push_async_callback(_stop, strays)
    # Installed globally: the operator is the process's one component, and the runner
    # library traces through the global one. Only once the start-up succeeded:
    # OpenTelemetry takes a global provider once, and a failed attempt shuts its own down.
    trace.set_tracer_provider(tracing.provider)


async def _default_store(kube: KubeClient, settings: Settings) -> None:
    """Development: a default BackupStore, so a Backup naming only its environment runs."""
    from dockyard.operator.runs.stores import ensure_default_store

    try:
        created = await ensure_default_store(kube, settings)
    except (KubeError, aiohttp.ClientError, TimeoutError) as exc:
        # An apiserver not answering yet, too: the operator starts without the store.
        logger.warning("default BackupStore not created", extra={"error": str(exc)})
        return
    if created:
        logger.info(
            "created the default BackupStore",
            extra={"store": created, "path": str(settings.backup_root)},
        )


async def _stop(task: asyncio.Task[None]) -> None:
    await cancel_and_wait(task)


@kopf.on.cleanup()
async def disconnect(memo: OperatorMemo, **_: Any) -> None:
    services = memo.started()
    if services is not None:
        await services.close()


def run(settings: Settings, *, namespaces: Sequence[str] = ()) -> int:
    # Importing the handler modules registers them with Kopf's default registry.
    from dockyard.operator import login  # noqa: F401
    from dockyard.operator.handlers import (
        backup_schedules,
        backup_stores,
        backups,
        drills,
        environments,
        events,  # noqa: F401
        restores,  # noqa: F401
        scaling,  # noqa: F401
        webhooks,  # noqa: F401
    )

    environments.register_drift_repair(settings.reconcile_interval)
    backup_schedules.register_timer(settings.backup_schedule_interval)
    drills.register_timer(settings.backup_schedule_interval)
    backups.register_ttl_timer(settings.backup_schedule_interval)
    if settings.backup_store_guard:
        backup_stores.register_guard()
    kopf_logs.install()  # routine lines and a deleted namespace's Event posts, quieter
    index_gate.install()  # a namespace deleted while listed must not stop every handler
    memo = OperatorMemo(settings=settings, namespaces=tuple(namespaces))
    logger.info("operator starting", extra={"namespaces": list(namespaces) or "all"})
    return asyncio.run(_operate(settings, list(namespaces), memo))


async def _operate(settings: Settings, namespaces: list[str], memo: OperatorMemo) -> int:
    """Kopf, once this replica leads (``dockyard.operator.leadership``); 1 when the lead
    was lost, so the process exits and comes back as a standby (at the latest when
    ``exit_when_lost`` ends it)."""
    operate = functools.partial(
        kopf.operator, clusterwide=not namespaces, namespaces=namespaces, memo=memo,
        standalone=True,
    )  # fmt: skip
    if not settings.operator_leader_election:
        await operate()
        return 0
    kube = KubeClient.connect(
        load_config(settings.kubeconfig, os.environ), limit=2, user_agent=USER_AGENT
    )
    leadership = Leadership.of(kube, settings, namespaces)
    lost = asyncio.Event()
    try:
        await _stand_by(leadership, settings)
        holding = asyncio.create_task(leadership.hold(lost), name="leadership")
        exiting = asyncio.create_task(
            exit_when_lost(lost, exit_margin(leadership)), name="leadership-exit"
        )
        try:
            await operate(stop_flag=lost)
        finally:
            await cancel_and_wait(holding)
            await cancel_and_wait(exiting)  # a clean stop; once lost, its timer runs on
            await leadership.release()
    finally:
        await kube.close()
    return 1 if lost.is_set() else 0


def exit_margin(leadership: Leadership) -> float:
    """How long a replica that lost the lead may take to stop: a standby may take over
    ``duration`` after the last renewal, the loss is seen up to ``retry`` after the
    ``renew_deadline``, and a second is kept for the exit itself (0 at the least)."""
    spare = leadership.duration - leadership.renew_deadline - leadership.retry - 1.0
    return max(spare, 0.0)


async def exit_when_lost(lost: asyncio.Event, margin: float) -> threading.Timer:
    """Once ``lost`` is set, end the process ``margin`` seconds later, stopped or not.

    Kopf's stop is graceful: workers finish their handlers, timers run on for
    ``instant_exit_timeout``, the clean-up waits for the webhook dispatcher, and tasks
    the handlers spawned are never told. All of them may still write once a new leader
    acts (record a drill Failed whose scratch database the new leader dropped as
    interrupted). Runs recover from a crash (a SIGKILLed leader's backup completes on
    the new one), so the process ends as if killed: ``os._exit``, from a thread, so that
    a loop blocked by a handler cannot hold it up. A process that stops in time is gone
    first (the thread is a daemon).
    """
    await lost.wait()
    timer = threading.Timer(margin, _exit_now, args=(margin,))
    timer.daemon = True
    timer.start()
    return timer


def _exit_now(margin: float) -> None:
    logger.error(
        "lead lost and not stopped in time: exiting at once, before a new leader acts",
        extra={"after_seconds": margin},
    )
    os._exit(1)


async def _stand_by(leadership: Leadership, settings: Settings) -> None:
    """Wait for the lead, serving ``/metrics`` (``dockyard_operator_leading`` 0) meanwhile
    so that the pod's probes see a live standby; the port is free again for Kopf's."""
    if settings.operator_metrics_port is None:
        await leadership.acquire()
        return
    registry = CollectorRegistry()
    metrics.leading_gauge(registry).set(0)
    async with metrics.serving(
        registry, host=settings.operator_metrics_host, port=settings.operator_metrics_port
    ):
        await leadership.acquire()
