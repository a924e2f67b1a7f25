"""Runner Jobs: the batch/v1 Job that runs ``dockyard backup-run``, and its identity.

Pure builders (spec in, manifests out), applied by ``dockyard.operator.apply``. The Job
runs the operator's image (``Settings.runner_image``) as the ServiceAccount
``dockyard-backup-runner``, whose Role may do one thing: patch ``backups/status`` (the
same rules ship as ``manifests/backup-runner-rbac.yaml``; a unit test keeps the two
equal). Nothing secret is in the Job: the database URI comes from the environment's
database Secret (``secretKeyRef``), the encryption key is a file mounted from its
Secret, S3 credentials come from their Secret. The key *id* (a fingerprint) is public.

How results come back: ``backup-run --report-backup NAMESPACE/NAME`` patches the
Backup's status with the artifact's location, size, sha256, key id and manifest while
the phase stays Running; the operator, following the Job, sees it succeed, catalogues
the artifact and only then writes Completed, so the ordering artifact, catalog, status
holds in both runner modes. ``backoffLimit`` is 0: attempts are the operator's to count.
"""

from __future__ import annotations

from typing import Any, Final

from dockyard.core.models.backup import Backup
from dockyard.core.models.common import API_VERSION
from dockyard.operator.builders.metadata import (
    MANAGED_BY,
    MANAGED_BY_LABEL,
    PART_OF_LABEL,
    Manifest,
    Owner,
)
from dockyard.operator.runs.context import storage_url

RUNNER_ACCOUNT: Final = "dockyard-backup-runner"
KEY_MOUNT: Final = "/var/run/secrets/dockyard/backup-key"
KEY_FILE: Final = "key"
BACKUP_LABEL: Final = "dockyard.io/backup"
# Pod names derive from Job names and label values stop at 63 characters.
_JOB_NAME_MAX: Final = 63
# A runner that has not finished in a day is stuck, not slow.
ACTIVE_DEADLINE_SECONDS: Final = 24 * 3600
TTL_AFTER_FINISHED_SECONDS: Final = 3600

RUNNER_RULES: Final[tuple[dict[str, Any], ...]] = (
    {"apiGroups": [API_VERSION.split("/")[0]], "resources": ["backups/status"], "verbs": ["patch"]},
)


def _labels(**extra: str) -> dict[str, str]:
    return {MANAGED_BY_LABEL: MANAGED_BY, PART_OF_LABEL: "dockyard", **extra}


def runner_identity(namespace: str) -> list[Manifest]:
    """The ServiceAccount, Role and RoleBinding runner Jobs use in ``namespace``."""
    meta = {"name": RUNNER_ACCOUNT, "namespace": namespace, "labels": _labels()}
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta},
        {"apiVersion": rbac, "kind": "Role", "metadata": meta, "rules": list(RUNNER_RULES)},
        {
            "apiVersion": rbac,
            "kind": "RoleBinding",
            "metadata": meta,
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": RUNNER_ACCOUNT,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": RUNNER_ACCOUNT, "namespace": namespace}
            ],
        },
    ]


def job_name(backup: str, attempt: int) -> str:
    """``backup-<name>-<attempt>``, its name part shortened to fit."""
    suffix = f"-{attempt}"
    stem = f"backup-{backup}"[: _JOB_NAME_MAX - len(suffix)].rstrip("-.")
    return stem + suffix


def backup_job(
    backup: Backup,
    *,
    attempt: int,
    artifact: str,
    key_id: str,
    database_secret: str,
    image: str,
) -> Manifest:
    """The Job of one attempt of ``backup``."""
    owner = Owner.of(backup)
    spec = backup.spec
    labels = _labels(**{BACKUP_LABEL: owner.name})
    key_ref = spec.encryption.key_secret_ref
    env: list[Manifest] = [
        {
            "name": "DOCKYARD_BACKUP_SOURCE_DSN",
            "valueFrom": {"secretKeyRef": {"name": database_secret, "key": "uri"}},
        },
        {"name": "DOCKYARD_LOG_FORMAT", "value": "json"},
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
        "backup-run",
        f"--storage={storage_url(spec.storage)}",
        f"--name={artifact}",
        f"--key-id={key_id}",
        f"--key-file={KEY_MOUNT}/{KEY_FILE}",
        f"--report-backup={owner.namespace}/{owner.name}",
    ]
    if spec.storage.filesystem is not None and spec.storage.filesystem.claim_name:
        volumes.append(
            {
                "name": "backups",
                "persistentVolumeClaim": {"claimName": spec.storage.filesystem.claim_name},
            }
        )
        mounts.append({"name": "backups", "mountPath": spec.storage.filesystem.path})
    if spec.storage.s3 is not None:
        s3 = spec.storage.s3
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
    container: Manifest = {
        "name": "runner",
        "image": image,
        "command": ["dockyard"],
        "args": args,
        "env": env,
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "resources": {
            "requests": {"cpu": "250m", "memory": "128Mi"},
            "limits": {"memory": "512Mi"},
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": job_name(owner.name, attempt),
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": ACTIVE_DEADLINE_SECONDS,
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED_SECONDS,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": RUNNER_ACCOUNT,
                    "restartPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"},
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
