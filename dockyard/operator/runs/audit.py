"""``OperatorAudit``: the operator's own actions in the audit trail, with their reason.

Ops work declaratively, and some changes are the operator's decision rather than
anyone's request: retention or a ttl deleting a Backup, a restore switching an
environment's database. Each is recorded with source ``operator``, the operator's
identity (as the apiserver knows it, from a SelfSubjectReview at start-up) and the
reason in ``diff``. A row that cannot be written is logged (``audit.write_failed``) and
does not hold the action back, as for the API.

An action that a pass after a crash may find done without knowing whether it was
recorded (a restore's switch-over) is recorded with ``record_once``, keyed by the
object's uid in ``diff``.
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

# Served by audit_events_object_page_idx: an object has few rows.
_SQL_RECORDED = """
SELECT EXISTS (
    SELECT 1 FROM audit_events
    WHERE resource = $1 AND namespace = $2 AND name = $3
      AND source = 'operator' AND action = $4 AND diff ->> 'uid' = $5
)
"""
_DATABASE_ERRORS: Final = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


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
        except _DATABASE_ERRORS as exc:
            _write_failed(action, namespace, name, exc)

    async def record_once(
        self,
        action: str,
        resource: str,
        namespace: str,
        name: str,
        reason: str,
        *,
        uid: str,
        **details: Any,
    ) -> None:
        """``record``, with ``uid`` in ``diff``, unless the trail already holds ``action``
        on the object ``uid``.

        Looked up, then written: one process acts on an object at a time (Kopf runs its
        handlers one at a time per object, and one operator leads), so nothing records
        the same action in between.
        """
        try:
            found = await self.pool.fetchval(_SQL_RECORDED, resource, namespace, name, action, uid)
        except _DATABASE_ERRORS as exc:
            _write_failed(action, namespace, name, exc)
            return
        if not found:
            await self.record(action, resource, namespace, name, reason, uid=uid, **details)


def _write_failed(action: str, namespace: str, name: str, exc: BaseException) -> None:
    logger.error(
        "audit.write_failed",
        extra={"event": "audit.write_failed", "audit_action": action,
               "namespace": namespace, "object": name, "error": type(exc).__name__},
    )  # fmt: skip
