"""An Environment's database step: its database and login role on the managed server,
with the password its Secret holds, and the Secret itself.

The password exists only in the Secret; a pass reuses it, so running pods keep working,
and makes a new one only when there is none. The full ``ensure`` runs only when its
digest (``ensured_digest``, kept in ``status.database.ensured``) changes, or when one
catalog query finds the role or database not as it left them.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from dockyard.core.kube import KubeClient
from dockyard.core.models.common import ConditionStatus
from dockyard.core.models.environment import Environment
from dockyard.core.resources import SECRETS
from dockyard.operator.apply import Applied, check_claim, get, namespace_uid
from dockyard.operator.builders import environment as builders
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.database import (
    DatabaseCredentials,
    ManagedDatabaseError,
    ManagedPostgres,
    database_identity,
    generate_password,
)
from dockyard.operator.database.tenants import ENSURE_VERSION
from dockyard.operator.environments import status as report
from dockyard.operator.environments.children import ChildMemory

logger = logging.getLogger(__name__)

# A database that is not configured will not appear by retrying; every other failure may.
SERVER_NOT_CONFIGURED: Final = "ServerNotConfigured"


@dataclass(frozen=True, slots=True)
class DatabaseStep:
    """What the database step did: the report for the status, and the Secret it applied."""

    report: report.DatabaseReport
    credentials_digest: str | None = None
    secret: Applied | None = None

    @property
    def retryable(self) -> bool:
        return not self.report.ready and self.report.verdict.reason != SERVER_NOT_CONFIGURED


@dataclass(frozen=True, kw_only=True)
class DatabaseProvisioner:
    """Makes sure each Environment's database, role and Secret exist; without a managed
    server (``postgres`` None) the step reports ServerNotConfigured."""

    kube: KubeClient
    postgres: ManagedPostgres | None
    children: ChildMemory
    # The uids of the disabled environments this process has locked out.
    locked_out: set[str] = field(default_factory=set)

    async def step(self, env: Environment, owner: Owner) -> DatabaseStep | None:
        """Make sure the database, its role and its Secret exist; ``None``: no database.

        On the first pass after the database was disabled (the status still names it),
        its role is locked out, as its Secret goes: the password then works nowhere. Until
        that succeeds the step reports the database not ready, and is retried. A database
        disabled before (by an operator that did not lock roles out, say) is locked out
        too, once per operator process (``_lock_out_earlier``).
        """
        if not env.spec.database.enabled:
            return await self._lock_out(env, owner)
        secret_name = builders.database_secret_name(owner.name)
        database_name, _ = database_identity(owner.namespace, owner.name)
        # The password exists only in the Secret: reuse it, so that running pods keep
        # working; a new one is made only when there is none (first time, or deleted).
        # A Secret of that name the environment does not control is someone else's: its
        # password is not read, nor is the Secret taken over (ChildConflict).
        existing = await get(self.kube, SECRETS.path(owner.namespace, secret_name))
        check_claim(existing, builders.database_secret(env, {}))
        password = password_in(existing)
        digest = builders.credentials_digest(password) if password else None
        if self.postgres is None:
            verdict = report.Verdict(
                ConditionStatus.FALSE,
                SERVER_NOT_CONFIGURED,
                "The operator has no managed PostgreSQL server (DOCKYARD_MANAGED_POSTGRES_URL).",
            )
            return DatabaseStep(report.DatabaseReport(verdict, secret_name, database_name), digest)
        ensured = ensured_digest(env, owner, digest)
        try:
            if await self._intact(env, owner, ensured):
                credentials = self.postgres.credentials(
                    namespace=owner.namespace, environment=owner.name, password=str(password)
                )
            else:
                credentials = await self.postgres.ensure(
                    namespace=owner.namespace,
                    namespace_uid=await namespace_uid(self.kube, owner.namespace),
                    environment=owner.name,
                    password=password or generate_password(),
                )
        except ManagedDatabaseError as exc:
            verdict = report.Verdict(ConditionStatus.FALSE, exc.reason, exc.message)
            return DatabaseStep(report.DatabaseReport(verdict, secret_name, database_name), digest)
        return await self._ready(env, secret_name, credentials)

    async def _lock_out(self, env: Environment, owner: Owner) -> DatabaseStep | None:
        if self.postgres is None:
            return None
        if env.status.database is None:
            await self._lock_out_earlier(self.postgres, env, owner)
            return None
        try:
            await self.postgres.lock_out(
                namespace=owner.namespace,
                namespace_uid=await namespace_uid(self.kube, owner.namespace),
                environment=owner.name,
            )
            self.locked_out.add(env.metadata.uid or "")
        except ManagedDatabaseError as exc:
            verdict = report.Verdict(
                ConditionStatus.FALSE,
                exc.reason,
                f"The database is disabled, but its role is not locked out yet: {exc.message}",
            )
            database_name, _ = database_identity(owner.namespace, owner.name)
            secret_name = builders.database_secret_name(owner.name)
            return DatabaseStep(report.DatabaseReport(verdict, secret_name, database_name))
        return None

    async def _lock_out_earlier(
        self, postgres: ManagedPostgres, env: Environment, owner: Owner
    ) -> None:
        """Lock out the role of a database disabled before this process saw it, once: its
        status no longer names the database, so an earlier operator may have deleted the
        Secret without locking the role out. Nothing to report: a failure (the server down)
        is logged, and the next pass tries again."""
        uid = env.metadata.uid or ""
        if uid in self.locked_out:
            return
        try:
            await postgres.lock_out(
                namespace=owner.namespace,
                namespace_uid=await namespace_uid(self.kube, owner.namespace),
                environment=owner.name,
            )
        except ManagedDatabaseError as exc:
            logger.warning(
                "the role of a disabled database is not locked out yet",
                extra={"namespace": owner.namespace, "environment": owner.name,
                       "reason": exc.reason},
            )  # fmt: skip
            return
        self.locked_out.add(uid)

    async def _intact(self, env: Environment, owner: Owner, ensured: str | None) -> bool:
        """Whether the last ``ensure`` still holds: same digest, role and database intact."""
        previous = env.status.database
        if self.postgres is None or previous is None or ensured is None:
            return False
        if previous.ensured != ensured:
            return False
        return await self.postgres.intact(namespace=owner.namespace, environment=owner.name)

    async def _ready(
        self, env: Environment, secret_name: str, credentials: DatabaseCredentials
    ) -> DatabaseStep:
        secret = await self.children.apply(
            self.kube, builders.database_secret(env, credentials.secret_data())
        )
        verdict = report.Verdict(
            ConditionStatus.TRUE,
            "Provisioned",
            f"Database {credentials.database} is ready; its credentials are in Secret "
            f"{secret_name}.",
        )
        digest = builders.credentials_digest(credentials.password)
        owner = Owner.of(env)
        return DatabaseStep(
            report.DatabaseReport(
                verdict,
                secret_name,
                credentials.database,
                ensured=ensured_digest(env, owner, digest),
            ),
            digest,
            secret,
        )


def ensured_digest(env: Environment, owner: Owner, credentials: str | None) -> str | None:
    """What ``ensure`` depends on, as one digest; ``None`` when there are no credentials yet."""
    if credentials is None:
        return None
    database, role = database_identity(owner.namespace, owner.name)
    parts = (str(ENSURE_VERSION), database, role, credentials, env.spec.database.model_dump_json())
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def password_in(secret: Mapping[str, Any] | None) -> str | None:
    """The password a database Secret holds, if it holds a usable one."""
    encoded = ((secret or {}).get("data") or {}).get("password")
    if not encoded:
        return None
    try:
        password = base64.b64decode(encoded, validate=True).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError are both ValueErrors
        return None
    # What PostgreSQL's SCRAM accepts unchanged; anything else is replaced, not used.
    if not (0 < len(password) <= 1024 and password.isascii() and password.isprintable()):
        return None
    return password
