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
from dockyard.core.names import OBJECT_NAME_MAX, fitted, label_value
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
    return fitted(environment, OBJECT_NAME_MAX, suffix="-backups")


def for_environment(
    env: Environment, kind: str, name: str, marker: str, *, owned: bool
) -> Manifest:
    """A Dockyard object the operator makes for ``env``: labelled with the environment and
    with ``marker``, and (when ``owned``) going with it, though not controlled by it."""
    owner = Owner.of(env)
    metadata: Manifest = {
        "name": name,
        "namespace": owner.namespace,
        "labels": {
            MANAGED_BY_LABEL: MANAGED_BY,
            ENVIRONMENT_LABEL: label_value(owner.name),
            marker: "true",
        },
    }
    if owned:
        metadata["ownerReferences"] = [{**owner.reference(), "controller": False}]
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": metadata,
        "spec": {"environmentRef": {"name": owner.name}},
    }


def default_schedule(env: Environment, settings: Settings) -> Manifest:
    """The default BackupSchedule of ``env``."""
    name = default_schedule_name(env.metadata.name or "")
    manifest = for_environment(env, "BackupSchedule", name, DEFAULT_LABEL, owned=True)
    manifest["spec"]["schedule"] = settings.default_backup_schedule
    manifest["spec"]["template"] = default_backup_target(settings)
    return manifest


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


def wants_default_drill(env: Environment) -> bool:
    """Production, and not opted out of the default drill."""
    annotation = env.metadata.annotations.get(DRILL_OPT_OUT_ANNOTATION, "")
    return env.spec.tier is Tier.PRODUCTION and annotation.strip().lower() != "false"


def default_drill_name(environment: str) -> str:
    return fitted(environment, OBJECT_NAME_MAX, suffix="-drill")


def default_drill(env: Environment, settings: Settings) -> Manifest:
    """The default RestoreDrill of ``env``; every other field keeps the kind's default."""
    name = default_drill_name(env.metadata.name or "")
    manifest = for_environment(env, "RestoreDrill", name, DEFAULT_DRILL_LABEL, owned=True)
    manifest["spec"]["schedule"] = settings.default_drill_schedule
    return manifest


# What a production Environment gets by default: when it wants one, and how it is made.
_DEFAULTS: Final[
    tuple[tuple[Callable[[Environment], bool], Callable[[Environment, Settings], Manifest]], ...]
] = (
    (wants_default_schedule, default_schedule),
    (wants_default_drill, default_drill),
)


async def ensure_defaults(context: RunContext, namespace: str, name: str) -> list[tuple[str, str]]:
    """Create the environment's default BackupSchedule and RestoreDrill where it should
    have them; the kind and name of each this call created (not those that existed)."""
    environments = KindStore(context.kube, Environment)
    try:
        loaded = await environments.load(namespace, name)
    except InvalidObject:
        return []  # the environment's own handler reports an invalid spec
    if loaded is None:
        return []
    created = []
    for wanted, build in _DEFAULTS:
        if not wanted(loaded.resource):
            continue
        manifest = build(loaded.resource, context.settings)
        if await create(context.kube, manifest):
            created.append((str(manifest["kind"]), str(manifest["metadata"]["name"])))
    return created
