"""Structural schemas: what pydantic's JSON Schema of a model becomes in a CRD.

``apiextensions.k8s.io/v1`` accepts only a *structural* OpenAPI v3 subset. This module
owns the translation: references inlined, ``Optional[X]`` as ``X``, JSON Schema 2020-12
spellings as OpenAPI v3.0's, CEL rules and list types as ``x-kubernetes-*`` extensions,
defaults checked against the schema they sit in. Whatever a structural schema cannot
express is an error raised with the offending field's path, rather than a CRD the API
server rejects or, worse, one that silently validates less than the models do.
``dockyard.core.crds`` puts the result into CRDs and files.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from pydantic import BaseModel

from dockyard.core.models.common import LIST_MAP_KEYS_KEYWORD

Schema = dict[str, Any]

# Keywords apiextensions accepts and that mean the same there as in pydantic's output,
# in the order they are written (description first, so the YAML reads like the docs).
_KEYWORD_ORDER: Final = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "items",
    "properties",
    "additionalProperties",
    "required",
)
# Annotations for humans and JSON Schema plumbing, which apiextensions rejects or ignores.
_DROPPED: Final = frozenset(
    {"title", "$schema", "$id", "$comment", "examples", "readOnly", "writeOnly", "deprecated"}
)
_RULE_ORDER: Final = (
    "rule",
    "message",
    "messageExpression",
    "fieldPath",
    "reason",
    "optionalOldSelf",
)
_NULL: Final = {"type": "null"}


class StructuralSchemaError(ValueError):
    """A model whose JSON Schema cannot become a valid structural CRD schema."""


class MissingDescriptionError(StructuralSchemaError):
    """A property without a description, which ``kubectl explain`` would show blank."""


def structural_schema(model: type[BaseModel]) -> Schema:
    """The Kubernetes structural OpenAPI v3 schema of ``model``.

    References are inlined, ``Optional[X]`` becomes ``X`` (nulls are omitted on the
    wire), JSON Schema 2020-12 spellings become their OpenAPI v3.0 ones, CEL rules and
    list types become ``x-kubernetes-*`` extensions, and defaults are checked against
    the schema they sit in. Raises ``StructuralSchemaError`` naming the field path when
    the model uses something a structural schema cannot express, and
    ``MissingDescriptionError`` when a property has no description.
    """
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    return _Converter(model.__name__, definitions).convert(raw, path="", ancestors=())


class _Converter:
    """One model's JSON Schema, converted node by node."""

    def __init__(self, model_name: str, definitions: Mapping[str, Schema]) -> None:
        self._model_name = model_name
        self._definitions = definitions

    def convert(self, node: Mapping[str, Any], path: str, ancestors: tuple[str, ...]) -> Schema:
        node, ancestors = self._flatten(node, path, ancestors)
        out: Schema = {}
        extensions: Schema = {}
        for key, value in node.items():
            if key in _DROPPED or key == LIST_MAP_KEYS_KEYWORD:
                continue
            if key.startswith("x-kubernetes-"):
                extensions[key] = value
            elif key == "const":
                out["enum"] = [value]
            elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
                # 2020-12 puts the bound in exclusiveMinimum; OpenAPI v3.0 wants a flag.
                bound = "minimum" if key == "exclusiveMinimum" else "maximum"
                if bound in node:
                    raise self._error(path, f"both {bound} and {key} are set")
                out[bound] = value
                out[key] = True
            elif key == "uniqueItems":
                # apiextensions forbids uniqueItems; a set-typed list is its equivalent.
                if value:
                    extensions.setdefault("x-kubernetes-list-type", "set")
            elif key == "format" and value == "duration":
                raise self._error(
                    path,
                    "timedelta fields are ISO 8601 in pydantic but Go durations to the API "
                    "server; use a string with a pattern instead",
                )
            elif key == "default":
                if value is not None:  # a null default only restates that the field is optional
                    out[key] = value
            elif key == "properties":
                out[key] = self._properties(value, path, ancestors)
            elif key == "items":
                out[key] = self.convert(value, f"{path}[]", ancestors)
            elif key == "additionalProperties":
                if value is True:
                    extensions["x-kubernetes-preserve-unknown-fields"] = True
                elif isinstance(value, Mapping):
                    out[key] = self.convert(value, f"{path}{{}}", ancestors)
                # False is what extra="forbid" says; the API server prunes unknown fields.
            elif key in _KEYWORD_ORDER:
                out[key] = value
            else:
                raise self._error(path, f"JSON Schema keyword {key!r} has no structural form")
        if "items" in out and "x-kubernetes-list-type" not in extensions:
            extensions.update(self._list_type(node["items"], out["items"], path, ancestors))
        if "x-kubernetes-validations" in extensions:
            extensions["x-kubernetes-validations"] = [
                {k: rule[k] for k in _RULE_ORDER if k in rule}
                for rule in extensions["x-kubernetes-validations"]
            ]
        self._infer_type(out, extensions, path)
        schema = _ordered(out) | dict(sorted(extensions.items()))
        if "default" in schema:
            problems = _instance_problems(schema["default"], schema, "default")
            if problems:
                raise self._error(path, "invalid default: " + "; ".join(problems))
        return schema

    def _flatten(
        self, node: Mapping[str, Any], path: str, ancestors: tuple[str, ...]
    ) -> tuple[Schema, tuple[str, ...]]:
        """Resolve ``$ref``, single ``allOf`` and ``Optional`` ``anyOf`` into one plain node."""
        flat = dict(node)
        while True:
            if "$ref" in flat:
                name = str(flat.pop("$ref")).removeprefix("#/$defs/")
                if name in ancestors:
                    raise self._error(path, f"{name} contains itself; CRD schemas cannot recurse")
                ancestors = (*ancestors, name)
                flat = _merge(self._definitions[name], flat)
            elif "allOf" in flat:
                parts = flat.pop("allOf")
                if len(parts) != 1:
                    raise self._error(path, "allOf with several schemas has no structural form")
                flat = _merge(parts[0], flat)
            elif "anyOf" in flat:
                branches = [branch for branch in flat.pop("anyOf") if branch != _NULL]
                if len(branches) == 1:
                    flat = _merge(branches[0], flat)
                elif sorted(branch.get("type") for branch in branches) == ["integer", "string"]:
                    if any(set(branch) != {"type"} for branch in branches):
                        raise self._error(path, "int-or-string branches cannot carry constraints")
                    flat["x-kubernetes-int-or-string"] = True
                else:
                    raise self._error(
                        path, "unions other than Optional[X] and int | str have no structural form"
                    )
            elif "oneOf" in flat:
                raise self._error(path, "oneOf (tagged unions) has no structural form")
            else:
                return flat, ancestors

    def _properties(
        self, properties: Mapping[str, Any], path: str, ancestors: tuple[str, ...]
    ) -> Schema:
        converted: Schema = {}
        for name, child in properties.items():
            child_path = f"{path}.{name}" if path else name
            schema = self.convert(child, child_path, ancestors)
            description = schema.get("description")
            if not isinstance(description, str) or not description.strip():
                raise MissingDescriptionError(
                    f"{self._model_name}: {child_path} has no description; give it "
                    "a docstring under it so that `kubectl explain` can teach it"
                )
            converted[name] = schema
        return converted

    def _list_type(
        self, raw_items: Mapping[str, Any], items: Schema, path: str, ancestors: tuple[str, ...]
    ) -> Schema:
        """The list-type extensions an item model asks for through ``list_map_keys``."""
        keys = self._flatten(raw_items, path, ancestors)[0].get(LIST_MAP_KEYS_KEYWORD)
        if not keys:
            return {}
        properties = items.get("properties", {})
        required = set(items.get("required", ()))
        for key in keys:
            # The API server requires map keys to be present in every item.
            if key not in properties or (key not in required and "default" not in properties[key]):
                raise self._error(path, f"list map key {key!r} must be a required item field")
        return {"x-kubernetes-list-map-keys": list(keys), "x-kubernetes-list-type": "map"}

    def _infer_type(self, out: Schema, extensions: Schema, path: str) -> None:
        if "type" in out or extensions.get("x-kubernetes-int-or-string"):
            return
        if "enum" in out:
            kinds = {type(value) for value in out["enum"]}
            names = {str: "string", bool: "boolean", int: "integer", float: "number"}
            if len(kinds) != 1 or next(iter(kinds)) not in names:
                raise self._error(path, "enum values must all be strings, numbers or booleans")
            out["type"] = names[next(iter(kinds))]
        elif "properties" in out:
            out["type"] = "object"
        else:
            # An untyped node (Any) is free-form JSON; that is what this extension says.
            extensions["x-kubernetes-preserve-unknown-fields"] = True

    def _error(self, path: str, reason: str) -> StructuralSchemaError:
        return StructuralSchemaError(f"{self._model_name}: {path or '<root>'}: {reason}")


def _merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> Schema:
    """``base`` with ``override``'s keys on top; CEL rules from both are kept."""
    merged = {**base, **override}
    rules = [
        *base.get("x-kubernetes-validations", ()),
        *override.get("x-kubernetes-validations", ()),
    ]
    if rules:
        merged["x-kubernetes-validations"] = rules
    return merged


def _ordered(schema: Schema) -> Schema:
    return {key: schema[key] for key in _KEYWORD_ORDER if key in schema}


_PYTHON_TYPES: Final[Mapping[str, tuple[type, ...]]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def _instance_problems(value: Any, schema: Schema, path: str) -> list[str]:
    """What is wrong with ``value`` as an instance of the structural ``schema``.

    Covers what a default can get wrong in practice (type, enum, bounds, unknown or
    missing fields); the API server runs the full validation when the CRD is applied.
    """
    expected = schema.get("type")
    if expected is None:
        return []
    if isinstance(value, bool) and expected != "boolean":
        return [f"{path} is a boolean, not {expected}"]
    if not isinstance(value, _PYTHON_TYPES[expected]):
        return [f"{path} is not of type {expected}"]
    problems: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path} is not one of {schema['enum']}")
    if "minimum" in schema and (
        value <= schema["minimum"] if schema.get("exclusiveMinimum") else value < schema["minimum"]
    ):
        problems.append(f"{path} is below the minimum {schema['minimum']}")
    if "maximum" in schema and (
        value >= schema["maximum"] if schema.get("exclusiveMaximum") else value > schema["maximum"]
    ):
        problems.append(f"{path} is above the maximum {schema['maximum']}")
    if isinstance(value, str | list | dict):
        low, high = {str: ("minLength", "maxLength"), list: ("minItems", "maxItems")}.get(
            type(value), ("minProperties", "maxProperties")
        )
        if len(value) < schema.get(low, 0) or len(value) > schema.get(high, len(value)):
            problems.append(f"{path} has a length outside {low}/{high}")
    if isinstance(value, str) and "pattern" in schema and not re.search(schema["pattern"], value):
        problems.append(f"{path} does not match {schema['pattern']}")
    if isinstance(value, list) and "items" in schema:
        for index, item in enumerate(value):
            problems += _instance_problems(item, schema["items"], f"{path}[{index}]")
    if isinstance(value, dict):
        problems += _object_problems(value, schema, path)
    return problems


def _object_problems(value: dict[str, Any], schema: Schema, path: str) -> list[str]:
    problems: list[str] = []
    properties: Schema = schema.get("properties", {})
    values_schema = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            problems += _instance_problems(item, properties[key], f"{path}.{key}")
        elif isinstance(values_schema, dict):
            problems += _instance_problems(item, values_schema, f"{path}.{key}")
        elif not schema.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}.{key} is not a field (the API server would prune it)")
    for key in schema.get("required", ()):
        if key not in value and "default" not in properties.get(key, {}):
            problems.append(f"{path}.{key} is required")
    return problems


__all__ = ["MissingDescriptionError", "Schema", "StructuralSchemaError", "structural_schema"]
