"""Run the operator: Kopf with Dockyard's settings in its memo and its handlers loaded.

This module owns the operator's life cycle: Kopf's own settings, the clients every
handler shares (created at start-up, closed at cleanup, kept in the memo, never made at
import time) and which handlers are registered.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import kopf

from dockyard.core import metrics
from dockyard.core.kube import KubeClient, load_config
from dockyard.core.resources import CHILD_TYPES
from dockyard.core.settings import Settings
from dockyard.operator.builders.metadata import MANAGED_BY, MANAGED_BY_LABEL

logger = logging.getLogger(__name__)

METRICS_SERVER_KEY = "metrics_server"
"""The operator's ``/metrics`` server (``operator_metrics_port``), closed at cleanup."""

KOPF_PREFIX = "operator.dockyard.io"
"""Where Kopf keeps its progress and last-handled configuration, in annotations."""


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our CRDs declare their status schema, so Kopf's own bookkeeping goes to annotations
    # (status.kopf would be pruned by the apiserver). Under a prefix of its own: Kopf
    # leaves every annotation under its storage prefix out of the diffs it reacts to,
    # and users' dockyard.io/* annotations (approved-by, run-now) must be seen.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = "dockyard.io/operator"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # A deletion waits for the object's timers to stop. The drift-repair timer is often
    # mid-pass (or is the one deleting an expired environment), so let it finish rather
    # than fall back to Kopf's one-minute polling.
    settings.background.instant_exit_timeout = 5.0
    settings.background.cancellation_polling = 5.0
    # Children are watched to repair drift quickly; only Dockyard's own, filtered by the
    # API server, so the operator never lists every Secret or Deployment of the cluster.
    for child in CHILD_TYPES:
        settings.watching.label_selectors[child.api_version, child.plural] = (
            f"{MANAGED_BY_LABEL}={MANAGED_BY}"
        )


@kopf.on.startup()
async def connect(memo: kopf.Memo, **_: Any) -> None:
    from dockyard.operator.database import ManagedPostgres
    from dockyard.operator.environments.reconciler import Reconciler
    from dockyard.operator.handlers.environments import MEMO_KEY
    from dockyard.operator.handlers.scaling import MEMO_KEY as SCALING_MEMO_KEY
    from dockyard.operator.scaling.reconciler import ScalingReconciler

    settings: Settings = memo["settings"]
    kube = KubeClient.connect(load_config(settings.kubeconfig, os.environ))
    postgres = None
    if settings.managed_postgres_url is not None:
        postgres = ManagedPostgres(
            settings.managed_postgres_url.get_secret_value(),
            public_host=settings.managed_postgres_host,
        )
    else:
        logger.warning("no managed PostgreSQL server: environments with a database stay Pending")
    memo[MEMO_KEY] = Reconciler(kube=kube, postgres=postgres, settings=settings)
    # Shares the environments' client, which disconnect closes.
    memo[SCALING_MEMO_KEY] = ScalingReconciler(kube=kube)


@kopf.on.cleanup()
async def disconnect(memo: kopf.Memo, **_: Any) -> None:
    from dockyard.operator.environments.reconciler import Reconciler
    from dockyard.operator.handlers.environments import MEMO_KEY

    reconciler: Reconciler | None = memo.get(MEMO_KEY)
    if reconciler is not None:
        await reconciler.kube.close()
        if reconciler.postgres is not None:
            await reconciler.postgres.close()


@kopf.on.startup()
async def connect_backups(memo: kopf.Memo, **_: Any) -> None:
    """The runs' context: its own API client, and the platform database for the catalog."""
    import asyncpg

    from dockyard.core.db import create_pool
    from dockyard.operator.backups.lifecycle import BackupRuns
    from dockyard.operator.backups.schedules import ScheduleRuns
    from dockyard.operator.database import ManagedPostgres
    from dockyard.operator.drills.lifecycle import DrillRuns
    from dockyard.operator.handlers.backup_schedules import MEMO_KEY as SCHEDULES_MEMO_KEY
    from dockyard.operator.handlers.backups import MEMO_KEY as BACKUPS_MEMO_KEY
    from dockyard.operator.handlers.drills import MEMO_KEY as DRILLS_MEMO_KEY
    from dockyard.operator.handlers.restores import MEMO_KEY as RESTORES_MEMO_KEY
    from dockyard.operator.restores.lifecycle import RestoreRuns
    from dockyard.operator.runs.catalog import Catalog
    from dockyard.operator.runs.context import RunContext

    settings: Settings = memo["settings"]
    kube = KubeClient.connect(load_config(settings.kubeconfig, os.environ))
    catalog = None
    try:
        catalog = Catalog(await create_pool(settings))
    except (OSError, asyncpg.PostgresError) as exc:
        # Backups still run and their status stays authoritative; the resume pass of
        # the next start-up catalogues them.
        logger.warning("no platform database: the backup catalog is not written: %s", exc)
    postgres = None
    if settings.managed_postgres_url is not None:
        postgres = ManagedPostgres(
            settings.managed_postgres_url.get_secret_value(),
            public_host=settings.managed_postgres_host,
        )
    context = RunContext.create(kube, settings, catalog, postgres)
    memo[BACKUPS_MEMO_KEY] = BackupRuns(context)
    memo[RESTORES_MEMO_KEY] = RestoreRuns(context)
    memo[SCHEDULES_MEMO_KEY] = ScheduleRuns(context)
    drill_metrics = metrics.DrillMetrics()
    memo[DRILLS_MEMO_KEY] = DrillRuns(context, drill_metrics)
    if settings.operator_metrics_port is not None:
        # Off unless configured; a pod sets the host to 0.0.0.0 to be scraped.
        memo[METRICS_SERVER_KEY] = server = AsyncExitStack()
        await server.enter_async_context(
            metrics.serving(
                drill_metrics.registry,
                host=settings.operator_metrics_host,
                port=settings.operator_metrics_port,
            )
        )


@kopf.on.cleanup()
async def disconnect_backups(memo: kopf.Memo, **_: Any) -> None:
    from dockyard.operator.backups.lifecycle import BackupRuns
    from dockyard.operator.handlers.backups import MEMO_KEY as BACKUPS_MEMO_KEY

    server: AsyncExitStack | None = memo.get(METRICS_SERVER_KEY)
    if server is not None:
        await server.aclose()
    runs: BackupRuns | None = memo.get(BACKUPS_MEMO_KEY)
    if runs is not None:
        await runs.context.kube.close()
        if runs.context.catalog is not None:
            await runs.context.catalog.pool.close()


def run(settings: Settings, *, namespaces: Sequence[str] = ()) -> int:
    # Importing the handler modules registers them with Kopf's default registry.
    from dockyard.operator import login  # noqa: F401
    from dockyard.operator.handlers import (
        backup_schedules,
        backups,
        drills,
        environments,
        restores,  # noqa: F401
        scaling,  # noqa: F401
    )

    environments.register_drift_repair(settings.reconcile_interval)
    backup_schedules.register_timer(settings.backup_schedule_interval)
    drills.register_timer(settings.backup_schedule_interval)
    backups.register_ttl_timer(settings.backup_schedule_interval)
    memo = kopf.Memo(settings=settings)
    logger.info("operator starting", extra={"namespaces": list(namespaces) or "all"})
    asyncio.run(
        kopf.operator(
            clusterwide=not namespaces,
            namespaces=list(namespaces),
            memo=memo,
            standalone=True,
        )
    )
    return 0
