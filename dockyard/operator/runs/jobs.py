"""Runner Jobs: the batch/v1 Jobs that run ``dockyard backup-run`` and ``restore-run``.

Pure builders (spec in, manifests out), applied by ``dockyard.operator.apply``. A Job
runs the operator's image (``Settings.runner_image``). A Backup's Jobs run as that
Backup's own ServiceAccount, ``backup-runner-<backup uid>``, whose Role may do one thing:
patch *that Backup's* status (``resourceNames``); the three objects are owned by the
Backup and go with it (:func:`backup_runner_identity`; the template ships as
``manifests/backup-runner-rbac.yaml``, and a unit test keeps the two equal). Restore and
drill Jobs run as ``dockyard-backup-runner``, which holds no rights, and do not even get
its token (``automountServiceAccountToken``).
Nothing secret is in a Job: database URIs come from an environment's database Secret
(``secretKeyRef``), the encryption key is a file mounted from its Secret, S3
credentials come from their Secret. The key *id* (a fingerprint) is public.

How results come back:

- ``backup-run --report-backup NAMESPACE/NAME`` patches the Backup's status with the
  artifact's location, size, sha256, key id and manifest while the phase stays
  Running; the operator, following the Job, sees it succeed, catalogues the artifact
  and only then writes Completed, so the ordering artifact, catalog, status holds in
  both runner modes.
- Every runner writes its JSON result, or ``{"error": {"reason", "message"}}``, to
  the container's termination message (``--result-file /dev/termination-log``), which
  the kubelet copies into the Pod's status: :func:`termination_message` reads it, so a
  failed Job says why without anyone reading its logs.

``backoffLimit`` is 0: attempts are the operator's to count.
"""

from __future__ import annotations

import json
from typing import Any, Final

from dockyard.core import telemetry
from dockyard.core.models.backup import Backup
from dockyard.core.models.common import API_VERSION
from dockyard.core.models.references import SecretKeyReference
from dockyard.core.models.storage import RUNNER_OWN_PATH_MESSAGE
from dockyard.core.names import LABEL_VALUE_MAX, fitted, label_value
from dockyard.core.resources import Manifest
from dockyard.operator.builders.metadata import MANAGED_BY, MANAGED_BY_LABEL, PART_OF_LABEL, Owner
from dockyard.operator.builders.pods import restricted_container, restricted_pod
from dockyard.operator.runs.context import StorageRefused, storage_url
from dockyard.operator.runs.stores import filled

RUNNER_ACCOUNT: Final = "dockyard-backup-runner"
KEY_MOUNT: Final = "/var/run/secrets/dockyard/backup-key"
KEY_FILE: Final = "key"
CA_MOUNT: Final = "/var/run/secrets/dockyard/s3-ca"
CA_FILE: Final = "ca.crt"
# Where a runner writes its JSON result; the kubelet copies it into the Pod's status.
TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"
# The group of the runner image's user (Dockerfile: USER 10001:10001); any image works,
# as a kubelet adds the pod's fsGroup to every container's groups.
RUNNER_FS_GROUP: Final = 10001
BACKUP_LABEL: Final = "dockyard.io/backup"
# On every runner Job and its pods: what it runs (backup, restore or drill).
RUNNER_LABEL: Final = "dockyard.io/runner"
# On restore and drill Jobs: the uid of the Restore or RestoreDrill (names can outgrow
# a label value; uids cannot).
OWNER_UID_LABEL: Final = "dockyard.io/owner-uid"
# The container of a runner Job's Pod that runs dockyard (its termination message is the
# result).
RUNNER_CONTAINER: Final = "runner"
# Set by the Job controller on a Job's pods: the Job's uid, by which it finds them.
CONTROLLER_UID_LABEL: Final = "batch.kubernetes.io/controller-uid"
# A runner that has not finished in a day is stuck, not slow: the default of
# DOCKYARD_RUN_DEADLINE (Settings.run_deadline), which inline runs honour too.
ACTIVE_DEADLINE_SECONDS: Final = 24 * 3600
TTL_AFTER_FINISHED_SECONDS: Final = 3600

# A Backup runner's identity is named for the Backup's uid (names outgrow 63 characters
# and come back under a new uid; uids do neither).
BACKUP_RUNNER_PREFIX: Final = "backup-runner-"


def runner_rules(backup: str) -> list[dict[str, Any]]:
    """What a Backup's runner may do: patch the status of the Backup ``backup``, no other."""
    return [
        {
            "apiGroups": [API_VERSION.split("/")[0]],
            "resources": ["backups/status"],
            "resourceNames": [backup],
            "verbs": ["patch"],
        }
    ]


# The only variables a runner Job gets in plain text: none of them is a secret.
PLAIN_VARIABLES = frozenset(
    {
        "DOCKYARD_LOG_FORMAT",
        "OTEL_SERVICE_NAME",
        telemetry.TRACEPARENT_VARIABLE,
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "AWS_CA_BUNDLE",  # the path of the mounted CA bundle, not the bundle
    }
)


def _tracing_env() -> list[Manifest]:
    """The runner continues the reconcile's trace (``TRACEPARENT``) and exports its spans
    where the operator does."""
    env: list[Manifest] = [{"name": "OTEL_SERVICE_NAME", "value": "dockyard-runner"}]
    current = telemetry.traceparent()
    if current is not None:
        env.append({"name": telemetry.TRACEPARENT_VARIABLE, "value": current})
    settings = telemetry.TelemetrySettings()
    if settings.otel_exporter_otlp_traces_endpoint is not None:
        value = str(settings.otel_exporter_otlp_traces_endpoint)
        env.append({"name": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "value": value})
    elif settings.otel_exporter_otlp_endpoint is not None:
        value = str(settings.otel_exporter_otlp_endpoint)
        env.append({"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": value})
    return env


def _labels(**extra: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, PART_OF_LABEL: "dockyard", **extra}


def runner_identity(namespace: str) -> list[Manifest]:
    """The ServiceAccount restore and drill Jobs run as in ``namespace``: it holds no
    rights, and those Jobs do not mount its token."""
    meta = {"name": RUNNER_ACCOUNT, "namespace": namespace, "labels": _labels()}
    return [{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}]


def backup_runner_account(owner: Owner) -> str:
    """The ServiceAccount of the Backup ``owner``'s runner Jobs."""
    return f"{BACKUP_RUNNER_PREFIX}{owner.uid}"


def backup_runner_identity(owner: Owner) -> list[Manifest]:
    """The ServiceAccount, Role and RoleBinding of one Backup's runner Jobs, owned by
    the Backup: the Role may patch that Backup's status and nothing else."""
    name = backup_runner_account(owner)
    meta = {
        "name": name,
        "namespace": owner.namespace,
        "labels": _labels(**{OWNER_UID_LABEL: owner.uid, RUNNER_LABEL: "backup"}),
        "ownerReferences": [owner.reference()],
    }
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": rbac, "kind": "Role", "metadata": meta, "rules": runner_rules(owner.name)},
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": owner.namespace}],
        },
    ]


def job_name(backup: str, attempt: int, *, kind: str = "backup") -> str:
    """``<kind>-<name>-<attempt>``; a name part too long to fit is cut and ends with a
    digest of the whole (``fitted``), so no two objects, or runs, share a Job name."""
    return fitted(f"{kind}-{backup}", LABEL_VALUE_MAX, suffix=f"-{attempt}")


def backup_job(
    backup: Backup,
    *,
    attempt: int,
    artifact: str,
    key_id: str,
    database_secret: str,
    image: str,
    deadline_seconds: int = ACTIVE_DEADLINE_SECONDS,
) -> Manifest:
    """The Job of one attempt of ``backup``: it reports to the Backup's status itself."""
    owner = Owner.of(backup)
    args = [
        "backup-run",
        f"--name={artifact}",
        f"--key-id={key_id}",
        f"--report-backup={owner.namespace}/{owner.name}",
        f"--result-file={TERMINATION_MESSAGE_PATH}",
    ]
    return _runner_job(
        owner,
        backup,
        name=job_name(owner.name, attempt),
        labels={BACKUP_LABEL: label_value(owner.name), RUNNER_LABEL: "backup"},
        args=args,
        database=("DOCKYARD_BACKUP_SOURCE_DSN", database_secret),
        image=image,
        api_access=True,
        account=backup_runner_account(owner),
        deadline_seconds=deadline_seconds,
    )


def restore_job(
    owner: Owner,
    backup: Backup,
    *,
    name: str,
    runner: str,
    artifact: str,
    key_id: str,
    database: str,
    database_secret: str,
    image: str,
    key_ref: SecretKeyReference | None = None,
    deadline_seconds: int = ACTIVE_DEADLINE_SECONDS,
    jobs: int | None = None,
) -> Manifest:
    """The Job that restores ``backup``'s artifact into the new ``database``, with the
    key ``key_id`` from ``key_ref`` (the Backup's own key Secret by default).

    With ``jobs``, a parallel restore: the dump is spooled to the Job's private scratch
    volume (``/tmp``, an emptyDir) and restored by ``pg_restore --jobs``.

    It connects with the target environment's own credentials (its database Secret's
    ``uri``), pointed at ``database``, which the operator created owned by that role, so
    the Job can write that database and nothing of the server's. Its result, or its
    error, is the container's termination message (``--result-file``), which the
    operator reads from the Pod: the runner needs no Kubernetes permission at all.
    """
    args = [
        "restore-run",
        f"--name={artifact}",
        f"--key-id={key_id}",
        f"--sha256={backup.status.sha256 or ''}",
        f"--database={database}",
        f"--result-file={TERMINATION_MESSAGE_PATH}",
    ]
    if jobs is not None:
        args += [f"--jobs={jobs}", "--spool-dir=/tmp"]  # nosec B108  # emptyDir
    return _runner_job(
        owner,
        backup,
        name=name,
        labels={RUNNER_LABEL: runner, OWNER_UID_LABEL: owner.uid},
        args=args,
        database=("DOCKYARD_RESTORE_TARGET_DSN", database_secret),
        image=image,
        api_access=False,
        deadline_seconds=deadline_seconds,
        key_ref=key_ref,
    )


def _runner_job(
    owner: Owner,
    backup: Backup,
    *,
    name: str,
    labels: dict[str, str],
    args: list[str],
    database: tuple[str, str],
    image: str,
    api_access: bool,
    deadline_seconds: int,
    account: str = RUNNER_ACCOUNT,
    key_ref: SecretKeyReference | None = None,
) -> Manifest:
    """A runner Job: ``dockyard <args>`` with ``backup``'s storage and key, the database
    URI of the Secret ``database[1]`` in the variable ``database[0]``, and nothing else
    (a ServiceAccount token only with ``api_access``). The key is ``key_ref``'s, by
    default the Backup's own."""
    labels = _labels(**labels)
    storage, encryption = filled(backup)
    key_ref = key_ref or encryption.key_secret_ref
    variable, secret = database
    env: list[Manifest] = [
        {"name": variable, "valueFrom": {"secretKeyRef": {"name": secret, "key": "uri"}}},
        {"name": "DOCKYARD_LOG_FORMAT", "value": "json"},
        *_tracing_env(),
    ]
    volumes: list[Manifest] = [
        {
            "name": "backup-key",
            "secret": {
                "secretName": key_ref.name,
                "items": [{"key": key_ref.key, "path": KEY_FILE}],
                "defaultMode": 0o400,
            },
        },
        {"name": "tmp", "emptyDir": {}},
    ]
    mounts: list[Manifest] = [
        {"name": "backup-key", "mountPath": KEY_MOUNT, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},  # noqa: S108  # nosec B108  # a private emptyDir
    ]
    args = [
        args[0],
        f"--storage={storage_url(storage)}",
        *args[1:],
        f"--key-file={KEY_MOUNT}/{KEY_FILE}",
    ]
    if storage.filesystem is not None and storage.filesystem.covers_the_runner():
        raise StorageRefused(
            f"filesystem path {storage.filesystem.path}: {RUNNER_OWN_PATH_MESSAGE}"
        )
    if storage.filesystem is not None and storage.filesystem.claim_name:
        volumes.append(
            {
                "name": "backups",
                "persistentVolumeClaim": {"claimName": storage.filesystem.claim_name},
            }
        )
        mounts.append({"name": "backups", "mountPath": storage.filesystem.path})
    if storage.s3 is not None:
        s3 = storage.s3
        if s3.endpoint:
            args.append(f"--s3-endpoint-url={s3.endpoint}")
        if s3.region:
            args.append(f"--s3-region={s3.region}")
        if s3.credentials_secret_ref is not None:
            for variable, optional in (
                ("AWS_ACCESS_KEY_ID", False),
                ("AWS_SECRET_ACCESS_KEY", False),
                ("AWS_SESSION_TOKEN", True),
            ):
                ref = {"name": s3.credentials_secret_ref.name, "key": variable}
                if optional:
                    ref["optional"] = True  # type: ignore[assignment]
                env.append({"name": variable, "valueFrom": {"secretKeyRef": ref}})
        if s3.ca_bundle_secret_ref is not None:
            # botocore checks the endpoint's certificate against the file AWS_CA_BUNDLE names.
            ca = s3.ca_bundle_secret_ref
            volumes.append(
                {
                    "name": "s3-ca",
                    "secret": {
                        "secretName": ca.name,
                        "items": [{"key": ca.key, "path": CA_FILE}],
                        "defaultMode": 0o444,
                    },
                }
            )
            mounts.append({"name": "s3-ca", "mountPath": CA_MOUNT, "readOnly": True})
            env.append({"name": "AWS_CA_BUNDLE", "value": f"{CA_MOUNT}/{CA_FILE}"})
    container: Manifest = {
        "name": RUNNER_CONTAINER,
        "image": image,
        "command": ["dockyard"],
        "args": args,
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": restricted_container(),
        "resources": {
            "requests": {"cpu": "250m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": deadline_seconds,
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_SECONDS,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": account,
                    "automountServiceAccountToken": api_access,
                    "restartPolicy": "Never",
                    "securityContext": {
                        **restricted_pod(),
                        # Secret volumes are root's: the group makes the key (0400 asked,
                        # 0440 given) and a fresh claim readable by the runner's user.
                        "fsGroup": RUNNER_FS_GROUP,
                        "fsGroupChangePolicy": "OnRootMismatch",
                    },
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }


def job_state(job: Manifest | None) -> str:
    """``Running``, ``Succeeded``, ``Failed`` or ``Missing``, from the Job's conditions."""
    if job is None:
        return "Missing"
    for condition in (job.get("status") or {}).get("conditions") or ():
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return "Succeeded"
        if condition.get("type") == "Failed":
            return "Failed"
    return "Running"


def termination_message(pods: Manifest) -> str | None:
    """The runner container's termination message in a Pod list (the newest Pod's)."""
    newest: tuple[str, str] | None = None
    for pod in pods.get("items") or ():
        for container in (pod.get("status") or {}).get("containerStatuses") or ():
            terminated = (container.get("state") or {}).get("terminated") or {}
            message = terminated.get("message")
            if container.get("name") != RUNNER_CONTAINER or not message:
                continue
            created = (pod.get("metadata") or {}).get("creationTimestamp") or ""
            if newest is None or created >= newest[0]:
                newest = (created, message)
    return newest[1] if newest else None


def runner_document(message: str | None) -> Any:
    """The runner's JSON document in a termination message: its last JSON line (with
    ``FallbackToLogsOnError`` the message may be log lines), or None."""
    for line in reversed((message or "").strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def runner_error(message: str | None) -> tuple[str, str] | None:
    """``(reason, message)`` of the error a runner reported, if it reported one."""
    document = runner_document(message)
    error = document.get("error") if isinstance(document, dict) else None
    if isinstance(error, dict) and error.get("reason") and error.get("message"):
        return str(error["reason"]), str(error["message"])
    return None
