"""Restoring in a runner Job: starting ``dockyard restore-run`` and reading how it went.

A restore or drill with ``runner: Job`` is followed the way a Backup's Job is: one pass
applies the runner's identity (``jobs.runner_identity``) and the Job
(:func:`start_restore_job`, idempotent: one Job name per attempt), and says to look
again in ``RUNNER_POLL_SECONDS``; each later pass reads the Job (:func:`read_job`) and,
once it finished, its result (:func:`job_result`) from the runner container's
termination message (``jobs.termination_message``). No pass waits for the Job.

The error a runner reports keeps its reason: a flipped byte is "ChecksumMismatch:
checksum mismatch: ..." in a Job as it is inline, and not retried. A Job that failed
without a message (an image that does not pull) or vanished is a ``RunnerFailed``,
which is retried. A Job that "succeeded" without a result did not restore anything
anyone can vouch for and fails too. A Job that outlives ``DOCKYARD_RUN_DEADLINE`` (its
``activeDeadlineSeconds``) is deleted and fails as an inline run past the deadline does
(``RunDeadlineExceeded``, not retried; :func:`check_deadline`, which a Backup's Job
goes through too).

A Restore or RestoreDrill that is deleted, or whose run is found interrupted, has its
Jobs deleted with their Pods (:func:`stop_runner_jobs`) before its database is dropped,
so no runner keeps writing into a database that is about to go.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import ValidationError

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.backup import Backup
from dockyard.core.resources import JOBS, PODS, ROLES, SERVICE_ACCOUNTS
from dockyard.operator.apply import apply_as, delete, get, merge_patch
from dockyard.operator.builders import environment as environment_builders
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.runs import jobs
from dockyard.operator.runs.context import RunContext
from dockyard.operator.runs.inline import RunDeadlineExceeded
from dockyard.operator.runs.restoring import backup_artifact, job_key
from dockyard.runner import ArtifactError, BackupError, RestoreResult

logger = logging.getLogger(__name__)

# How often a restore Job is looked at while it works: one GET per running Job.
RUNNER_POLL_SECONDS: Final = 2.0
# The reason of the Failed condition a Job gets past its activeDeadlineSeconds.
_JOB_DEADLINE: Final = "DeadlineExceeded"


class RunnerFailed(BackupError):
    """The runner Job failed without saying why, vanished, or reported nothing."""

    reason = "RunnerFailed"


class RunnerReported(BackupError):
    """The error the runner itself reported, under its own reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # type: ignore[misc]  # per instance: the runner's reason


class ArtifactRejected(RunnerReported, ArtifactError):
    """The runner refused the artifact (checksum, key, format): not worth a retry."""


def _reasons(error: type[BackupError]) -> frozenset[str]:
    found = {error.reason}
    for subclass in error.__subclasses__():
        found |= _reasons(subclass)
    return frozenset(found)


# The runner's reasons for an artifact that cannot be trusted (``ArtifactError`` and its
# subclasses inline): ``retryable`` says no to them in Job mode too.
_ARTIFACT_REASONS: Final = _reasons(ArtifactError)


@dataclass(frozen=True, slots=True)
class RestoreJob:
    """What a restore in a Job needs besides the backup: who owns it and where it goes."""

    owner: Owner
    name: str
    """The Job's name: one per attempt, so a retry never meets its predecessor."""
    runner: str
    """``restore`` or ``drill``: the ``dockyard.io/runner`` label."""
    environment: str
    """The environment whose database Secret the runner connects with."""


async def apply_runner_identity(kube: KubeClient, namespace: str) -> None:
    """The ServiceAccount restore and drill Jobs run as in ``namespace`` (no rights).
    ``RunnerFailed`` where another object controls one of its name (an Environment
    named after it): applied over it, the account would be taken from its owner."""
    for manifest in jobs.runner_identity(namespace):
        name = manifest["metadata"]["name"]
        current = await get(kube, SERVICE_ACCOUNTS.path(namespace, name))
        owners = (current or {}).get("metadata", {}).get("ownerReferences") or ()
        if owner := next((ref for ref in owners if ref.get("controller")), None):
            raise RunnerFailed(
                f"ServiceAccount {name}, which runner Jobs run as, is {owner.get('kind')} "
                f"{owner.get('name')}'s in namespace {namespace}: run inline, or rename it"
            )
        await apply_as(kube, manifest)
    await _retire_shared_grant(kube, namespace)


async def apply_backup_runner_identity(kube: KubeClient, backup: Backup) -> None:
    """The ServiceAccount, Role and RoleBinding of ``backup``'s runner Jobs."""
    for manifest in jobs.backup_runner_identity(Owner.of(backup)):
        await apply_as(kube, manifest)
    await _retire_shared_grant(kube, backup.metadata.namespace or "")


async def _retire_shared_grant(kube: KubeClient, namespace: str) -> None:
    """Empty the Role ``dockyard-backup-runner`` that earlier operators bound to the
    shared runner account, which let any Backup's runner patch every Backup's status in
    the namespace. (Emptied, not deleted: the operator may not delete Roles.)"""
    path = ROLES.path(namespace, jobs.RUNNER_ACCOUNT)
    role = await get(kube, path)
    if role is not None and role.get("rules"):
        await merge_patch(kube, path, {"rules": []})
        logger.info("shared runner Role emptied", extra={"namespace": namespace})


async def start_restore_job(
    context: RunContext, backup: Backup, *, database: str, job: RestoreJob
) -> None:
    """Apply the Job that restores ``backup`` into the (empty) ``database``, and the
    runner's identity; applying them again changes nothing."""
    artifact = backup_artifact(backup)
    kube = context.kube
    namespace = job.owner.namespace
    key_ref, key_id = await job_key(context, backup)
    await apply_runner_identity(kube, namespace)
    manifest = jobs.restore_job(
        job.owner,
        backup,
        name=job.name,
        runner=job.runner,
        artifact=artifact,
        key_id=key_id,
        key_ref=key_ref,
        database=database,
        database_secret=environment_builders.database_secret_name(job.environment),
        image=context.settings.runner_image,
        deadline_seconds=context.settings.run_deadline,
        # An operator that spools its own restores has its runners spool too (into
        # their private scratch volume); otherwise they stream.
        jobs=context.settings.restore_jobs if context.settings.restore_spool_dir else None,
    )
    await apply_as(kube, manifest)


@dataclass(frozen=True, slots=True)
class RunnerJob:
    """One look at a runner Job: its state and when it was made and finished."""

    namespace: str
    name: str
    manifest: dict[str, Any] | None

    @property
    def state(self) -> str:
        """``Running``, ``Succeeded``, ``Failed`` or ``Missing``."""
        return jobs.job_state(self.manifest)

    @property
    def created_at(self) -> datetime | None:
        return _timestamp((self.manifest or {}).get("metadata", {}).get("creationTimestamp"))

    @property
    def completed_at(self) -> datetime | None:
        return _timestamp(((self.manifest or {}).get("status") or {}).get("completionTime"))

    def seconds(self, now: datetime) -> float | None:
        """From the Job's creation to its completion (or ``now``); None if not known."""
        created = self.created_at
        if created is None:
            return None
        return max(((self.completed_at or now) - created).total_seconds(), 0.0)


async def read_job(kube: KubeClient, namespace: str, name: str, *, owner_uid: str) -> RunnerJob:
    """The Job ``name`` in ``namespace`` as it is now, if the object ``owner_uid`` controls
    it; else ``Missing``. Job names come from their owner's name, so the Job of an
    earlier object of the name (deleted, its Jobs not yet collected) is not this one's."""
    if not owner_uid:
        raise ValueError(f"no owner uid to read Job {namespace}/{name} for")
    manifest = await get(kube, JOBS.path(namespace, name))
    if manifest is not None and not _controlled_by(manifest, owner_uid):
        manifest = None
    return RunnerJob(namespace, name, manifest)


async def job_result(
    context: RunContext, job: RunnerJob, now: datetime | None = None
) -> RestoreResult | None:
    """None while ``job`` runs; once it finished, its result, or its error.

    A Job past ``DOCKYARD_RUN_DEADLINE`` is deleted (with its Pods) and raises
    ``RunDeadlineExceeded``, as does one its own deadline stopped.
    """
    await check_deadline(context, job, now)
    state = job.state
    if state == "Running":
        return None
    message = None
    if state != "Missing":
        message = await runner_message(context.kube, job)
    return _result(job.name, state, job.manifest, message)


async def check_deadline(context: RunContext, job: RunnerJob, now: datetime | None = None) -> None:
    """Raise ``RunDeadlineExceeded`` for a runner Job (of any kind) past
    ``DOCKYARD_RUN_DEADLINE``: one stopped by its own ``activeDeadlineSeconds``, or one
    still running past it (the setting lowered since it started), deleted first."""
    deadline = context.settings.run_deadline
    if job.state == "Running":
        seconds = job.seconds(now or datetime.now(UTC))
        if seconds is None or seconds < deadline:
            return
        await _delete_quietly(context.kube, JOBS.path(job.namespace, job.name), _uid(job))
        raise _past_deadline(deadline)
    if job.state == "Failed" and _failed_condition(job.manifest).startswith(_JOB_DEADLINE):
        raise _past_deadline(deadline)


async def clear_finished(kube: KubeClient, namespace: str, name: str, *, owner_uid: str) -> bool:
    """Delete the finished Job ``name`` of ``owner_uid`` (with its Pods) before an attempt
    that will have its name starts: the attempt a pause did not count starts again under
    the same name, and the old Job is kept for an hour. Applied over it, the new one is
    refused (its template, trace context included, cannot change), or, were it the same,
    would change nothing and the attempt would read its old failure. Whether there was
    one (look again once it is gone)."""
    job = await read_job(kube, namespace, name, owner_uid=owner_uid)
    if job.state not in ("Failed", "Succeeded"):
        return False
    await delete(kube, JOBS.path(namespace, name), uid=_uid(job))
    return True


def _uid(job: RunnerJob) -> str | None:
    return ((job.manifest or {}).get("metadata") or {}).get("uid")


def _past_deadline(deadline: int) -> RunDeadlineExceeded:
    # The words of an inline run stopped by its deadline (InlineRuns).
    return RunDeadlineExceeded(
        f"the run did not finish within {deadline}s (DOCKYARD_RUN_DEADLINE) and was stopped"
    )


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


async def runner_message(kube: KubeClient, job: RunnerJob) -> str | None:
    """The termination message the runner of ``job`` left in its Pod's status; None if
    the Job is gone, or if no one Pod can be taken for its runner.

    Its Pods are found as the Job controller finds them, by the Job's uid
    (``batch.kubernetes.io/controller-uid``) and its controller reference, never by
    ``job-name``, which the pods of an earlier Job of the name carry too. Whoever may
    create pods in the namespace can still make one the Job controller adopts (it takes
    in an orphan with that label); so only a Pod that runs what the Job's template says
    is read (``template_mismatch``), and none when there are more than one: a runner Job
    makes one Pod (``backoffLimit: 0``). A Job that succeeded without a message it can
    read fails its run.
    """
    manifest = job.manifest or {}
    uid = (manifest.get("metadata") or {}).get("uid")
    if not uid:
        return None
    selector = f"{jobs.CONTROLLER_UID_LABEL}={uid}"
    pods = await kube.get(PODS.path(job.namespace), params={"labelSelector": selector})
    owned = [pod for pod in pods.get("items") or () if _controlled_by(pod, uid)]
    if len(owned) != 1:
        logger.warning(
            "runner Job has %d pods: no result read", len(owned),
            extra={"namespace": job.namespace, "job": job.name},
        )  # fmt: skip
        return None
    if (differs := template_mismatch(owned[0], manifest)) is not None:
        logger.warning(
            "runner pod does not run its Job's template (%s): no result read", differs,
            extra={"namespace": job.namespace, "job": job.name,
                   "pod": owned[0]["metadata"].get("name")},
        )  # fmt: skip
        return None
    return jobs.termination_message({"items": owned})


# What admission may add to a runner Pod that its template does not say: the token
# mounts of the ServiceAccount plugin and of workload identity (EKS, Azure), and the
# variables that point the cloud SDKs at those tokens. Nothing else.
_TOKEN_MOUNTS: Final = (
    "/var/run/secrets/kubernetes.io/serviceaccount",
    "/var/run/secrets/eks.amazonaws.com/",
    "/var/run/secrets/azure/tokens",
)
_IDENTITY_VARIABLES: Final = ("AWS_", "AZURE_")
# Fields of the runner container that must be as the template says.
_RUN_AS: Final = (
    "command", "args", "workingDir", "envFrom", "lifecycle", "livenessProbe",
    "readinessProbe", "startupProbe", "terminationMessagePath", "terminationMessagePolicy",
)  # fmt: skip


def template_mismatch(pod: dict[str, Any], job: dict[str, Any]) -> str | None:
    """What of ``pod`` differs from what ``job``'s template says it runs, or None.

    The runner container must run the template's image (or the same image pinned to a
    digest), command, arguments, environment, hooks and probes, as the template's
    account and with its volumes and mounts. Admission may add only token mounts and the
    variables naming them (``_TOKEN_MOUNTS``, ``_IDENTITY_VARIABLES``); a webhook that
    adds more to the runner container makes its result unreadable: exclude pods labelled
    ``dockyard.io/runner`` from it.
    """
    template = ((job.get("spec") or {}).get("template") or {}).get("spec") or {}
    spec = pod.get("spec") or {}
    want, got = _runner(template), _runner(spec)
    if want is None or got is None:
        return "containers"
    image, wanted_image = str(got.get("image") or ""), str(want.get("image") or "")
    if image != wanted_image and not image.startswith(wanted_image + "@sha256:"):
        return "image"
    for key in _RUN_AS:
        if got.get(key) != want.get(key):
            return key
    for key in ("serviceAccountName", "shareProcessNamespace"):
        if spec.get(key) != template.get(key):
            return key
    env, wanted_env = got.get("env") or [], want.get("env") or []
    if any(e not in env for e in wanted_env) or any(
        e not in wanted_env and not str(e.get("name", "")).startswith(_IDENTITY_VARIABLES)
        for e in env
    ):
        return "env"
    mounts, wanted_mounts = got.get("volumeMounts") or [], want.get("volumeMounts") or []
    if any(m not in mounts for m in wanted_mounts) or any(
        m not in wanted_mounts and not str(m.get("mountPath", "")).startswith(_TOKEN_MOUNTS)
        for m in mounts
    ):
        return "volumeMounts"
    volumes = spec.get("volumes") or []
    if any(v not in volumes for v in template.get("volumes") or []):
        return "volumes"
    return None


def _runner(spec: dict[str, Any]) -> dict[str, Any] | None:
    found = [c for c in spec.get("containers") or () if c.get("name") == jobs.RUNNER_CONTAINER]
    return found[0] if len(found) == 1 else None


def _controlled_by(obj: dict[str, Any], uid: str) -> bool:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or ()
    return any(ref.get("controller") and ref.get("uid") == uid for ref in refs)


async def stop_runner_jobs(
    kube: KubeClient, namespace: str, owner_uid: str, *, selector: str | None = None
) -> list[str]:
    """Delete the runner Jobs of the Restore or RestoreDrill ``owner_uid`` (with their
    Pods), or those ``selector`` picks that it controls (a Backup's); their names."""
    selector = selector or f"{jobs.OWNER_UID_LABEL}={owner_uid}"
    listing = await kube.get(JOBS.path(namespace), params={"labelSelector": selector})
    owned = [i for i in listing.get("items") or () if _controlled_by(i, owner_uid)]
    for item in owned:
        meta = item["metadata"]
        await _delete_quietly(kube, JOBS.path(namespace, meta["name"]), meta.get("uid"))
    return [item["metadata"]["name"] for item in owned]


async def _delete_quietly(kube: KubeClient, path: str, uid: str | None) -> None:
    # Gone already, or made again under the name, is fine (apply.delete); any other
    # refusal leaves it to its TTL.
    with contextlib.suppress(KubeError):
        await delete(kube, path, uid=uid)


def _result(
    name: str, state: str, job: dict[str, Any] | None, message: str | None
) -> RestoreResult:
    error = jobs.runner_error(message)
    if error is not None:
        reason, text = error
        kind = ArtifactRejected if reason in _ARTIFACT_REASONS else RunnerReported
        raise kind(reason, text)
    if state == "Succeeded":
        try:
            return RestoreResult.model_validate(jobs.runner_document(message))
        except ValidationError:
            raise RunnerFailed(
                f"runner Job {name} succeeded without reporting a restore result"
            ) from None
    if state == "Missing":
        raise RunnerFailed(f"runner Job {name} is gone")
    why = _failed_condition(job) or (message or "").strip()[-300:] or "no reason given"
    raise RunnerFailed(f"runner Job {name} failed: {why}")


def _failed_condition(job: dict[str, Any] | None) -> str:
    for condition in ((job or {}).get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            return ": ".join(p for p in (condition.get("reason"), condition.get("message")) if p)
    return ""


__all__ = [
    "JOBS",
    "RUNNER_POLL_SECONDS",
    "ArtifactRejected",
    "RestoreJob",
    "RunnerFailed",
    "RunnerJob",
    "RunnerReported",
    "apply_backup_runner_identity",
    "apply_runner_identity",
    "check_deadline",
    "clear_finished",
    "job_result",
    "read_job",
    "runner_message",
    "start_restore_job",
    "stop_runner_jobs",
]
