"""What the list routes share: their query string, their label filter and their pages.

Lists read from a watch cache, filter with predicates over the cached objects, and
answer ``items`` and the cache's ``resourceVersion``; paged lists add ``nextCursor``
(``dockyard.api.cursors``), null on the last page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from dockyard.api import errors
from dockyard.api.routes.objects import public
from dockyard.core import selectors

Object = dict[str, Any]
Predicate = Callable[[Object], bool]
Query = TypeVar("Query", bound=BaseModel)

# What the query models let through, said in the OpenAPI document too (query_parameters):
# a cursor is unpadded URL-safe base64 (dockyard.api.cursors), a label selector printable
# ASCII. Both keep the longest valid query under the request line's limit.
CURSOR_PATTERN = "^[A-Za-z0-9_-]*$"
LABEL_SELECTOR_PATTERN = "^[ -~]*$"


def page_size(default: int, maximum: int) -> Any:
    """A list's ``?limit=``: how many items a page holds, ``default`` when absent."""
    return Field(default=default, ge=1, le=maximum, description="page size")


def page_cursor(max_length: int) -> Any:
    """A paged list's ``?cursor=``: the previous page's ``nextCursor``, absent for the
    first page. Any token ``dockyard.api.cursors`` did not hand out is refused."""
    return Field(
        default=None,
        max_length=max_length,
        pattern=CURSOR_PATTERN,
        description="the nextCursor of the previous page; omit for the first",
    )


# ?labelSelector= of every list of custom resources.
LabelSelector = Annotated[
    str | None,
    Field(
        alias="labelSelector",
        max_length=1024,
        pattern=LABEL_SELECTOR_PATTERN,
        description="a Kubernetes label selector",
    ),
]


def parse_query(request: web.Request, model: type[Query]) -> Query:
    """The query string validated by ``model``; 422 with ``query.<name>`` field paths."""
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        raise errors.from_validation_error(exc, prefix="query") from None


def query_parameters(model: type[BaseModel]) -> tuple[dict[str, Any], ...]:
    """The OpenAPI query parameters of a query model's fields (all optional), by alias."""
    schema = model.model_json_schema(by_alias=True)
    definitions = schema.get("$defs", {})
    parameters = []
    for name, prop in schema["properties"].items():
        # "X | None" is anyOf [X, null]; a query parameter is either present or absent.
        branches = [b for b in prop.get("anyOf", [prop]) if b.get("type") != "null"]
        branch = branches[0]
        if "$ref" in branch:  # an enum: inlined, the parameter has no components of its own
            branch = definitions[branch["$ref"].rsplit("/", 1)[-1]]
        param_schema = {k: v for k, v in branch.items() if k not in ("title", "description")}
        if "default" in prop and prop["default"] is not None:
            param_schema["default"] = prop["default"]
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": False,
                "description": prop.get("description", ""),
                "schema": param_schema,
            }
        )
    return tuple(parameters)


def label_filter(selector: str) -> Predicate:
    """Whether an object's labels match ``selector``; 422 when it is no label selector."""
    try:
        requirements = selectors.parse(selector)
    except selectors.SelectorError as exc:
        raise errors.validation_failed(
            [errors.FieldError(field="query.labelSelector", message=str(exc))]
        ) from None
    return lambda o: selectors.matches(requirements, o["metadata"].get("labels") or {})


def page(items: Sequence[Object], next_cursor: str | None, resource_version: int) -> web.Response:
    """One page of a paged list, its objects as clients see them."""
    return web.json_response(
        {
            "items": [public(o) for o in items],
            "nextCursor": next_cursor,
            "resourceVersion": str(resource_version),
        }
    )


def query_parameter(
    name: str, schema: dict[str, Any], description: str | None = None
) -> dict[str, Any]:
    """An optional query parameter as the OpenAPI document declares it."""
    parameter: dict[str, Any] = {"name": name, "in": "query", "required": False}
    if description is not None:
        parameter["description"] = description
    parameter["schema"] = schema
    return parameter
