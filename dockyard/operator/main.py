"""Run the operator: Kopf with Dockyard's settings in its memo and its handlers loaded."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import kopf

from dockyard.core.settings import Settings

logger = logging.getLogger(__name__)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our CRDs declare their status schema, so Kopf's own bookkeeping goes to annotations
    # (status.kopf would be pruned by the apiserver).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="dockyard.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="dockyard.io", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "dockyard.io/operator"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330


def run(settings: Settings, *, namespaces: Sequence[str] = ()) -> int:
    # Importing the handler modules registers them with Kopf's default registry.
    from dockyard.operator import login  # noqa: F401
    from dockyard.operator.handlers import environments  # noqa: F401

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
