"""Building blocks shared by every Dockyard custom resource model.

This module owns the conventions all kinds follow: the ``CRModel`` base (snake_case in
Python, camelCase on the wire, unknown fields rejected, inherited fields described in
the subclass's words), the Kubernetes ``Condition`` shape and the ``CustomResource``
envelope. What a kind declares about its CRD besides the schema (``CRDInfo``,
``PrinterColumn``, ``ValidationRule``) lives in ``declarations``.
"""

from __future__ import annotations

from collections.abc import Mapping
from copy import copy
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Final, Self

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from dockyard.core.models.declarations import (
    API_VERSION,
    GROUP,
    VERSION,
    CRDInfo,
    ValidationRule,
)

# Private JSON Schema keyword through which an item model tells the CRD generator that
# lists of it are maps keyed by some of its fields; the generator consumes it and turns
# it into x-kubernetes-list-type/x-kubernetes-list-map-keys on the list itself.
LIST_MAP_KEYS_KEYWORD: Final = "x-dockyard-list-map-keys"
OPERATOR_ANNOTATIONS: Final = "operator.dockyard.io"
"""The prefix of the annotations in which the operator (Kopf) keeps its bookkeeping: which
handlers ran for an object, and the configuration last handled. Only the operator writes
them; the API neither shows them nor lets clients set or remove them."""


class CRModel(BaseModel):
    """Base of every spec, status and nested part of a Dockyard custom resource.

    Python attributes are snake_case and the wire names camelCase, as Kubernetes
    expects; either is accepted on input, and dumps use the wire names. Unknown fields
    are errors rather than being dropped, so a typo in a manifest or a request body is
    reported, not ignored.
    Subclasses may set ``cel_rules`` (rules on the model's own node),
    ``list_map_keys`` (lists of this model are maps keyed by these wire names) and
    ``field_descriptions`` (inherited fields described in this subclass's words, by
    Python name: the CRD and the OpenAPI document carry them as they would a field the
    subclass declared itself; the parent's fields keep their own).

    A field is described by the docstring under it, as ``kubectl explain`` shows it; a
    docstring wrapped over several lines is one paragraph.
    """

    model_config = ConfigDict(
        extra="forbid",
        # validate_by_name + validate_by_alias is pydantic 2.11's populate_by_name.
        validate_by_name=True,
        validate_by_alias=True,
        alias_generator=to_camel,
        serialize_by_alias=True,
        use_attribute_docstrings=True,
    )

    cel_rules: ClassVar[tuple[ValidationRule, ...]] = ()
    list_map_keys: ClassVar[tuple[str, ...]] = ()
    field_descriptions: ClassVar[Mapping[str, str]] = {}

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        own = dict(cls.__dict__.get("field_descriptions", {}))
        for name, field in cls.model_fields.items():
            if name not in own and field.description and "\n" in field.description:
                own[name] = " ".join(field.description.split())
        if not own:
            return
        for name, text in own.items():
            # A copy: the parent's FieldInfo, and its description, stays the parent's.
            field = copy(cls.model_fields[name])
            field.description = text
            cls.model_fields[name] = field
        cls.model_rebuild(force=True)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler, /
    ) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        if not (cls.cel_rules or cls.list_map_keys):
            return json_schema
        # handler() gives a $ref to the model's definition; the rules belong on that
        # definition so they follow the model wherever it is used.
        definition = handler.resolve_ref_schema(json_schema)
        if cls.cel_rules:
            definition["x-kubernetes-validations"] = [rule.to_schema() for rule in cls.cel_rules]
        if cls.list_map_keys:
            definition[LIST_MAP_KEYS_KEYWORD] = list(cls.list_map_keys)
        return json_schema


class ConditionStatus(StrEnum):
    """Whether a condition holds, as Kubernetes spells it."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(CRModel):
    """One aspect of an object's current state, in the shape of Kubernetes' metav1.Condition."""

    list_map_keys = ("type",)

    type: str = Field(
        min_length=1,
        max_length=316,
        pattern=(
            r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
        ),
    )
    """Type of the condition in CamelCase, for example Ready."""
    status: ConditionStatus
    """Status of the condition: True, False or Unknown."""
    observed_generation: int | None = Field(default=None, ge=0)
    """The .metadata.generation the condition was set from; when it is older than the object's
    generation the condition is out of date."""
    last_transition_time: datetime
    """When the condition last changed from one status to another."""
    reason: str = Field(
        min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    )
    """Programmatic identifier of the last transition's cause, in CamelCase."""
    message: str = Field(max_length=32768)
    """Human-readable details about the last transition; may be empty."""


class ObjectMeta(CRModel):
    """The parts of Kubernetes object metadata that Dockyard reads.

    The API server owns this schema; other metadata fields are kept as they come so a
    parsed object can be written back without losing them.
    """

    model_config = ConfigDict(extra="allow")

    name: str | None = None
    """Name of the object in its namespace."""
    namespace: str | None = None
    """Namespace of the object."""
    uid: str | None = None
    """Unique id the API server assigned."""
    generation: int | None = None
    """Sequence number of the desired state (spec) changes."""
    resource_version: str | None = None
    """Opaque version for optimistic concurrency and watches."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Labels of the object."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of the object."""
    finalizers: list[str] = Field(default_factory=list)
    """Finalizers that hold the object's deletion."""
    creation_timestamp: datetime | None = None
    """When the API server created the object."""
    deletion_timestamp: datetime | None = None
    """When deletion was requested, if it was."""

    def controller_uid(self) -> str | None:
        """The uid of the object's controller owner, if it has one (``ownerReferences``
        is kept as it comes, not modelled)."""
        for ref in (self.model_extra or {}).get("ownerReferences") or ():
            if isinstance(ref, dict) and ref.get("controller") and ref.get("uid"):
                return str(ref["uid"])
        return None


class CustomResource(CRModel):
    """The envelope of a Dockyard object: apiVersion, kind, metadata, spec and status.

    A kind subclasses it, sets ``crd`` and declares ``spec`` and ``status`` fields with
    its own models; the class docstring becomes the CRD's top-level description.
    """

    crd: ClassVar[CRDInfo]

    api_version: str = ""
    """APIVersion defines the versioned schema of this representation of an object."""
    kind: str = ""
    """Kind is the REST resource this object represents, in CamelCase."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard Kubernetes object metadata."""

    @model_validator(mode="after")
    def _identify_kind(self) -> Self:
        # An empty apiVersion/kind means "this class's"; anything else must match it, so
        # a Backup body can never be parsed as an Environment by mistake.
        info = type(self).crd
        if not self.api_version:
            self.api_version = info.api_version
        if not self.kind:
            self.kind = info.kind
        if (self.api_version, self.kind) != (info.api_version, info.kind):
            raise ValueError(
                f"expected apiVersion {info.api_version} and kind {info.kind}, "
                f"got {self.api_version} and {self.kind}"
            )
        return self


def status_field(model: type[CRModel], description: str) -> Any:
    """A kind's ``status`` field: the ``model`` empty until the controller writes it."""
    return Field(default_factory=model, description=description)


__all__ = [
    "API_VERSION",
    "GROUP",
    "LIST_MAP_KEYS_KEYWORD",
    "VERSION",
    "CRModel",
    "Condition",
    "ConditionStatus",
    "CustomResource",
    "ObjectMeta",
    "status_field",
]
