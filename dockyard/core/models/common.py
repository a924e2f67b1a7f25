"""Building blocks shared by every Dockyard custom resource model.

This module owns the conventions all kinds follow: the ``CRModel`` base (snake_case in
Python, camelCase on the wire, unknown fields rejected), the Kubernetes ``Condition``
shape, the ``CustomResource`` envelope, and the declarations a kind makes about its
CustomResourceDefinition (``CRDInfo``, ``PrinterColumn``) and about the CEL rules the
API server enforces (``ValidationRule``). ``dockyard.core.crds`` turns these
declarations into CRD YAML; nothing here knows about YAML or files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

GROUP: Final = "dockyard.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

# Private JSON Schema keyword through which an item model tells the CRD generator that
# lists of it are maps keyed by some of its fields; the generator consumes it and turns
# it into x-kubernetes-list-type/x-kubernetes-list-map-keys on the list itself.
LIST_MAP_KEYS_KEYWORD: Final = "x-dockyard-list-map-keys"

_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


class RuleReason(StrEnum):
    """The machine-readable reason the API server reports when a CEL rule fails."""

    INVALID = "FieldValueInvalid"
    FORBIDDEN = "FieldValueForbidden"
    REQUIRED = "FieldValueRequired"
    DUPLICATE = "FieldValueDuplicate"


@dataclass(frozen=True, slots=True)
class ValidationRule:
    """A CEL rule the API server evaluates (``x-kubernetes-validations``).

    Attach rules to a whole model with the ``cel_rules`` class attribute of ``CRModel``,
    or to a single field with ``Annotated[T, ValidationRule(...)]``. ``self`` is the
    value of the node the rule sits on; ``oldSelf`` makes it a transition rule, which
    the API server only evaluates on updates.
    """

    rule: str
    message: str
    message_expression: str | None = None
    field_path: str | None = None
    reason: RuleReason | None = None

    def to_schema(self) -> dict[str, str]:
        """The rule as one entry of ``x-kubernetes-validations``."""
        entry = {"rule": self.rule, "message": self.message}
        if self.message_expression is not None:
            entry["messageExpression"] = self.message_expression
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        if self.reason is not None:
            entry["reason"] = self.reason.value
        return entry

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(core_schema)
        rules = json_schema.setdefault("x-kubernetes-validations", [])
        rules.append(self.to_schema())
        return json_schema


ColumnType = Literal["integer", "number", "string", "boolean", "date"]


@dataclass(frozen=True, slots=True)
class PrinterColumn:
    """One column of ``kubectl get`` output (``additionalPrinterColumns``)."""

    name: str
    type: ColumnType
    json_path: str
    description: str
    priority: int = 0
    format: str | None = None

    def to_crd(self) -> dict[str, str | int]:
        """The column as the CRD spells it."""
        column: dict[str, str | int] = {
            "name": self.name,
            "type": self.type,
            "jsonPath": self.json_path,
            "description": self.description,
            "priority": self.priority,
        }
        if self.format is not None:
            column["format"] = self.format
        return column


@dataclass(frozen=True, slots=True)
class CRDInfo:
    """What a kind declares about its CustomResourceDefinition beyond the schema."""

    kind: str
    plural: str
    short_names: tuple[str, ...] = ()
    printer_columns: tuple[PrinterColumn, ...] = ()
    selectable_fields: tuple[str, ...] = ()
    """JSON paths the API server can filter a LIST by (``--field-selector``)."""
    singular: str = ""
    categories: tuple[str, ...] = ("dockyard",)
    group: str = GROUP
    version: str = VERSION
    scope: Literal["Namespaced", "Cluster"] = "Namespaced"

    def __post_init__(self) -> None:
        if not self.singular:
            # frozen dataclass: the derived default has to bypass __setattr__
            object.__setattr__(self, "singular", self.kind.lower())
        for name in (self.plural, self.singular, *self.short_names, *self.categories):
            if not _DNS_LABEL.match(name):
                raise ValueError(f"{self.kind}: {name!r} is not a lowercase DNS label")

    @property
    def name(self) -> str:
        """The CRD's object name, ``<plural>.<group>``."""
        return f"{self.plural}.{self.group}"

    @property
    def api_version(self) -> str:
        """The ``apiVersion`` of the kind's objects."""
        return f"{self.group}/{self.version}"

    @property
    def list_kind(self) -> str:
        """The kind of the list the API server returns for collections."""
        return f"{self.kind}List"


class CRModel(BaseModel):
    """Base of every spec, status and nested part of a Dockyard custom resource.

    Python attributes are snake_case and the wire names camelCase, as Kubernetes
    expects; either is accepted on input, and dumps use the wire names. Unknown fields
    are errors rather than being dropped, so a typo in a manifest or a request body is
    reported, not ignored.
    Subclasses may set ``cel_rules`` (rules on the model's own node) and
    ``list_map_keys`` (lists of this model are maps keyed by these wire names).
    """

    model_config = ConfigDict(
        extra="forbid",
        # validate_by_name + validate_by_alias is pydantic 2.11's populate_by_name.
        validate_by_name=True,
        validate_by_alias=True,
        alias_generator=to_camel,
        serialize_by_alias=True,
    )

    cel_rules: ClassVar[tuple[ValidationRule, ...]] = ()
    list_map_keys: ClassVar[tuple[str, ...]] = ()

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
        description="Type of the condition in CamelCase, for example Ready.",
    )
    status: ConditionStatus = Field(description="Status of the condition: True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description=(
            "The .metadata.generation the condition was set from; when it is older than "
            "the object's generation the condition is out of date."
        ),
    )
    last_transition_time: datetime = Field(
        description="When the condition last changed from one status to another."
    )
    reason: str = Field(
        min_length=1,
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="Programmatic identifier of the last transition's cause, in CamelCase.",
    )
    message: str = Field(
        max_length=32768,
        description="Human-readable details about the last transition; may be empty.",
    )


class ObjectMeta(CRModel):
    """The parts of Kubernetes object metadata that Dockyard reads.

    The API server owns this schema; other metadata fields are kept as they come so a
    parsed object can be written back without losing them.
    """

    model_config = ConfigDict(extra="allow")

    name: str | None = Field(default=None, description="Name of the object in its namespace.")
    namespace: str | None = Field(default=None, description="Namespace of the object.")
    uid: str | None = Field(default=None, description="Unique id the API server assigned.")
    generation: int | None = Field(
        default=None, description="Sequence number of the desired state (spec) changes."
    )
    resource_version: str | None = Field(
        default=None, description="Opaque version for optimistic concurrency and watches."
    )
    labels: dict[str, str] = Field(default_factory=dict, description="Labels of the object.")
    annotations: dict[str, str] = Field(
        default_factory=dict, description="Annotations of the object."
    )
    finalizers: list[str] = Field(
        default_factory=list, description="Finalizers that hold the object's deletion."
    )
    creation_timestamp: datetime | None = Field(
        default=None, description="When the API server created the object."
    )
    deletion_timestamp: datetime | None = Field(
        default=None, description="When deletion was requested, if it was."
    )


class CustomResource(CRModel):
    """The envelope of a Dockyard object: apiVersion, kind, metadata, spec and status.

    A kind subclasses it, sets ``crd`` and declares ``spec`` and ``status`` fields with
    its own models; the class docstring becomes the CRD's top-level description.
    """

    crd: ClassVar[CRDInfo]

    api_version: str = Field(
        default="",
        description=(
            "APIVersion defines the versioned schema of this representation of an object."
        ),
    )
    kind: str = Field(
        default="",
        description="Kind is the REST resource this object represents, in CamelCase.",
    )
    metadata: ObjectMeta = Field(
        default_factory=ObjectMeta, description="Standard Kubernetes object metadata."
    )

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


__all__ = [
    "API_VERSION",
    "GROUP",
    "LIST_MAP_KEYS_KEYWORD",
    "VERSION",
    "CRDInfo",
    "CRModel",
    "ColumnType",
    "Condition",
    "ConditionStatus",
    "CustomResource",
    "ObjectMeta",
    "PrinterColumn",
    "RuleReason",
    "ValidationRule",
]
