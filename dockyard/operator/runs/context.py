"""What a run needs, resolved from a spec: where the artifact goes, the key, the source.

This module owns the translation from custom-resource shapes (``BackupStorage``,
``SecretKeyReference``, an environment's name) to the runner library's arguments; it
holds the ``InlineRuns`` that bound the runs the operator carries out itself. The
Backup, Restore and RestoreDrill life cycles all run through it.

Why the checks are here and not in the schema: a filesystem path is only safe relative
to what the operator has mounted, so every path must resolve (symlinks included) under
``Settings.backup_root``, the backups volume (a PVC mount in a cluster,
``~/.local/share/dockyard/backups`` in development). Key material is read from its
Secret at the moment of use and kept only in an ``EncryptionKey``, whose ``repr`` hides
it; errors name the Secret and key, never the value.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from dockyard.core.breakers import Breakers
from dockyard.core.kube import KubeClient
from dockyard.core.models.references import SecretKeyReference
from dockyard.core.models.storage import BackupStorage
from dockyard.core.resources import ENVIRONMENTS, resource_type
from dockyard.core.settings import Settings
from dockyard.operator.apply import get
from dockyard.operator.builders.environment import database_secret_name
from dockyard.operator.database import (
    ManagedDatabaseError,
    ManagedPostgres,
    TenantLogin,
    database_identity,
)
from dockyard.operator.runs.audit import OperatorAudit
from dockyard.operator.runs.inline import InlineRuns, RunCancelled
from dockyard.operator.runs.quota import NamespaceQuotas
from dockyard.operator.runs.s3_access import (
    ca_bundle_file,
    endpoint_policy,
    open_s3,
    s3_credentials,
)
from dockyard.operator.runs.slots import FairSlots
from dockyard.runner import (
    ArtifactError,
    BackupError,
    EncryptionKey,
    FilesystemStore,
    Store,
)
from dockyard.runner.endpoints import EndpointPolicy, EndpointRefused
from dockyard.runner.filesystem import Quota
from dockyard.runner.libpq import with_database as with_database
from dockyard.runner.libpq import with_login

if TYPE_CHECKING:
    from dockyard.operator.runs.catalog import Catalog

SECRETS: Final = resource_type("v1", "Secret")
ARTIFACT_SUFFIX: Final = ".dkbk"


class StorageRefused(BackupError):
    """The spec names storage the operator must not use (outside ``backup_root``)."""

    reason = "StorageRefused"


class KeyUnavailable(BackupError):
    """The encryption key's Secret, or its key, is missing or not a usable key."""

    reason = "KeyUnavailable"


class SourceUnavailable(BackupError):
    """The environment, or its database, is not there (yet)."""

    reason = "SourceUnavailable"


def retryable(error: BackupError) -> bool:
    """Whether another attempt could succeed: not for a bad artifact, storage or cancel."""
    return not isinstance(error, ArtifactError | StorageRefused | RunCancelled)


def confine(path: str, root: Path) -> Path:
    """``path`` resolved, or ``StorageRefused`` unless it lies under ``root`` (resolved).

    Resolving both sides first means neither ``..`` nor a symlink can lead out of it.
    """
    base = root.expanduser().resolve()
    target = Path(path)
    if not target.is_absolute():
        raise StorageRefused(f"filesystem path {path} is not absolute")
    real = target.resolve()
    if not real.is_relative_to(base):
        raise StorageRefused(
            f"filesystem path {path} is outside the operator's backup root {base} "
            "(DOCKYARD_BACKUP_ROOT): expected a directory under it"
        )
    return real


@asynccontextmanager
async def open_storage(
    spec: BackupStorage,
    *,
    root: Path,
    kube: KubeClient | None = None,
    namespace: str | None = None,
    endpoints: EndpointPolicy | None = None,
    s3_part_timeout: float = 60.0,
    s3_concurrency: int = 4,
    breakers: Breakers | None = None,
    ambient: bool = False,
    quota: Quota | None = None,
) -> AsyncIterator[Store]:
    """The storage ``spec`` names, for an inline run in ``namespace``.

    S3 goes through :mod:`~dockyard.operator.runs.s3_access`: the endpoint guard
    (``endpoints``; public https only when not given) and the keys of the storage's
    ``credentialsSecretRef``, read through ``kube``. Without a Secret, the operator's
    own identity (the ambient chain) is used only when ``ambient`` says an administrator
    chose the bucket (a BackupStore's storage); a tenant's own choice is refused.
    """
    if spec.filesystem is not None:
        path = await asyncio.to_thread(confine, spec.filesystem.path, root)
        await asyncio.to_thread(path.mkdir, mode=0o700, parents=True, exist_ok=True)
        yield FilesystemStore(path, quota=quota)
        return
    if spec.s3 is None:  # the model guarantees one of the two
        raise StorageRefused("the storage names neither a filesystem path nor a bucket")
    policy = endpoints or EndpointPolicy()
    try:
        if spec.s3.endpoint:
            await policy.check(spec.s3.endpoint)
    except EndpointRefused as exc:
        raise StorageRefused(exc.message) from None
    ref, credentials = spec.s3.credentials_secret_ref, None
    if ref is not None:
        if kube is None or not namespace:
            raise StorageRefused(
                f"S3 credentials Secret {ref.name} cannot be read by this run: refusing "
                "to use the operator's own identity instead"
            )
        credentials = await s3_credentials(kube, namespace, ref)
    elif not ambient:
        raise StorageRefused(
            f"S3 bucket {spec.s3.bucket} is named without credentialsSecretRef: an inline "
            "run does not use the operator's own identity for a bucket a Backup chose. Name a "
            "Secret with the keys, take the storage from a BackupStore, or run it in a Job "
            "(spec.runner), whose Pod has an identity of its own"
        )
    ca_ref = spec.s3.ca_bundle_secret_ref
    if ca_ref is not None and (kube is None or not namespace):
        raise StorageRefused(f"the S3 CA bundle Secret {ca_ref.name} cannot be read by this run")
    async with (
        ca_bundle_file(kube, namespace or "", ca_ref) if kube else nullcontext() as ca_bundle,
        open_s3(
            spec.s3,
            credentials=credentials,
            policy=policy,
            part_timeout=s3_part_timeout,
            breakers=breakers,
            concurrency=s3_concurrency,
            ca_bundle=ca_bundle,
        ) as store,
    ):
        yield store


def storage_url(spec: BackupStorage) -> str:
    """The storage as ``dockyard backup-run --storage`` takes it."""
    if spec.filesystem is not None:
        return Path(spec.filesystem.path).as_uri()
    if spec.s3 is None:
        raise StorageRefused("the storage names neither a filesystem path nor a bucket")
    prefix = (spec.s3.prefix or "").strip("/")
    return f"s3://{spec.s3.bucket}/{prefix}" if prefix else f"s3://{spec.s3.bucket}"


def artifact_location(spec: BackupStorage, artifact: str) -> str:
    """Where a runner given ``spec`` stores ``artifact``, as it reports it (a file URI,
    or ``s3://bucket/prefix/name``)."""
    if spec.filesystem is not None:
        return Path(spec.filesystem.path).joinpath(*artifact.split("/")).as_uri()
    return f"{storage_url(spec)}/{artifact}"


def artifact_prefix(namespace: str, name: str, uid: str) -> str:
    """What every artifact of one Backup object's attempts starts with."""
    # The uid keeps a Backup recreated under the same name off its predecessor's files.
    return f"{namespace}/{name}/{uid[:8]}-"


def artifact_name(namespace: str, name: str, uid: str, attempt: int) -> str:
    """The artifact of one attempt: each attempt writes its own, so a retry after a crash
    that happened between commit and status never collides with a committed artifact."""
    return f"{artifact_prefix(namespace, name, uid)}{attempt}{ARTIFACT_SUFFIX}"


def key_id_of(key: bytes) -> str:
    """The key's fingerprint: names it in headers and statuses without revealing it."""
    return "k-" + hashlib.sha256(b"dockyard-backup-key-id\x00" + key).hexdigest()[:16]


async def load_key(kube: KubeClient, namespace: str, ref: SecretKeyReference) -> EncryptionKey:
    """The key ``ref`` names, with its fingerprint as id; ``KeyUnavailable`` otherwise."""
    secret = await get(kube, SECRETS.path(namespace, ref.name))
    where = f"key {ref.key} of Secret {ref.name}"
    if secret is None:
        raise KeyUnavailable(f"encryption key Secret {ref.name} does not exist")
    encoded = (secret.get("data") or {}).get(ref.key)
    if not encoded:
        raise KeyUnavailable(f"{where} is missing or empty")
    try:
        material = base64.b64decode(encoded, validate=True)
        # keys.py's messages describe the accepted shapes, never the value.
        probe = EncryptionKey.from_secret_value("probe", material)
    except (binascii.Error, ValueError) as exc:
        raise KeyUnavailable(f"{where} is not a usable key: {exc}") from None
    return EncryptionKey(key_id_of(probe.key), probe.key)


async def tenant_login(kube: KubeClient, namespace: str, environment: str) -> TenantLogin:
    """The login of ``environment``'s own role, from its database Secret.

    Everything the operator runs inside an environment's databases (its dumps, restores,
    row counts and drill checks) runs as this role, never as the server's admin: the
    role owns those databases and could plant code there that an admin would run.
    """
    secret = await get(kube, SECRETS.path(namespace, database_secret_name(environment)))
    if secret is None:
        raise SourceUnavailable(f"the database Secret of Environment {environment} does not exist")
    data = secret.get("data") or {}
    user, password = _decoded(data.get("username")), _decoded(data.get("password"))
    expected, _ = database_identity(namespace, environment)
    if user != expected or not password:
        raise SourceUnavailable(
            f"the database Secret of Environment {environment} does not hold its role's login"
        )
    return TenantLogin(user, password)


def _decoded(value: object) -> str | None:
    """A Secret's base64 ``data`` value as text; None when absent or not text."""
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def tenant_dsn(settings: Settings, login: TenantLogin, database: str) -> str:
    """The managed server, logged in as ``login`` into ``database``."""
    if settings.managed_postgres_url is None:
        raise SourceUnavailable("the operator has no managed PostgreSQL server")
    return with_login(
        settings.managed_postgres_url.get_secret_value(),
        user=login.user,
        password=login.password,
        database=database,
    )


async def environment_dsn(
    kube: KubeClient,
    settings: Settings,
    namespace: str,
    environment: str,
    postgres: ManagedPostgres | None = None,
) -> str:
    """The DSN a runner dumps an environment's database through: the managed server,
    logged in as the environment's own role (:func:`tenant_login`), once the
    environment reports its database ready.

    An environment being deleted no longer has its status refreshed, so one whose last
    status said "not ready" (the server was down just then) is asked about on the
    server instead: its final snapshot must not fail on an outage that is over.
    """
    env = await get(kube, ENVIRONMENTS.path(namespace, environment))
    if env is None:
        raise SourceUnavailable(f"Environment {environment} does not exist")
    if settings.managed_postgres_url is None:
        raise SourceUnavailable("the operator has no managed PostgreSQL server")
    name, _ = database_identity(namespace, environment)
    database = ((env.get("status") or {}).get("database")) or {}
    deleting = bool((env.get("metadata") or {}).get("deletionTimestamp"))
    if not database.get("ready") and not (
        deleting and postgres is not None and await _exists(postgres, name)
    ):
        raise SourceUnavailable(f"the database of Environment {environment} is not ready yet")
    login = await tenant_login(kube, namespace, environment)
    return tenant_dsn(settings, login, name)


async def _exists(postgres: ManagedPostgres, database: str) -> bool:
    try:
        return await postgres.database_exists(database)
    except ManagedDatabaseError:
        return False


@dataclass(slots=True)
class RunContext:
    """What the run life cycles share; one per operator, made at start-up, in the memo."""

    kube: KubeClient
    settings: Settings
    catalog: Catalog | None
    inline_runs: InlineRuns
    """The runs this process carries out itself, in its event loop."""
    postgres: ManagedPostgres | None = None
    """The managed server, for the databases restores and drills restore into."""
    breakers: Breakers | None = None
    """The operator's breakers: one per S3 endpoint that inline runs write to."""
    audit: OperatorAudit | None = None
    """Where the operator records its own actions (None: not recorded, in unit tests)."""
    quotas: NamespaceQuotas | None = None
    """Each namespace's quota on the backups volume (``DOCKYARD_BACKUP_NAMESPACE_QUOTA``)."""

    @classmethod
    def create(
        cls,
        kube: KubeClient,
        settings: Settings,
        catalog: Catalog | None,
        postgres: ManagedPostgres | None = None,
        breakers: Breakers | None = None,
        audit: OperatorAudit | None = None,
    ) -> RunContext:
        slots = FairSlots(settings.backup_concurrency, settings.runs_per_namespace())
        runs = InlineRuns(kube, slots, settings.run_deadline)
        quotas = None
        if settings.backup_namespace_quota is not None:
            if catalog is None:
                raise ValueError(
                    "DOCKYARD_BACKUP_NAMESPACE_QUOTA counts the catalogued backups: it needs "
                    "the platform database (DOCKYARD_DATABASE_URL)"
                )
            quotas = NamespaceQuotas(settings.backup_namespace_quota, catalog, settings.backup_root)
        return cls(kube, settings, catalog, runs, postgres, breakers, audit, quotas)

    async def audited(
        self,
        action: str,
        resource: str,
        namespace: str,
        name: str,
        reason: str,
        *,
        once_for: str | None = None,
        **details: Any,
    ) -> None:
        """Record one of the operator's own actions in the audit trail; with
        ``once_for`` (an object's uid), unless the trail holds it on that object already
        (``OperatorAudit.record_once``)."""
        if self.audit is None:
            return
        if once_for is None:
            await self.audit.record(action, resource, namespace, name, reason, **details)
        else:
            await self.audit.record_once(
                action, resource, namespace, name, reason, uid=once_for, **details
            )

    @asynccontextmanager
    async def quota(self, spec: BackupStorage, namespace: str) -> AsyncIterator[Quota | None]:
        """The namespace's quota for a backup writing to ``spec``, while it runs: None
        unless it writes to the backups volume and a quota is set (``runs.quota``). Hold
        it until the backup is catalogued, so that it is counted throughout."""
        if spec.filesystem is None or self.quotas is None:
            yield None
            return
        async with self.quotas.writing(namespace) as charges:
            yield charges

    @asynccontextmanager
    async def storage(
        self,
        spec: BackupStorage,
        namespace: str,
        *,
        ambient: bool = False,
        quota: Quota | None = None,
    ) -> AsyncIterator[Store]:
        """:func:`open_storage` for a run in ``namespace``, with this operator's settings;
        writes to the backups volume are charged to ``quota`` (see :meth:`quota`)."""
        async with open_storage(
            spec,
            root=self.settings.backup_root,
            kube=self.kube,
            namespace=namespace,
            endpoints=endpoint_policy(self.settings),
            s3_part_timeout=self.settings.s3_part_timeout,
            s3_concurrency=self.settings.s3_upload_concurrency,
            breakers=self.breakers,
            ambient=ambient,
            quota=quota,
        ) as storage:
            yield storage
