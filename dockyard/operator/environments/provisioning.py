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
        too, once per operator process (``_lock_out``).
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
        """Lock the disabled database's role out, once per process. While the status still
        names the database (the first pass after disabling it), a failure keeps the step
        not ready, to be retried. Otherwise it was disabled before this process saw it (an
        earlier operator may have deleted the Secret without locking the role out): a
        failure is only logged, and the next pass tries again."""
        uid = env.metadata.uid or ""
        just_disabled = env.status.database is not None
        if self.postgres is None or (uid in self.locked_out and not just_disabled):
            return None
        try:
            await self.postgres.lock_out(
                namespace=owner.namespace,
                namespace_uid=await namespace_uid(self.kube, owner.namespace),
                environment=owner.name,
            )
        except ManagedDatabaseError as exc:
            if not just_disabled:
                logger.warning(
                    "the role of a disabled database is not locked out yet",
                    extra={"namespace": owner.namespace, "environment": owner.name,
                           "reason": exc.reason},
                )  # fmt: skip
                return None
            verdict = report.Verdict(
                ConditionStatus.FALSE,
                exc.reason,
                f"The database is disabled, but its role is not locked out yet: {exc.message}",
            )
            database_name, _ = database_identity(owner.namespace, owner.name)
            secret_name = builders.database_secret_name(owner.name)
            return DatabaseStep(report.DatabaseReport(verdict, secret_name, database_name))
        self.locked_out.add(uid)
        return None

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
