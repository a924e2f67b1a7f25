"""``OperatorAudit``: the operator's own actions in the audit trail, with their reason.

Ops work declaratively, and some changes are the operator's decision rather than
anyone's request: retention or a ttl deleting a Backup, a restore switching an
environment's database. Each is recorded with source ``operator``, the operator's
identity (as the apiserver knows it, from a SelfSubjectReview at start-up) and the
reason in ``diff``. A row that cannot be written is logged (``audit.write_failed``) and
does not hold the action back, as for the API.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import asyncpg

from dockyard.core import audit_rows
from dockyard.core.audit_rows import AuditRow, Source
from dockyard.core.kube import KubeClient

logger = logging.getLogger(__name__)

FALLBACK_IDENTITY: Final = "dockyard-operator"


async def identity(kube: KubeClient) -> str:
    """The operator's user name, as the apiserver authenticates it."""
    username = await kube.own_username()
    if username is None:
        logger.warning("own identity unknown: the SelfSubjectReview failed")
    return username or FALLBACK_IDENTITY


class OperatorAudit:
    def __init__(self, pool: asyncpg.Pool, actor: str = FALLBACK_IDENTITY) -> None:
        self.pool = pool
        self.actor = actor

    async def record(
        self, action: str, resource: str, namespace: str, name: str, reason: str, **details: Any
    ) -> None:
        row = AuditRow(
            actor=self.actor,
            action=action,
            resource=resource,
            namespace=namespace,
            name=name,
            outcome="succeeded",
            diff={"reason": reason, **details},
            source=Source.OPERATOR,
        )
        try:
            await audit_rows.insert(self.pool, row)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            logger.error(
                "audit.write_failed",
                extra={"event": "audit.write_failed", "audit_action": action,
                       "namespace": namespace, "object": name, "error": type(exc).__name__},
            )  # fmt: skip
