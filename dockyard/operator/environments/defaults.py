"""The default BackupSchedule and RestoreDrill every production Environment gets unless it
opts out.

The design asks for regular backups of production with no one having to remember them.
An Environment of tier production gets the BackupSchedule ``<environment>-backups``
(cron ``Settings.default_backup_schedule``, storage under ``Settings.backup_root``, key
``key`` of the Secret ``Settings.default_backup_key_secret``, default retention),
owned by the Environment so it goes with it. The annotation
``dockyard.io/default-backups: "false"`` on the Environment opts out; an existing
default schedule is then left alone (delete it by hand), and one deleted by hand comes
back unless the Environment opts out.

The same goes for the RestoreDrill ``<environment>-drill`` (cron
``Settings.default_drill_schedule``, the latest completed backup, row counts, scratch
databases kept an hour) with the opt-out annotation ``dockyard.io/default-drill: "false"``:
the design asks for tested restores, not only backups.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import ValidationError

from dockyard.core.kube import KubeError
from dockyard.core.models.common import API_VERSION
from dockyard.core.models.environment import Environment, Tier
from dockyard.core.resources import BACKUP_SCHEDULES, ENVIRONMENTS, RESTORE_DRILLS, Manifest
from dockyard.core.settings import Settings
from dockyard.operator.apply import get
from dockyard.operator.backups.schedules import ENVIRONMENT_LABEL
from dockyard.operator.builders.metadata import MANAGED_BY, MANAGED_BY_LABEL, Owner
from dockyard.operator.runs.context import RunContext

OPT_OUT_ANNOTATION: Final = "dockyard.io/default-backups"
DEFAULT_LABEL: Final = "dockyard.io/default-schedule"
DRILL_OPT_OUT_ANNOTATION: Final = "dockyard.io/default-drill"
DEFAULT_DRILL_LABEL: Final = "dockyard.io/default-drill"
KEY_ENTRY: Final = "key"  # the Secret data entry holding the key, not a key


def wants_default_schedule(env: Environment) -> bool:
    """Production, and not opted out."""
    opted_out = env.metadata.annotations.get(OPT_OUT_ANNOTATION, "").strip().lower() == "false"
    return env.spec.tier is Tier.PRODUCTION and not opted_out


def default_schedule_name(environment: str) -> str:
    return f"{environment[:245].rstrip('-.')}-backups"


def default_schedule(env: Environment, settings: Settings) -> Manifest:
    """The default BackupSchedule of ``env``."""
    owner = Owner.of(env)
    reference = {**owner.reference(), "controller": False}
    return {
        "apiVersion": API_VERSION,
        "kind": "BackupSchedule",
        "metadata": {
            "name": default_schedule_name(owner.name),
            "namespace": owner.namespace,
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                ENVIRONMENT_LABEL: owner.name,
                DEFAULT_LABEL: "true",
            },
            "ownerReferences": [reference],
        },
        "spec": {
            "environmentRef": {"name": owner.name},
            "schedule": settings.default_backup_schedule,
            "template": default_backup_target(settings),
        },
    }


def default_backup_target(settings: Settings) -> Manifest:
    """Where and with which key the operator's own Backups go: ``storage`` and
    ``encryption`` of a Backup spec (the default schedule's, an environment's final
    snapshot's)."""
    return {
        "storage": {"filesystem": {"path": str(settings.backup_root.expanduser())}},
        "encryption": {
            "keySecretRef": {"name": settings.default_backup_key_secret, "key": KEY_ENTRY}
        },
    }


async def ensure_default_schedule(context: RunContext, namespace: str, name: str) -> bool:
    """Create the environment's default schedule if it should have one; whether it did."""
    raw: Any = await get(context.kube, ENVIRONMENTS.path(namespace, name))
    if raw is None or raw.get("metadata", {}).get("deletionTimestamp"):
        return False
    try:
        env = Environment.model_validate(raw)
    except ValidationError:
        return False  # the environment's own handler reports an invalid spec
    if not wants_default_schedule(env):
        return False
    manifest = default_schedule(env, context.settings)
    try:
        await context.kube.create(BACKUP_SCHEDULES.path(namespace), manifest)
    except KubeError as exc:
        if exc.status == 409:
            return False
        raise
    return True


def wants_default_drill(env: Environment) -> bool:
    """Production, and not opted out of the default drill."""
    annotation = env.metadata.annotations.get(DRILL_OPT_OUT_ANNOTATION, "")
    return env.spec.tier is Tier.PRODUCTION and annotation.strip().lower() != "false"


def default_drill_name(environment: str) -> str:
    return f"{environment[:247].rstrip('-.')}-drill"


def default_drill(env: Environment, settings: Settings) -> Manifest:
    """The default RestoreDrill of ``env``; every other field keeps the kind's default."""
    owner = Owner.of(env)
    return {
        "apiVersion": API_VERSION,
        "kind": "RestoreDrill",
        "metadata": {
            "name": default_drill_name(owner.name),
            "namespace": owner.namespace,
            "labels": {
                MANAGED_BY_LABEL: MANAGED_BY,
                ENVIRONMENT_LABEL: owner.name,
                DEFAULT_DRILL_LABEL: "true",
            },
            "ownerReferences": [{**owner.reference(), "controller": False}],
        },
        "spec": {
            "environmentRef": {"name": owner.name},
            "schedule": settings.default_drill_schedule,
        },
    }


async def ensure_default_drill(context: RunContext, namespace: str, name: str) -> bool:
    """Create the environment's default drill if it should have one; whether it did."""
    raw: Any = await get(context.kube, ENVIRONMENTS.path(namespace, name))
    if raw is None or raw.get("metadata", {}).get("deletionTimestamp"):
        return False
    try:
        env = Environment.model_validate(raw)
    except ValidationError:
        return False  # the environment's own handler reports an invalid spec
    if not wants_default_drill(env):
        return False
    try:
        await context.kube.create(
            RESTORE_DRILLS.path(namespace), default_drill(env, context.settings)
        )
    except KubeError as exc:
        if exc.status == 409:
            return False
        raise
    return True
