"""The bodies every kind's routes share in shape: what a client sends to create an object,
the metadata it may set on it, and the lists it reads back.

Only the words differ from kind to kind (the kind, what its spec is, what a page holds),
so each route module declares its bodies with one call here and the OpenAPI document
gets the same fields, in the same order, for every kind.
"""

from __future__ import annotations

from typing import Any, Protocol, cast

from pydantic import BaseModel, ConfigDict, Field, create_model

from dockyard.core.models.common import CustomResource
from dockyard.core.models.references import OBJECT_NAME_PATTERN


class CreateBody(Protocol):
    """What a kind's create model holds: the new object's metadata and spec."""

    metadata: NewObjectMeta
    spec: BaseModel


def name_field(
    description: str, *, max_length: int = 253, pattern: str = OBJECT_NAME_PATTERN
) -> Any:
    """The ``metadata.name`` of a new object: a Kubernetes name, unique in its namespace."""
    return Field(min_length=1, max_length=max_length, pattern=pattern, description=description)


class NewObjectMeta(BaseModel):
    """The metadata a client may set on a new object; kinds narrow ``name`` and say why."""

    model_config = ConfigDict(extra="forbid")

    name: str = name_field("unique in the namespace")
    labels: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Kubernetes labels"
    )
    annotations: dict[str, str] = Field(
        default_factory=dict, max_length=64, description="Kubernetes annotations"
    )


def spec_model(model: type[CustomResource]) -> type[BaseModel]:
    """The model of a kind's spec, as its custom resource model declares it."""
    # Every kind's spec is a model of its own (dockyard.core.models).
    return cast(type[BaseModel], model.model_fields["spec"].annotation)


def create_body(
    model: type[CustomResource], metadata: type[NewObjectMeta], *, doc: str, spec: str
) -> type[BaseModel]:
    """``<Kind>Create``, the body of ``POST .../<plural>``: ``metadata`` and the kind's
    spec (described as ``spec``), documented as ``doc``.

    ``apiVersion`` and ``kind`` may be sent (the server knows them from the path).
    """
    kind = model.crd.kind
    return create_model(
        f"{kind}Create",
        __doc__=doc,
        __config__=ConfigDict(extra="forbid"),
        api_version=(
            str | None,
            Field(
                default=None,
                alias="apiVersion",
                description=f"optional; {model.crd.api_version}",
            ),
        ),
        kind=(str | None, Field(default=None, description=f"optional; {kind}")),
        metadata=(metadata, Field(description="name, labels and annotations")),
        spec=(spec_model(model), Field(description=spec)),
    )


def list_body(
    model: type[CustomResource], *, doc: str, items: str, paged: bool = True
) -> type[BaseModel]:
    """``<Kind>List``: ``items`` (described as ``items``), ``nextCursor`` when ``paged``,
    and the watch cache's ``resourceVersion``."""
    fields: dict[str, Any] = {"items": (list[model], Field(description=items))}  # type: ignore[valid-type]
    if paged:
        fields["next_cursor"] = (
            str | None,
            Field(
                default=None,
                alias="nextCursor",
                description="pass as ?cursor= for the next page",
            ),
        )
    fields["resource_version"] = (
        str,
        Field(alias="resourceVersion", description="the cache's resourceVersion for this list"),
    )
    return create_model(
        f"{model.crd.kind}List",
        __doc__=doc,
        __config__=ConfigDict(populate_by_name=True, serialize_by_alias=True),
        **fields,
    )


__all__ = ["CreateBody", "NewObjectMeta", "create_body", "list_body", "name_field", "spec_model"]
