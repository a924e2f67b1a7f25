"""One inline backup attempt, in the operator's process: sweep the storage's leftovers of
dead runs, then dump the environment's database into it (``runner.run_backup``).

The life cycle (``backups.lifecycle``) decides when an attempt runs and records what it
gave; this module only makes the artifact.
"""

from __future__ import annotations

from dockyard.core.models.backup import Backup
from dockyard.core.models.storage import BackupEncryption, BackupStorage
from dockyard.operator.backups.sweeping import sweep
from dockyard.operator.runs.context import RunContext, artifact_name, environment_dsn, load_key
from dockyard.operator.store import Loaded, post
from dockyard.runner import BackupResult, run_backup
from dockyard.runner.filesystem import Quota


async def attempt_inline(
    context: RunContext,
    loaded: Loaded[Backup],
    attempt: int,
    storage_spec: BackupStorage,
    encryption: BackupEncryption,
    ambient: bool,
    quota: Quota | None,
) -> BackupResult:
    """Attempt ``attempt`` of the Backup: its artifact stored, its bytes charged to
    ``quota`` (the namespace's, on the backups volume; see ``runs.quota``)."""
    backup = loaded.resource
    async with context.storage(
        storage_spec, loaded.namespace, ambient=ambient, quota=quota
    ) as storage:
        if swept := await sweep(storage, context.settings):
            post(
                loaded.raw,
                reason="StalePartialsRemoved",
                message=f"Removed {swept} partial artifacts or uploads of dead runs",
            )
        key = await load_key(context.kube, loaded.namespace, encryption.key_secret_ref)
        dsn = await environment_dsn(
            context.kube,
            context.settings,
            loaded.namespace,
            backup.spec.environment_ref.name,
            context.postgres,
        )
        return await run_backup(
            dsn=dsn,
            storage=storage,
            name=artifact_name(loaded.namespace, loaded.name, loaded.uid, attempt),
            key=key,
        )
