"""Process settings, read once at start-up from ``DOCKYARD_*`` variables and passed down.

Nothing else in the code base reads the environment: a component that needs a value
takes a ``Settings`` (or the part of it that it needs) as an argument.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import (
    ByteSize,
    Field,
    IPvAnyNetwork,
    PostgresDsn,
    RedisDsn,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

# An ingress domain: "*", a host, or "*." and a domain (every host under it).
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
INGRESS_DOMAIN_PATTERN: Final = rf"^(\*|(\*\.)?({_LABEL}\.)*{_LABEL})$"


def _check_url(kind: type, value: SecretStr, what: str) -> None:
    """Refuse ``value`` unless it is a ``kind`` URL, saying why but never quoting it:
    pydantic's error quotes its input, and a DSN's input holds a password."""
    try:
        TypeAdapter(kind).validate_python(value.get_secret_value())
    except ValidationError as exc:
        reason = exc.errors(include_input=False, include_url=False)[0]["msg"]
        raise ValueError(f"not {what} ({reason})") from None


class Mode(StrEnum):
    """How strict the process is about transport security."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class Settings(BaseSettings):
    """Every knob of the API and the operator; see ``docs/configuration.md``."""

    model_config = SettingsConfigDict(
        env_prefix="DOCKYARD_",
        extra="ignore",
        frozen=True,
        env_parse_none_str="null",
        use_attribute_docstrings=True,
        # A refused DSN or token must not be quoted back into a log.
        hide_input_in_errors=True,
    )

    mode: Mode = Mode.DEVELOPMENT
    """production refuses plaintext"""
    database_url: SecretStr = SecretStr("postgresql://dockyard@127.0.0.1:5432/dockyard")
    """DSN of the platform database (audit, catalog, event log)"""
    migration_database_url: SecretStr | None = None
    """DSN of the platform database's owner, for dockyard migrate; unset: DOCKYARD_DATABASE_URL
    (then one role owns and runs, and may erase the audit trail)"""
    database_pool_min: int = Field(default=1, ge=0, le=100)
    database_pool_max: int = Field(default=10, ge=1, le=200)
    redis_url: SecretStr | None = None
    """shared rate-limit counters"""
    kubeconfig: Path | None = None
    """kubeconfig path; in-cluster config when unset"""
    namespace: str = "dockyard-system"
    """the platform's own namespace"""
    # -- deadlines and breakers of dependency calls (docs/configuration.md) --------------
    database_connect_timeout: float = Field(default=2.0, gt=0, le=60)
    """seconds to open a platform database connection"""
    database_acquire_timeout: float = Field(default=1.0, gt=0, le=60)
    """seconds a call waits for a pooled connection"""
    database_command_timeout: float = Field(default=2.0, gt=0, le=600)
    """seconds one platform database statement may take"""
    kube_connect_timeout: float = Field(default=1.0, gt=0, le=60)
    """seconds to open a connection to the apiserver"""
    # 2 s, not more: a request may also wait on its review and audit row, and no request
    # may wait 3 s in all (docs/operations.md, the fault suite's goal).
    kube_request_timeout: float = Field(default=2.0, gt=0, le=300)
    """seconds one apiserver call may take, from sending to the last byte"""
    kube_review_timeout: float = Field(default=1.0, gt=0, le=60)
    """seconds a TokenReview or SubjectAccessReview may take"""
    kube_watch_idle_timeout: float = Field(default=90.0, gt=0, le=3600)
    """seconds a watch stream may stay silent (bookmarks arrive about each minute)"""
    redis_socket_timeout: float = Field(default=0.05, gt=0, le=10)
    """seconds one Redis command may take (the limiter)"""
    redis_connect_timeout: float = Field(default=0.1, gt=0, le=10)
    """seconds to open a connection to Redis"""
    s3_part_timeout: float = Field(default=60.0, gt=0, le=3600)
    """seconds one S3 request (one part) may take"""
    s3_upload_concurrency: int = Field(default=4, ge=1, le=32)
    """parts of one S3 upload sent at once (memory: this many parts plus one)"""
    breaker_failure_threshold: int = Field(default=5, ge=1, le=1000)
    """failures in a row that open a dependency's breaker"""
    breaker_open_seconds: float = Field(default=3.0, gt=0, le=300)
    """seconds an open breaker refuses calls at once"""
    # -- the API ------------------------------------------------------------------------
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    body_read_timeout: float = Field(default=30.0, gt=0, le=600)
    """seconds a request body may take to arrive"""
    header_read_timeout: float = Field(default=10.0, gt=0, le=600)
    """seconds a request's headers may take to arrive"""
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    """longest header (name and value)"""
    tls_cert_file: Path | None = None
    """serve HTTPS with this cert"""
    tls_key_file: Path | None = None
    """the certificate's key"""
    trusted_proxies: list[IPvAnyNetwork] = Field(default_factory=list)
    """proxies whose X-Forwarded-For / X-Forwarded-Proto are believed"""
    client_networks: list[IPvAnyNetwork] = Field(
        default_factory=lambda: [
            ipaddress.ip_network(n) for n in ("fc00::/7", "fe80::/10", "::1/128")
        ]
    )
    """IPv6 networks whose every address is a client of its own for per-address limits
    (the cluster's pods); any other IPv6 address counts by its /64"""
    hsts_max_age: int = Field(default=31_536_000, ge=0)
    cors_origins: list[str] = Field(default_factory=list)
    """origins allowed by CORS, e.g. https://app.example"""
    auth_cache_ttl: float = Field(default=10.0, ge=0, le=300)
    """TokenReview cache"""
    token_audiences: list[str] = Field(default_factory=list)
    """audiences TokenReviews ask for (one must match); unset: the apiserver's"""
    authz_cache_ttl: float = Field(default=5.0, ge=0, le=300)
    """SAR cache"""
    approval_requires_if_match: bool = False
    """refuse (428) a restore approval without If-Match, which binds it to the Restore
    the approver read; off by default, as API 1.x clients need not send it"""
    stream_reauth_interval: float = Field(default=60.0, gt=0, le=60)
    """seconds between an event stream's re-checks"""
    stream_reviews: int = Field(default=100, ge=1, le=10_000)
    """new access decisions (kind, namespace) one event stream's replay makes per re-check
    interval before it waits for the next"""
    streams_per_user: int = Field(default=5, ge=1, le=1000)
    """event streams one user may hold open on one API replica"""
    authz_fanout_namespaces: int = Field(default=50, ge=1, le=1000)
    """namespaces one all-namespaces request checks"""
    authz_fanout_concurrency: int = Field(default=8, ge=1, le=64)
    """SubjectAccessReviews one request has in flight"""
    token_reviews_per_minute: int = Field(default=120, ge=1, le=100_000)
    """TokenReviews of not yet known tokens each client address may cause"""
    audit_retention_days: int = Field(default=90, ge=30, le=3650)
    audit_reads: Literal["none", "sensitive", "all"] = "sensitive"
    """which allowed reads the audit trail records: sensitive ones (the trail itself, webhooks,
    backup stores, backups and restores), every authenticated one, or none (writes and refusals
    always)"""
    ratelimit_failure_mode: Literal["open", "closed"] = "open"
    """when Redis is unreachable: open lets requests through, closed limits locally"""
    ratelimit_memory_buckets: int = Field(default=250_000, ge=1000, le=50_000_000)
    """buckets one replica's in-memory limiter holds at most (about 250 bytes each)"""
    ratelimit_status_interval: float = Field(default=15.0, ge=0.5, le=3600)
    """seconds between RateLimitPolicy status writes"""
    metrics_port: int | None = Field(default=9090, ge=1, le=65535)
    """separate port for /metrics; unset: none"""
    # -- the operator -------------------------------------------------------------------
    managed_postgres_url: SecretStr | None = None
    """admin DSN of the PostgreSQL server that hosts environment databases"""
    managed_postgres_host: str | None = None
    """host name workloads use to reach that server (default: the DSN's host)"""
    managed_postgres_pool_size: int = Field(default=4, ge=1, le=64)
    """admin connections the operator keeps to that server, and tenant connections it opens at once
    """
    reconcile_interval: float = Field(default=30.0, ge=1, le=3600)
    """seconds between drift-repair passes"""
    stray_database_interval: float = Field(default=600.0, ge=1, le=86400)
    """seconds between the operator's passes that drop the databases of Restores and RestoreDrills
    that are gone (the first at start-up)"""
    operator_worker_limit: int | None = Field(default=None, ge=1, le=10000)
    """objects the operator's handlers work on at once, per kind and namespace (Kopf's
    worker_limit); unset: unbounded"""
    operator_leader_election: bool = True
    """one replica reconciles and the others stand by, by a coordination.k8s.io Lease in
    DOCKYARD_NAMESPACE; off only for a single replica run by hand or in a test"""
    operator_lease_duration: float = Field(default=15.0, ge=2, le=300)
    """seconds a standby waits after the leader's last renewal before it takes over"""
    operator_lease_renew_deadline: float = Field(default=10.0, ge=1, le=300)
    """seconds the leader keeps trying to renew before it stops reconciling and exits"""
    operator_lease_retry: float = Field(default=2.0, gt=0, le=60)
    """seconds between a leader's renewals, and between a standby's looks"""
    operator_kube_connections: int = Field(default=32, ge=1, le=1000)
    """connections the operator keeps open to the apiserver"""
    scaling_interval: float = Field(default=10.0, ge=1, le=300)
    """seconds between ScalingPolicy passes (schedule windows, HPA status)"""
    operator_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """port of the operator's /metrics (restore drills); unset: not served"""
    operator_metrics_host: str = Field(default="127.0.0.1", min_length=1)
    """address the operator's /metrics listens on; 0.0.0.0 in a pod, so that Prometheus can scrape
    the pod's address"""
    ingress_namespace: str = Field(
        default="ingress-nginx", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )
    """namespace of the ingress controller, whose pods environments admit"""
    ingress_domains: list[Annotated[str, Field(pattern=INGRESS_DOMAIN_PATTERN)]] = Field(
        default_factory=lambda: ["*"]
    )
    """hosts an environment may publish through its Ingress when its Namespace has no
    dockyard.io/ingress-domains annotation: "*" any, "*.example.com" any under example.com,
    else that host alone; [] none"""
    # -- backup and restore runners (dockyard backup-run / restore-run) -------------------
    backup_source_dsn: SecretStr | None = None
    """DSN of the database backup-run dumps"""
    restore_target_dsn: SecretStr | None = None
    """DSN of the (empty) database restore-run restores into"""
    backup_key: SecretStr | None = None
    """artifact encryption key: 32 bytes as hex or base64 (--key-file wins)"""
    # -- backups run by the operator (Backup, BackupSchedule) -----------------------------
    backup_root: Path = Field(default_factory=lambda: Path.home() / ".local/share/dockyard/backups")
    """directory every filesystem storage path must lie under; in a cluster, the mount point of the
    backups PersistentVolumeClaim"""
    backup_concurrency: int = Field(default=2, ge=1, le=64)
    """backups, restores and drills the operator runs inline at once"""
    backup_concurrency_per_namespace: int | None = Field(default=None, ge=1, le=64)
    """of those, how many one namespace may hold at once (a restore may take one more while a
    slot would stay idle), so that others find a slot when this is below
    DOCKYARD_BACKUP_CONCURRENCY; unset: half of it (at least 1)"""
    backup_namespace_quota: ByteSize | None = Field(default=None, gt=0)
    """bytes of artifacts one namespace's inline backups may keep under DOCKYARD_BACKUP_ROOT
    (such as 50GiB); a backup that would outgrow it fails with StorageQuotaExceeded; unset:
    no limit but the volume's"""
    backup_max_attempts: int = Field(default=3, ge=1, le=20)
    """runs of one backup before it is marked Failed"""
    restore_jobs: int = Field(default=4, ge=1, le=64)
    """pg_restore --jobs of a parallel restore (with a spool directory)"""
    restore_spool_dir: Path | None = None
    """scratch directory a restore spools the verified, decrypted dump into, to run pg_restore
    --jobs; unset: one streamed --single-transaction pg_restore"""
    backup_retry_delay: float = Field(default=30.0, ge=0, le=3600)
    """seconds before the first retry; doubles"""
    backup_schedule_interval: float = Field(default=10.0, ge=0.5, le=300)
    """seconds between BackupSchedule passes"""
    runner_image: str = Field(default="ghcr.io/dockyard/dockyard:latest", min_length=1)
    """image of runner Jobs (dockyard backup-run); the operator's own image"""
    default_backup_schedule: str = "0 2 * * *"
    """cron of production environments' default schedule"""
    default_drill_schedule: str = "30 4 * * *"
    """cron of production environments' default drill"""
    drill_check_timeout: float = Field(default=30.0, ge=0.1, le=3600)
    """statement_timeout, in seconds, of each of a drill's SQL checks"""
    run_deadline: int = Field(default=24 * 3600, ge=1, le=7 * 24 * 3600)
    """seconds a backup, restore or drill run may take, inline or in a runner Job (its
    activeDeadlineSeconds); past it the run fails with DeadlineExceeded"""
    stale_partial_margin: int = Field(default=3600, ge=0, le=7 * 24 * 3600)
    """seconds, past DOCKYARD_RUN_DEADLINE, after which a partial file or an incomplete
    multipart upload is taken for a dead run's and removed"""
    backup_delete_timeout: float = Field(default=3600.0, ge=1, le=30 * 24 * 3600)
    """seconds a Backup's finalizer retries deleting its artifacts before it gives up (condition
    ArtifactDeleted, Event ArtifactNotDeleted) and lets it go"""
    s3_allow_http: bool = False
    """let inline runs reach S3 endpoints over plain http"""
    s3_allowed_networks: list[IPvAnyNetwork] = Field(default_factory=list)
    """private, loopback or link-local networks inline S3 endpoints may resolve to (refused
    otherwise), e.g. ["10.0.0.0/8"]"""
    audit_sink_token: SecretStr | None = None
    """bearer token the kube-apiserver's audit webhook presents to POST /api/v1/audit/kubernetes;
    unset: that endpoint is off"""
    audit_sink_max_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1024 * 1024, le=256 * 1024 * 1024
    )
    """largest audit batch the sink takes (read only once its token is checked); the apiserver
    drops a batch that is refused, so keep this above its --audit-webhook-truncate-max-batch-size
    (16 MiB in docs/audit.md)"""
    cursor_key: SecretStr | None = Field(default=None, min_length=32)
    """secret (at least 32 characters) the all-namespaces Environment list seals its page cursors
    with, the same on every API replica; unset: a key drawn per process, so a cursor works only
    on the replica that gave it"""
    audit_own_users: list[str] = Field(
        default_factory=(
            lambda: [
                "system:serviceaccount:dockyard-system:dockyard-api",
                "system:serviceaccount:dockyard-system:dockyard-operator",
            ]
        )
    )
    """user names of Dockyard's own components, whose writes the audit sink leaves to them (only
    with a Dockyard user agent too); the API adds its own identity"""
    # -- webhooks (the operator's dispatcher, docs/events.md) -----------------------------
    webhook_allow_http: bool = False
    """allow http:// webhook URLs (https only otherwise)"""
    webhook_allowed_networks: list[IPvAnyNetwork] = Field(default_factory=list)
    """private, loopback or link-local networks webhook URLs may resolve to (refused otherwise),
    e.g. ["10.0.0.0/8"]"""
    webhook_timeout: float = Field(default=5.0, gt=0, le=60)
    """seconds one delivery may take"""
    webhook_backoff_base: float = Field(default=2.0, gt=0, le=600)
    """seconds before the first retry (doubling)"""
    webhook_backoff_max: float = Field(default=600.0, gt=0, le=86_400)
    """longest pause between retries"""
    webhook_dead_letter_after: float = Field(default=86_400.0, gt=0, le=30 * 86_400)
    """seconds after which an undelivered event is given up (dead letter)"""
    webhook_breaker_failures: int = Field(default=5, ge=1, le=1000)
    """failures in a row that open an endpoint's breaker"""
    webhook_breaker_open_seconds: float = Field(default=30.0, gt=0, le=3600)
    """seconds an endpoint's open breaker holds"""
    event_retention_days: int = Field(default=30, ge=7, le=3650)
    """days the event log (SSE resume, webhook fan-out) and finished webhook deliveries are kept; an
    event with a delivery still pending is kept"""
    webhook_interval: float = Field(default=0.5, gt=0, le=60)
    """seconds between the dispatcher's passes"""
    default_backup_store: bool | None = None
    """create the BackupStore 'default' (filesystem under DOCKYARD_BACKUP_ROOT) and its generated
    key Secret in DOCKYARD_NAMESPACE at start when no store is marked default; unset: in
    development mode only"""
    backup_store_guard: bool = True
    """hold a BackupStore's deletion while Backups name it (the operator's finalizer); off only
    where another operator of the cluster holds it"""
    default_backup_key_secret: str = Field(
        default="dockyard-backup-key", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )
    """Secret (key 'key') the default BackupSchedule encrypts with"""
    # -- logging ------------------------------------------------------------------------
    log_level: str = Field(default="INFO", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_format: str = Field(default="json", pattern=r"^(json|console)$")

    @field_validator("database_url", "migration_database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_url(PostgresDsn, value, "a PostgreSQL URL")
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_url(RedisDsn, value, "a Redis URL")
        return value

    def runs_per_namespace(self) -> int:
        """The inline run slots one namespace may hold at once."""
        if self.backup_concurrency_per_namespace is not None:
            return min(self.backup_concurrency_per_namespace, self.backup_concurrency)
        return max(1, self.backup_concurrency // 2)

    @property
    def creates_default_backup_store(self) -> bool:
        """Whether the operator makes a default BackupStore when there is none."""
        if self.default_backup_store is not None:
            return self.default_backup_store
        return self.mode is Mode.DEVELOPMENT

    def database_dsn(self) -> str:
        """The platform database DSN, validated, as the string asyncpg expects."""
        return str(PostgresDsn(self.database_url.get_secret_value()))

    def migration_database_dsn(self) -> str:
        """The DSN ``dockyard migrate`` connects with: the owner's, else the platform DSN."""
        if self.migration_database_url is None:
            return self.database_dsn()
        return str(PostgresDsn(self.migration_database_url.get_secret_value()))

    def redis_dsn(self) -> str | None:
        """The Redis URL, validated, or ``None`` when Redis is not configured."""
        if self.redis_url is None:
            return None
        return str(RedisDsn(self.redis_url.get_secret_value()))
