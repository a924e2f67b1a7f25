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

from collections.abc import Callable
from typing import Final

from dockyard.core.models.common import API_VERSION
from dockyard.core.models.environment import Environment, Tier
from dockyard.core.resources import Manifest
from dockyard.core.settings import Settings
from dockyard.operator.apply import create
from dockyard.operator.backups.schedules import ENVIRONMENT_LABEL
from dockyard.operator.builders.metadata import MANAGED_BY, MANAGED_BY_LABEL, Owner
from dockyard.operator.runs.context import RunContext
from dockyard.operator.store import InvalidObject, KindStore

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
    return await _ensure(context, namespace, name, wants_default_schedule, default_schedule)


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
    return await _ensure(context, namespace, name, wants_default_drill, default_drill)


async def _ensure(
    context: RunContext,
    namespace: str,
    name: str,
    wanted: Callable[[Environment], bool],
    build: Callable[[Environment, Settings], Manifest],
) -> bool:
    """Create what ``build`` makes for the environment when it is ``wanted``; whether
    this call created it (not when it exists already)."""
    environments = KindStore(context.kube, Environment)
    try:
        loaded = await environments.load(namespace, name)
    except InvalidObject:
        return False  # the environment's own handler reports an invalid spec
    if loaded is None or not wanted(loaded.resource):
        return False
    return await create(context.kube, build(loaded.resource, context.settings))
