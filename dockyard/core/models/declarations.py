"""What a kind declares about its CustomResourceDefinition besides the schema.

``CRDInfo`` names the kind (plural, short names, categories, scope) and its ``kubectl
get`` columns (``PrinterColumn``, with the columns several kinds share); a
``ValidationRule`` is a CEL rule the API server enforces on a node of the schema.
``dockyard.core.crds`` turns these declarations into CRD YAML; nothing here knows about
YAML or files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

GROUP: Final = "dockyard.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

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
    optional_old_self: bool = False
    """``oldSelf`` is an optional, empty on create: the rule runs on creates too."""

    def to_schema(self) -> dict[str, Any]:
        """The rule as one entry of ``x-kubernetes-validations``."""
        entry: dict[str, Any] = {"rule": self.rule, "message": self.message}
        if self.message_expression is not None:
            entry["messageExpression"] = self.message_expression
        if self.field_path is not None:
            entry["fieldPath"] = self.field_path
        if self.reason is not None:
            entry["reason"] = self.reason.value
        if self.optional_old_self:
            entry["optionalOldSelf"] = True
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

    @classmethod
    def condition(
        cls,
        name: str,
        condition_type: str,
        description: str,
        *,
        show: Literal["status", "reason"] = "status",
        priority: int = 0,
    ) -> PrinterColumn:
        """A column showing the status (or the reason) of one condition."""
        path = f'.status.conditions[?(@.type=="{condition_type}")].{show}'
        return cls(name, "string", path, description, priority=priority)

    @classmethod
    def environment(cls, description: str) -> PrinterColumn:
        """The column of the Environment a kind's ``spec.environmentRef`` names."""
        return cls("Environment", "string", ENVIRONMENT_FIELD, description)


# The Environment a Backup or RestoreDrill belongs to, as a selectable field:
# ``kubectl get ... --field-selector spec.environmentRef.name=shop``. The operator reads
# an environment's own objects this way on every reconcile.
ENVIRONMENT_FIELD: Final = ".spec.environmentRef.name"


# The columns several kinds show alike.
AGE_COLUMN: Final = PrinterColumn(
    "Age", "date", ".metadata.creationTimestamp", "Time since creation."
)
PHASE_COLUMN: Final = PrinterColumn("Phase", "string", ".status.phase", "Life-cycle phase.")


@dataclass(frozen=True, slots=True)
class ObjectNameLimit:
    """How a kind narrows its objects' names, and why."""

    max_length: int
    pattern: str
    description: str
    why: str

    @property
    def requirement(self) -> str:
        """What a name must be, and why: the message of every refusal of one."""
        return (
            f"metadata.name must be {self.description} of at most {self.max_length} "
            f"characters: {self.why}"
        )


@dataclass(frozen=True, slots=True)
class CRDInfo:
    """What a kind declares about its CustomResourceDefinition beyond the schema."""

    kind: str
    plural: str
    short_names: tuple[str, ...] = ()
    printer_columns: tuple[PrinterColumn, ...] = ()
    """The kind's own ``kubectl get`` columns; ``AGE_COLUMN`` follows them, as it does
    for Kubernetes' own kinds (``columns`` lists them all)."""
    selectable_fields: tuple[str, ...] = ()
    """JSON paths the API server can filter a LIST by (``--field-selector``)."""
    singular: str = ""
    categories: tuple[str, ...] = ("dockyard",)
    group: str = GROUP
    version: str = VERSION
    scope: Literal["Namespaced", "Cluster"] = "Namespaced"
    name_limit: ObjectNameLimit | None = None
    """A narrower form for the kind's object names than Kubernetes asks for, checked by
    the API server when an object is made (``name_rule``)."""

    def __post_init__(self) -> None:
        if not self.singular:
            # frozen dataclass: the derived default has to bypass __setattr__
            object.__setattr__(self, "singular", self.kind.lower())
        for name in (self.plural, self.singular, *self.short_names, *self.categories):
            if not _DNS_LABEL.match(name):
                raise ValueError(f"{self.kind}: {name!r} is not a lowercase DNS label")

    @property
    def columns(self) -> tuple[PrinterColumn, ...]:
        """Every printer column of the CRD, in order: the kind's own, then Age."""
        return (*self.printer_columns, AGE_COLUMN)

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

    def name_rule(self) -> ValidationRule | None:
        """The CEL rule, on the object's root, that holds a new object's name to
        ``name_limit``; names never change, so updates are not checked again (an object
        made before the rule keeps working)."""
        limit = self.name_limit
        if limit is None:
            return None
        name = "self.metadata.name"
        return ValidationRule(
            rule=(
                f"oldSelf.hasValue() || (size({name}) <= {limit.max_length} "
                f"&& {name}.matches(r'{limit.pattern}'))"
            ),
            message=limit.requirement,
            optional_old_self=True,
        )


__all__ = [
    "AGE_COLUMN",
    "API_VERSION",
    "GROUP",
    "PHASE_COLUMN",
    "VERSION",
    "CRDInfo",
    "ColumnType",
    "ObjectNameLimit",
    "PrinterColumn",
    "RuleReason",
    "ValidationRule",
]
