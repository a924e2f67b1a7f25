"""API compatibility: what a new OpenAPI document breaks for clients of a released one.

The constitution keeps the API backward compatible for two major versions, so CI
compares the code's document with the last released one (see ``releases``).

The comparison reads each schema in the direction its data travels:

- a **request** must still accept everything it accepted: no removed field (the API
  rejects unknown fields, so a client still sending it would get 422), no new required
  field or parameter, no narrower type, enum, length, range or pattern, no lost null;
- a **response** must still give everything it gave: no removed field, no field that
  may now be absent, no new type (a ``null`` included) where clients expect the old one.

Adding is safe: new paths, operations, optional fields and parameters, response fields,
and enum values (clients must tolerate unknown enum values, as Kubernetes asks of its
own clients). ``$ref``s are resolved into ``components``; unions of several non-null
schemas are compared by their types only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any

Schema = Mapping[str, Any]

METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

_PATH_PARAM = re.compile(r"\{([^}/]+)\}")
# Bounds whose lowering (upper) or raising (lower) narrows what a request may carry.
_UPPER_BOUNDS = ("maxLength", "maxItems", "maxProperties", "maximum", "exclusiveMaximum")
_LOWER_BOUNDS = ("minLength", "minItems", "minProperties", "minimum", "exclusiveMinimum")


class Direction(Enum):
    """Which way the data travels, which decides what narrowing means."""

    REQUEST = "request"
    RESPONSE = "response"


def breaking_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Every change in ``new`` that breaks a client written against ``old``, one line each."""
    comparison = _Comparison(_Document(old), _Document(new))
    comparison.paths()
    return list(dict.fromkeys(comparison.breaks))


# -- the comparison ------------------------------------------------------------------------


class _Document:
    """An OpenAPI document whose local ``$ref``s can be followed."""

    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root

    def resolve(self, node: Any) -> Any:
        seen: set[str] = set()
        while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if ref in seen or not ref.startswith("#/"):
                return {}  # a cycle of bare refs, or an external ref: nothing to compare
            seen.add(ref)
            target: Any = self.root
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                target = target.get(part) if isinstance(target, Mapping) else None
            # Siblings of $ref (a description, a default) are kept; the target fills in.
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node = {**(target if isinstance(target, Mapping) else {}), **siblings}
        return node

    def paths(self) -> dict[str, tuple[str, Mapping[str, Any]]]:
        """Path items keyed by their shape, so renaming a path parameter is no removal."""
        paths = self.root.get("paths") or {}
        return {_PATH_PARAM.sub("{}", p): (p, self.resolve(item)) for p, item in paths.items()}

    def security(self, operation: Mapping[str, Any]) -> list[Any]:
        return list(operation.get("security", self.root.get("security", [])))


class _Comparison:
    def __init__(self, old: _Document, new: _Document) -> None:
        self.old = old
        self.new = new
        self.breaks: list[str] = []

    def paths(self) -> None:
        new_paths = self.new.paths()
        for shape, (path, old_item) in self.old.paths().items():
            if shape not in new_paths:
                self.breaks.append(f"removed path {path}")
                continue
            new_path, new_item = new_paths[shape]
            renames = dict(
                zip(_PATH_PARAM.findall(path), _PATH_PARAM.findall(new_path), strict=True)
            )
            for method in METHODS:
                if method not in old_item:
                    continue
                where = f"{method.upper()} {path}"
                if method not in new_item:
                    self.breaks.append(f"removed operation {where}")
                    continue
                self.operation(where, renames, old_item, new_item, method)

    def operation(
        self,
        where: str,
        renames: Mapping[str, str],
        old_item: Mapping[str, Any],
        new_item: Mapping[str, Any],
        method: str,
    ) -> None:
        old_op, new_op = self.old.resolve(old_item[method]), self.new.resolve(new_item[method])
        if _public(self.old.security(old_op)) and not _public(self.new.security(new_op)):
            self.breaks.append(f"{where}: now requires authentication")
        self.parameters(
            where,
            renames,
            self._parameters(self.old, old_item, old_op),
            self._parameters(self.new, new_item, new_op),
        )
        self.request_body(where, old_op.get("requestBody"), new_op.get("requestBody"))
        self.responses(where, old_op.get("responses") or {}, new_op.get("responses") or {})

    @staticmethod
    def _parameters(
        document: _Document, item: Mapping[str, Any], operation: Mapping[str, Any]
    ) -> dict[tuple[str, str], Mapping[str, Any]]:
        """Path-item parameters overridden by the operation's, keyed by (in, name)."""
        merged: dict[tuple[str, str], Mapping[str, Any]] = {}
        for raw in [*(item.get("parameters") or []), *(operation.get("parameters") or [])]:
            param = document.resolve(raw)
            merged[(str(param.get("in")), str(param.get("name")))] = param
        return merged

    def parameters(
        self,
        where: str,
        renames: Mapping[str, str],
        old: Mapping[tuple[str, str], Mapping[str, Any]],
        new: Mapping[tuple[str, str], Mapping[str, Any]],
    ) -> None:
        matched: set[tuple[str, str]] = set()
        for (place, name), old_param in old.items():
            key = (place, renames.get(name, name) if place == "path" else name)
            label = f"parameter {place} '{name}'"
            new_param = new.get(key)
            if new_param is None:
                self.breaks.append(f"{where}: removed {label}")
                continue
            matched.add(key)
            if new_param.get("required") and not old_param.get("required"):
                self.breaks.append(f"{where}: {label} is now required")
            self.schema(
                where, label, old_param.get("schema"), new_param.get("schema"), Direction.REQUEST
            )
        for key, new_param in new.items():
            if key not in matched and new_param.get("required"):
                self.breaks.append(f"{where}: new required parameter {key[0]} '{key[1]}'")

    def request_body(self, where: str, old_raw: Any, new_raw: Any) -> None:
        old, new = self.old.resolve(old_raw), self.new.resolve(new_raw)
        if not old and not new:
            return
        if not new:
            self.breaks.append(f"{where}: request body removed")
            return
        if not old:
            if new.get("required"):
                self.breaks.append(f"{where}: new required request body")
            return
        if new.get("required") and not old.get("required"):
            self.breaks.append(f"{where}: request body is now required")
        self.content(where, "request body", old, new, Direction.REQUEST)

    def responses(self, where: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
        for status, old_raw in old.items():
            if status not in new:
                # A documented error that no longer happens breaks nobody; a success does.
                if str(status).startswith("2"):
                    self.breaks.append(f"{where}: removed response {status}")
                continue
            old_response, new_response = self.old.resolve(old_raw), self.new.resolve(new[status])
            self.content(
                where, f"response {status}", old_response, new_response, Direction.RESPONSE
            )

    def content(
        self,
        where: str,
        context: str,
        old: Mapping[str, Any],
        new: Mapping[str, Any],
        direction: Direction,
    ) -> None:
        """Every media type the old body or response had must remain, its schema compatible."""
        verb = "accepts" if direction is Direction.REQUEST else "returns"
        new_content = new.get("content") or {}
        for media_type, old_media in (old.get("content") or {}).items():
            if media_type not in new_content:
                self.breaks.append(f"{where}: {context} no longer {verb} {media_type}")
                continue
            old_schema, new_schema = old_media.get("schema"), new_content[media_type].get("schema")
            self.schema(where, context, old_schema, new_schema, direction)

    def schema(self, where: str, context: str, old: Any, new: Any, direction: Direction) -> None:
        _SchemaComparison(self, where, context, direction).compare(old, new, "")


class _SchemaComparison:
    """One schema pair (a body, a parameter) compared field by field, cycles cut."""

    def __init__(self, parent: _Comparison, where: str, context: str, direction: Direction) -> None:
        self.parent = parent
        self.where = where
        self.context = context
        self.direction = direction
        # The refs being compared, outermost first: meeting one again is a recursive model.
        self.ancestry: list[tuple[object, object]] = []

    def report(self, path: str, what: str) -> None:
        field_part = f" field {path}" if path else ""
        self.parent.breaks.append(f"{self.where}: {self.context}{field_part}: {what}")

    def compare(self, old_raw: Any, new_raw: Any, path: str) -> None:
        key = (_identity(old_raw), _identity(new_raw))
        if key in self.ancestry:
            return  # a recursive model: its fields are being compared further out
        self.ancestry.append(key)
        try:
            self._compare(old_raw, new_raw, path)
        finally:
            self.ancestry.pop()

    def _compare(self, old_raw: Any, new_raw: Any, path: str) -> None:
        old_doc, new_doc = self.parent.old, self.parent.new
        old_resolved, new_resolved = old_doc.resolve(old_raw or {}), new_doc.resolve(new_raw or {})
        old_types, new_types = _types(old_doc, old_resolved), _types(new_doc, new_resolved)
        request = self.direction is Direction.REQUEST
        wide, narrow = (new_types, old_types) if request else (old_types, new_types)
        if not _covers(wide, narrow):
            self.report(path, _type_change(old_types, new_types, request))
        old, new = _flatten(old_doc, old_resolved), _flatten(new_doc, new_resolved)
        if request:
            self.request_constraints(old, new, path)
        self.properties(old, new, path)
        if isinstance(old.get("items"), Mapping) and isinstance(new.get("items"), Mapping):
            self.compare(old["items"], new["items"], f"{path}[]")
        old_extra, new_extra = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(old_extra, Mapping) and isinstance(new_extra, Mapping):
            self.compare(old_extra, new_extra, f"{path}.*" if path else "*")

    def request_constraints(self, old: Schema, new: Schema, path: str) -> None:
        old_enum, new_enum = _enum(old), _enum(new)
        if new_enum is not None:
            if old_enum is None:
                self.report(path, f"now limited to {_listing(new_enum)}")
            elif removed := [v for v in old_enum if v not in new_enum]:
                self.report(path, f"enum values removed: {_listing(removed)}")
        for bound in _UPPER_BOUNDS:
            before, after = _number(old.get(bound)), _number(new.get(bound))
            if after is not None and (before is None or after < before):
                self.report(path, _bound_change(bound, before, after, "lowered"))
        for bound in _LOWER_BOUNDS:
            before, after = _number(old.get(bound)), _number(new.get(bound))
            if after is not None and (before is None or after > before):
                if before is None and after == 0 and bound != "exclusiveMinimum":
                    continue  # a minimum of zero length or items narrows nothing
                self.report(path, _bound_change(bound, before, after, "raised"))
        if new.get("pattern") is not None and new.get("pattern") != old.get("pattern"):
            self.report(path, f"pattern changed to {new['pattern']!r}")
        if new.get("additionalProperties") is False and old.get("additionalProperties") not in (
            False,
            None,
        ):
            self.report(path, "no longer accepts additional properties")

    def properties(self, old: Schema, new: Schema, path: str) -> None:
        old_props = old.get("properties") or {}
        new_props = new.get("properties") or {}
        old_required, new_required = set(old.get("required") or ()), set(new.get("required") or ())
        for name, old_prop in old_props.items():
            child = f"{path}.{name}" if path else name
            if name not in new_props:
                self.report(child, "removed")
                continue
            if self.direction is Direction.REQUEST:
                if name in new_required and name not in old_required:
                    self.report(child, "now required")
            elif name in old_required and name not in new_required:
                self.report(child, "no longer always present")
            self.compare(old_prop, new_props[name], child)
        if self.direction is Direction.REQUEST:
            for name in sorted(new_required - set(old_props)):
                self.report(f"{path}.{name}" if path else name, "new required field")


# -- schema helpers ------------------------------------------------------------------------


def _identity(node: Any) -> object:
    if isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
        return node["$ref"]
    return id(node)


def _public(security: list[Any]) -> bool:
    """No requirement, or an empty one (``{}``), means anyone may call."""
    return not security or any(not requirement for requirement in security)


def _types(document: _Document, schema: Any) -> frozenset[str]:
    """The JSON types a schema admits, ``null`` included; empty means any type."""
    schema = document.resolve(schema)
    if not isinstance(schema, Mapping):
        return frozenset()
    types: set[str]
    if "type" in schema:
        declared = schema["type"]
        types = {declared} if isinstance(declared, str) else set(declared)
    elif "const" in schema:
        types = {_json_type(schema["const"])}
    elif schema.get("enum"):
        types = {_json_type(value) for value in schema["enum"]}
    elif "anyOf" in schema or "oneOf" in schema:
        branches = [_types(document, b) for b in schema.get("anyOf", schema.get("oneOf", []))]
        if any(not branch for branch in branches):
            return frozenset()
        types = set().union(*branches)
    elif "allOf" in schema:
        constrained = [t for t in (_types(document, b) for b in schema["allOf"]) if t]
        types = set.intersection(*(set(t) for t in constrained)) if constrained else set()
    else:
        return frozenset()
    if schema.get("nullable") is True:  # OpenAPI 3.0's spelling of a null type
        types.add("null")
    return frozenset(types)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _covers(wide: frozenset[str], narrow: frozenset[str]) -> bool:
    """Whether every value of ``narrow``'s types is one of ``wide``'s."""
    if not wide:
        return True
    if not narrow:
        return False
    return all(t in wide or (t == "integer" and "number" in wide) for t in narrow)


def _type_change(old: frozenset[str], new: frozenset[str], request: bool) -> str:
    if request and "null" in old and "null" not in new and old - {"null"} <= new:
        return "no longer accepts null"
    if not request and "null" in new and "null" not in old and new - {"null"} <= old:
        return "may now be null"
    return f"type changed from {_type_names(old)} to {_type_names(new)}"


def _type_names(types: frozenset[str]) -> str:
    return " | ".join(sorted(types)) if types else "any"


def _flatten(document: _Document, schema: Any) -> dict[str, Any]:
    """One object-like view of a schema: ``allOf`` merged, an optional's null dropped."""
    schema = document.resolve(schema)
    if not isinstance(schema, Mapping):
        return {}
    flat = {k: v for k, v in schema.items() if k not in ("allOf", "anyOf", "oneOf")}
    for part in schema.get("allOf") or ():
        _merge(flat, _flatten(document, part))
    branches = schema.get("anyOf") or schema.get("oneOf") or ()
    non_null = [b for b in branches if _types(document, b) != {"null"}]
    if len(non_null) == 1:
        _merge(flat, _flatten(document, non_null[0]))
    return flat


def _merge(into: dict[str, Any], part: Mapping[str, Any]) -> None:
    for key, value in part.items():
        if key == "properties":
            into["properties"] = {**(into.get("properties") or {}), **value}
        elif key == "required":
            into["required"] = sorted({*(into.get("required") or ()), *value})
        else:
            into.setdefault(key, value)


def _enum(schema: Schema) -> list[Any] | None:
    if "const" in schema:
        return [schema["const"]]
    values = schema.get("enum")
    if values is None:
        return None
    return [v for v in values if v is not None]  # null is the type's business


def _number(value: Any) -> float | None:
    # OpenAPI 3.0 spells exclusiveMaximum as a boolean; only numbers are bounds here.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _bound_change(bound: str, before: float | None, after: float, verb: str) -> str:
    if before is None:
        return f"{bound} {_plain(after)} added"
    return f"{bound} {verb} from {_plain(before)} to {_plain(after)}"


def _plain(number: float) -> str:
    return str(int(number)) if number.is_integer() else str(number)


def _listing(values: Iterable[Any]) -> str:
    return ", ".join(_quote(v) for v in values)


def _quote(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)
