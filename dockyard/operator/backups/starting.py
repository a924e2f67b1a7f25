"""What guards a Backup's run as it starts: the tier it records, and a start that never
revives a run a schedule's ``Replace`` cancelled meanwhile.

A production Backup is guarded by the apiserver (``manifests/production-guard-policy.yaml``):
deleting it, or changing its ttl, takes the ``destroy`` verb. It is production's by
``status.environmentTier``, which only the operator writes: :func:`record_tier` writes it
on the first pass that sees the Backup, whatever its phase (so Backups made before the
field are recorded too), from its Environment's tier, that of one being deleted included
(its final snapshot is the last of its data).
"""

from __future__ import annotations

from dockyard.core.kube import KubeClient
from dockyard.core.models.backup import Backup, BackupPhase, BackupStatus
from dockyard.core.models.environment import Environment, Tier
from dockyard.core.names import label_value
from dockyard.operator.backups import status as report
from dockyard.operator.runs import jobs
from dockyard.operator.runs.runner_jobs import stop_runner_jobs
from dockyard.operator.store import KindStore, Loaded, OnInvalid


async def record_tier(
    backups: KindStore[Backup], environments: KindStore[Environment], loaded: Loaded[Backup]
) -> Tier | None:
    """Record the tier of ``loaded``'s Environment in its status; the tier, None while
    there is none to read it from (a later pass tries again). An Environment made after
    the Backup is another than the one it backed up (deleted and made again under the
    name, as development say): its tier is not the Backup's, and none is recorded, which
    the guard treats as production."""
    name = loaded.resource.spec.environment_ref.name
    raw = await environments.read(loaded.namespace, name)
    found = None if raw is None else await environments.loaded(raw, on_invalid=OnInvalid.SKIP)
    made = loaded.resource.metadata.creation_timestamp
    if found is None or (
        made is not None
        and found.resource.metadata.creation_timestamp is not None
        and found.resource.metadata.creation_timestamp > made
    ):
        return None
    tier = found.resource.spec.tier
    await backups.write_status(
        loaded.namespace, loaded.name, {"environmentTier": tier.value}, uid=loaded.uid
    )
    return tier


async def begin(backups: KindStore[Backup], loaded: Loaded[Backup], started: BackupStatus) -> bool:
    """Write ``started`` (Running), only while the Backup is still at the phase this
    pass read: a schedule's Replace may have cancelled it (Failed) meanwhile, and a
    cancelled run must not come back to life. Whether it was written."""
    read = loaded.resource.status.phase
    phase = read.value if read is not None else None
    return await backups.write_status(
        loaded.namespace,
        loaded.name,
        report.status_body(started),
        uid=loaded.uid,
        only_if=lambda raw: (raw.get("status") or {}).get("phase") == phase,
    )


async def undo_begin(backups: KindStore[Backup], loaded: Loaded[Backup]) -> None:
    """Put back the status this pass read, over the Running it wrote: only while the
    Backup is still Running (a Failed written by Replace meanwhile stays)."""
    await backups.write_status(
        loaded.namespace,
        loaded.name,
        report.status_body(loaded.resource.status),
        uid=loaded.uid,
        only_if=lambda raw: (raw.get("status") or {}).get("phase") == BackupPhase.RUNNING,
    )


async def ended_meanwhile(
    kube: KubeClient, backups: KindStore[Backup], loaded: Loaded[Backup]
) -> bool:
    """Whether the Backup whose runner Job was just made ended while it was being made
    (a schedule's Replace wrote Failed, and found no Job to stop yet). Its Job is then
    stopped here, so that no pg_dump goes on beside the replacement."""
    raw = await backups.read(loaded.namespace, loaded.name)
    if raw is not None and (raw.get("status") or {}).get("phase") == BackupPhase.RUNNING:
        return False
    selector = f"{jobs.BACKUP_LABEL}={label_value(loaded.name)}"
    await stop_runner_jobs(kube, loaded.namespace, loaded.uid, selector=selector)
    return True
