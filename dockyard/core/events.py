"""Dockyard's event vocabulary: what happened to which object, with a stable id.

One event is the body a webhook receives and a server-sent event's data, in the
Standard Webhooks form ``{"type", "timestamp", "data"}`` plus its ``id``. Each type has
a data model of its own family, and a JSON Schema in ``specs/events/<type>.json``
generated from it (``dockyard events --check`` fails when they drift).

An event's id is derived from the object's uid, its generation, the type and, for a
transition that can happen again at the same generation (a drill's next run), what
tells the occurrences apart. A repeated reconcile, another operator replica or the
API announcing the same approval all derive the same id, and the event log keeps the
first (``dockyard.core.event_log``).
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny
from pydantic.alias_generators import to_camel

SCHEMA_BASE: Final = "https://dockyard.io/schemas/events/"
ID_PREFIX: Final = "evt_"


class EventType(StrEnum):
    """Every event Dockyard emits."""

    ENVIRONMENT_READY = "environment.ready"
    ENVIRONMENT_DEGRADED = "environment.degraded"
    ENVIRONMENT_DELETED = "environment.deleted"
    BACKUP_COMPLETED = "backup.completed"
    BACKUP_FAILED = "backup.failed"
    RESTORE_AWAITING_APPROVAL = "restore.awaiting_approval"
    RESTORE_APPROVED = "restore.approved"
    RESTORE_REJECTED = "restore.rejected"
    RESTORE_COMPLETED = "restore.completed"
    RESTORE_FAILED = "restore.failed"
    DRILL_PASSED = "drill.passed"
    DRILL_FAILED = "drill.failed"
    SCALING_PAUSED = "scaling.paused"
    SCALING_RESUMED = "scaling.resumed"

    @property
    def resource(self) -> str:
        """The plural resource of the object the event is about (for authorization)."""
        return RESOURCES[self.split(".", 1)[0]]


RESOURCES: Final = {
    "environment": "environments",
    "backup": "backups",
    "restore": "restores",
    "drill": "restoredrills",
    "scaling": "scalingpolicies",
}


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class ObjectRef(_Model):
    """The custom resource an event is about."""

    kind: str = Field(description="Its kind, such as Backup.")
    namespace: str = Field(description="Its namespace.")
    name: str = Field(description="Its name.")
    uid: str = Field(description="Its uid: tells a re-created object of the same name apart.")
    generation: int = Field(ge=0, description="Its metadata.generation at the event.")


class EventData(_Model):
    """What every event's data holds."""

    object: ObjectRef
    message: str | None = Field(default=None, description="Human-readable detail.")
    actor: str | None = Field(
        default=None, description="Who caused it, when a person did (an approval)."
    )


class EnvironmentEventData(EventData):
    phase: str | None = Field(default=None, description="The environment's status.phase.")


class RunEventData(EventData):
    """A Backup's or Restore's: the environment it is about and why it ended so."""

    environment: str | None = Field(default=None, description="The environment's name.")
    phase: str | None = Field(default=None, description="The run's status.phase.")
    reason: str | None = Field(default=None, description="The reason of its condition.")
    size_bytes: int | None = Field(default=None, ge=0, description="A backup's artifact size.")


class DrillEventData(EventData):
    environment: str | None = Field(default=None, description="The environment drilled.")
    backup: str | None = Field(default=None, description="The Backup the run restored.")
    started_at: datetime = Field(description="When the run started (tells runs apart).")
    restore_seconds: float | None = Field(default=None, ge=0, description="Measured RTO.")
    backup_age_seconds: float | None = Field(default=None, ge=0, description="Measured RPO.")
    failed_checks: int = Field(default=0, ge=0, description="How many checks failed.")


class ScalingEventData(EventData):
    environment: str | None = Field(default=None, description="The environment scaled.")
    reason: str | None = Field(default=None, description="Why it is paused or resumed.")


DATA_MODELS: Final[dict[str, type[EventData]]] = {
    "environment": EnvironmentEventData,
    "backup": RunEventData,
    "restore": RunEventData,
    "drill": DrillEventData,
    "scaling": ScalingEventData,
}


def data_model(event_type: EventType) -> type[EventData]:
    return DATA_MODELS[event_type.split(".", 1)[0]]


class Event(_Model):
    """One event, as delivered."""

    id: str = Field(pattern=r"^evt_[0-9a-f]{32}$", description="Stable across redeliveries.")
    type: EventType
    timestamp: datetime = Field(description="When Dockyard recorded it (UTC).")
    data: SerializeAsAny[EventData]

    @property
    def namespace(self) -> str:
        return self.data.object.namespace

    def body(self) -> dict[str, Any]:
        """The JSON body a receiver gets."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def encoded(self) -> str:
        return json.dumps(self.body(), separators=(",", ":"), sort_keys=True)


def event_id(ref: ObjectRef, event_type: EventType, occurrence: str = "") -> str:
    """The stable id of ``event_type`` for ``ref`` at its generation (and ``occurrence``)."""
    key = f"{ref.uid}/{ref.generation}/{event_type.value}/{occurrence}"
    return ID_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:32]


def make(event_type: EventType, data: EventData, *, occurrence: str = "") -> Event:
    """An event of ``event_type`` now, with its stable id."""
    expected = data_model(event_type)
    if not isinstance(data, expected):
        raise TypeError(f"{event_type} carries {expected.__name__}, not {type(data).__name__}")
    return Event(
        id=event_id(data.object, event_type, occurrence),
        type=event_type,
        timestamp=datetime.now(UTC),
        data=data,
    )


# -- JSON Schemas ------------------------------------------------------------------------


def schema(event_type: EventType) -> dict[str, Any]:
    """The JSON Schema (2020-12) of one event type's body."""
    data = data_model(event_type).model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs = data.pop("$defs", {})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_BASE}{event_type.value}.json",
        "title": event_type.value,
        "description": f"The body of a {event_type.value} event (Standard Webhooks form).",
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "type", "timestamp", "data"],
        "properties": {
            "id": {"type": "string", "pattern": r"^evt_[0-9a-f]{32}$"},
            "type": {"const": event_type.value},
            "timestamp": {"type": "string", "format": "date-time"},
            "data": data,
        },
        "$defs": defs,
    }


def render(event_type: EventType) -> str:
    return json.dumps(schema(event_type), indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type in EventType:
        path = directory / f"{event_type.value}.json"
        path.write_text(render(event_type))
        written.append(path)
    return written


def check_schemas(directory: Path) -> list[str]:
    """What differs between ``directory`` and the vocabulary: one line per file."""
    drift = []
    expected = {f"{t.value}.json": render(t) for t in EventType}
    present = {p.name for p in directory.glob("*.json")} if directory.is_dir() else set()
    for name, text in sorted(expected.items()):
        path = directory / name
        if name not in present:
            drift.append(f"{path} is missing")
        elif path.read_text() != text:
            drift.append(f"{path} differs from the code")
    drift += [f"{directory / name} is no event type" for name in sorted(present - set(expected))]
    return drift
