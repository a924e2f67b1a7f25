"""Running ``dockyard restore-run`` in a Job and waiting for it, as a coroutine.

A restore or drill run in Job mode reads like the inline one: ``await``
:func:`restore_in_job` returns the runner's ``RestoreResult`` or raises the runner's
error. Underneath it applies the runner's identity (``jobs.runner_identity``) and the
Job, looks at the Job every ``RUNNER_POLL_SECONDS`` until it finished, and reads the
result from the runner container's termination message (``jobs.termination_message``).

The error a runner reports keeps its reason: a flipped byte is "ChecksumMismatch:
checksum mismatch: ..." in a Job as it is inline, and not retried. A Job that failed
without a message (its deadline, an image that does not pull) or vanished is a
``RunnerFailed``, which is retried. A Job that "succeeded" without a result did not
restore anything anyone can vouch for and fails too.

If the awaiting coroutine is cancelled (the Restore or RestoreDrill is deleted, or the
operator stops), the Job is deleted with its Pods, so no runner keeps writing into a
database that is about to be dropped. An operator that dies instead leaves it to the
recovery of the next one, which deletes the Jobs of the interrupted run
(:func:`stop_runner_jobs`) before it drops the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.backup import Backup
from dockyard.core.resources import JOBS, PODS, ROLE_BINDINGS, ROLES, SERVICE_ACCOUNTS
from dockyard.operator.apply import FIELD_MANAGER, get
from dockyard.operator.builders import environment as environment_builders
from dockyard.operator.builders.metadata import Owner
from dockyard.operator.runs import jobs
from dockyard.operator.runs.context import RunContext, load_key
from dockyard.runner import ArtifactError, BackupError, RestoreResult

logger = logging.getLogger(__name__)

IDENTITY_TYPES: Final = {
    "ServiceAccount": SERVICE_ACCOUNTS,
    "Role": ROLES,
    "RoleBinding": ROLE_BINDINGS,
}
# How often a restore Job is looked at while it works: one GET per running Job.
RUNNER_POLL_SECONDS: Final = 2.0
# Background: the Job goes at once, its Pods after it (a foreground delete would wait).
_DELETE_OPTIONS: Final = {"propagationPolicy": "Background"}


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
    """The runner ServiceAccount, Role and RoleBinding in ``namespace``."""
    for manifest in jobs.runner_identity(namespace):
        rtype = IDENTITY_TYPES[manifest["kind"]]
        await kube.apply(
            rtype.path(namespace, manifest["metadata"]["name"]),
            manifest,
            field_manager=FIELD_MANAGER,
        )


async def restore_in_job(
    context: RunContext, backup: Backup, *, artifact: str, database: str, job: RestoreJob
) -> RestoreResult:
    """Restore ``artifact`` into ``database`` in a Job; its result, or its error."""
    kube = context.kube
    namespace = job.owner.namespace
    key = await load_key(kube, namespace, backup.spec.encryption.key_secret_ref)
    await apply_runner_identity(kube, namespace)
    manifest = jobs.restore_job(
        job.owner,
        backup,
        name=job.name,
        runner=job.runner,
        artifact=artifact,
        key_id=key.key_id,
        database=database,
        database_secret=environment_builders.database_secret_name(job.environment),
        image=context.settings.runner_image,
        deadline_seconds=context.settings.run_deadline,
    )
    path = JOBS.path(namespace, job.name)
    await kube.apply(path, manifest, field_manager=FIELD_MANAGER)
    try:
        state, found = await _wait(kube, path)
    except asyncio.CancelledError:
        await asyncio.shield(_delete_quietly(kube, path))
        raise
    return _result(job.name, state, found, await runner_message(kube, namespace, job.name))


async def runner_message(kube: KubeClient, namespace: str, job: str) -> str | None:
    """The termination message the runner of Job ``job`` left in its Pod's status."""
    pods = await kube.get(PODS.path(namespace), params={"labelSelector": f"job-name={job}"})
    return jobs.termination_message(pods)


async def stop_runner_jobs(kube: KubeClient, namespace: str, owner_uid: str) -> list[str]:
    """Delete the runner Jobs of the Restore or RestoreDrill ``owner_uid`` (with their
    Pods); their names."""
    selector = f"{jobs.OWNER_UID_LABEL}={owner_uid}"
    listing = await kube.get(JOBS.path(namespace), params={"labelSelector": selector})
    names = [item["metadata"]["name"] for item in listing.get("items") or ()]
    for name in names:
        await _delete_quietly(kube, JOBS.path(namespace, name))
    return names


async def _wait(kube: KubeClient, path: str) -> tuple[str, dict[str, Any] | None]:
    while True:
        found = await get(kube, path)
        state = jobs.job_state(found)
        if state != "Running":
            return state, found
        await asyncio.sleep(RUNNER_POLL_SECONDS)


async def _delete_quietly(kube: KubeClient, path: str) -> None:
    with contextlib.suppress(KubeError):
        await kube.delete(path, body=_DELETE_OPTIONS)


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
    "ArtifactRejected",
    "RestoreJob",
    "RunnerFailed",
    "RunnerReported",
    "apply_runner_identity",
    "restore_in_job",
    "runner_message",
    "stop_runner_jobs",
]
