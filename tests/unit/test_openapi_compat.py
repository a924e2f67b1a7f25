"""API compatibility: every deliberate breaking change is caught, safe changes are not,
and ``dockyard openapi --check`` judges the code against the last released document."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockyard import cli
from dockyard.api import app, openapi
from dockyard.contract import compat, releases

ROOT = Path(__file__).resolve().parents[2]

Document = dict[str, Any]
Change = Callable[[Document], object]


def released() -> Document:
    """A small released document with refs, a path parameter, a public operation."""
    ref = "#/components/schemas/"
    return {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1.0.0"},
        "security": [{"bearer": []}],
        "paths": {
            "/healthz": {"get": {"security": [], "responses": {"200": {"description": "OK"}}}},
            "/api/v1/widgets": {
                "get": {
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                        }
                    ],
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {"application/json": {"schema": {"$ref": ref + "List"}}},
                        }
                    },
                },
                "post": {
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": ref + "Create"}}},
                    },
                    "responses": {
                        "201": {
                            "description": "Created",
                            "content": {"application/json": {"schema": {"$ref": ref + "Widget"}}},
                        },
                        "404": {"description": "No such namespace"},
                    },
                },
            },
            "/api/v1/widgets/{name}": {
                "parameters": [
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "get": {
                    "responses": {
                        "200": {
                            "description": "OK",
                            "content": {"application/json": {"schema": {"$ref": ref + "Widget"}}},
                        }
                    }
                },
                "delete": {"responses": {"204": {"description": "Deleted"}}},
            },
        },
        "components": {
            "schemas": {
                "Size": {"type": "string", "enum": ["small", "large"]},
                "Widget": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string", "maxLength": 63},
                        "size": {"$ref": ref + "Size"},
                        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                        "parts": {"type": "array", "items": {"$ref": ref + "Part"}},
                    },
                    "required": ["name", "size"],
                },
                "Part": {
                    "type": "object",
                    "properties": {
                        "label": {"type": "string"},
                        "parts": {"type": "array", "items": {"$ref": ref + "Part"}},
                    },
                    "required": ["label"],
                },
                "List": {
                    "type": "object",
                    "properties": {"items": {"type": "array", "items": {"$ref": ref + "Widget"}}},
                    "required": ["items"],
                },
                "Create": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "name": {"type": "string", "minLength": 1, "maxLength": 63},
                        "size": {"$ref": ref + "Size"},
                        "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                        "parts": {"type": "array", "items": {"$ref": ref + "Part"}},
                    },
                    "required": ["name"],
                },
            }
        },
    }


def _set(target: dict[str, Any], key: str, value: Any) -> None:
    target[key] = value


def _require(doc: Document, field: str) -> None:
    create = doc["components"]["schemas"]["Create"]
    create["properties"][field] = {"type": "string"}
    create["required"].append(field)


def _widen_bounds(doc: Document) -> None:
    doc["components"]["schemas"]["Create"]["properties"]["name"]["maxLength"] = 253
    doc["paths"]["/api/v1/widgets"]["get"]["parameters"][0]["schema"]["minimum"] = 0


def _rename_path_parameter(doc: Document) -> None:
    item = doc["paths"].pop("/api/v1/widgets/{name}")
    item["parameters"][0]["name"] = "widget"
    doc["paths"]["/api/v1/widgets/{widget}"] = item


def _rename_media(body: Document) -> None:
    """Serve a body as another media type only: application/json is gone."""
    body["content"] = {"application/yaml": body["content"].pop("application/json")}


BREAKING: list[tuple[str, Change, str]] = [
    (
        "removed path",
        lambda d: d["paths"].pop("/api/v1/widgets/{name}"),
        "removed path /api/v1/widgets/{name}",
    ),
    (
        "removed operation",
        lambda d: d["paths"]["/api/v1/widgets/{name}"].pop("delete"),
        "removed operation DELETE /api/v1/widgets/{name}",
    ),
    (
        "removed response field",
        lambda d: d["components"]["schemas"]["Widget"]["properties"].pop("note"),
        "GET /api/v1/widgets: response 200 field items[].note: removed",
    ),
    (
        "removed response field deep in a recursive model",
        lambda d: d["components"]["schemas"]["Part"]["properties"].pop("label"),
        "GET /api/v1/widgets/{name}: response 200 field parts[].label: removed",
    ),
    (
        "removed request field",
        lambda d: d["components"]["schemas"]["Create"]["properties"].pop("note"),
        "POST /api/v1/widgets: request body field note: removed",
    ),
    (
        "type changed",
        lambda d: _set(
            d["components"]["schemas"]["Widget"]["properties"]["name"], "type", "integer"
        ),
        "GET /api/v1/widgets/{name}: response 200 field name: type changed from string to integer",
    ),
    (
        "enum value removed",
        lambda d: _set(d["components"]["schemas"]["Size"], "enum", ["small"]),
        "POST /api/v1/widgets: request body field size: enum values removed: 'large'",
    ),
    (
        "new required request field",
        lambda d: _require(d, "colour"),
        "POST /api/v1/widgets: request body field colour: new required field",
    ),
    (
        "optional request field made required",
        lambda d: d["components"]["schemas"]["Create"]["required"].append("size"),
        "POST /api/v1/widgets: request body field size: now required",
    ),
    (
        "maxLength lowered",
        lambda d: _set(d["components"]["schemas"]["Create"]["properties"]["name"], "maxLength", 40),
        "POST /api/v1/widgets: request body field name: maxLength lowered from 63 to 40",
    ),
    (
        "maximum lowered",
        lambda d: _set(
            d["paths"]["/api/v1/widgets"]["get"]["parameters"][0]["schema"], "maximum", 100
        ),
        "GET /api/v1/widgets: parameter query 'limit': maximum lowered from 500 to 100",
    ),
    (
        "minLength raised",
        lambda d: _set(d["components"]["schemas"]["Create"]["properties"]["name"], "minLength", 3),
        "POST /api/v1/widgets: request body field name: minLength raised from 1 to 3",
    ),
    (
        "minimum raised",
        lambda d: _set(
            d["paths"]["/api/v1/widgets"]["get"]["parameters"][0]["schema"], "minimum", 10
        ),
        "GET /api/v1/widgets: parameter query 'limit': minimum raised from 1 to 10",
    ),
    (
        "nullable removed from a request field",
        lambda d: _set(
            d["components"]["schemas"]["Create"]["properties"], "note", {"type": "string"}
        ),
        "POST /api/v1/widgets: request body field note: no longer accepts null",
    ),
    (
        "request media type removed",
        lambda d: _rename_media(d["paths"]["/api/v1/widgets"]["post"]["requestBody"]),
        "POST /api/v1/widgets: request body no longer accepts application/json",
    ),
    (
        "response media type removed",
        lambda d: _rename_media(d["paths"]["/api/v1/widgets"]["get"]["responses"]["200"]),
        "GET /api/v1/widgets: response 200 no longer returns application/json",
    ),
    (
        "removed parameter",
        lambda d: d["paths"]["/api/v1/widgets"]["get"].pop("parameters"),
        "GET /api/v1/widgets: removed parameter query 'limit'",
    ),
    (
        "parameter made required",
        lambda d: _set(d["paths"]["/api/v1/widgets"]["get"]["parameters"][0], "required", True),
        "GET /api/v1/widgets: parameter query 'limit' is now required",
    ),
    (
        "new required parameter",
        lambda d: d["paths"]["/api/v1/widgets"]["get"]["parameters"].append(
            {"name": "X-Tenant", "in": "header", "required": True, "schema": {"type": "string"}}
        ),
        "GET /api/v1/widgets: new required parameter header 'X-Tenant'",
    ),
    (
        "response field no longer required",
        lambda d: d["components"]["schemas"]["Widget"]["required"].remove("size"),
        "GET /api/v1/widgets/{name}: response 200 field size: no longer always present",
    ),
    (
        "response field may now be null",
        lambda d: _set(
            d["components"]["schemas"]["Widget"]["properties"],
            "name",
            {"anyOf": [{"type": "string"}, {"type": "null"}]},
        ),
        "GET /api/v1/widgets/{name}: response 200 field name: may now be null",
    ),
    (
        "removed success response",
        lambda d: _set(
            d["paths"]["/api/v1/widgets/{name}"]["delete"],
            "responses",
            {"200": {"description": "OK"}},
        ),
        "DELETE /api/v1/widgets/{name}: removed response 204",
    ),
    (
        "public operation now needs a token",
        lambda d: d["paths"]["/healthz"]["get"].pop("security"),
        "GET /healthz: now requires authentication",
    ),
    (
        "request pattern added",
        lambda d: _set(
            d["components"]["schemas"]["Create"]["properties"]["name"], "pattern", "^[a-z]+$"
        ),
        "POST /api/v1/widgets: request body field name: pattern changed to '^[a-z]+$'",
    ),
]

SAFE: list[tuple[str, Change]] = [
    ("nothing changed", lambda d: None),
    (
        "added optional request field",
        lambda d: d["components"]["schemas"]["Create"]["properties"].update(
            colour={"type": "string"}
        ),
    ),
    (
        "added response field",
        lambda d: d["components"]["schemas"]["Widget"]["properties"].update(
            colour={"type": "string"}
        ),
    ),
    (
        "added path",
        lambda d: d["paths"].update(
            {"/api/v1/gadgets": {"get": {"responses": {"200": {"description": "OK"}}}}}
        ),
    ),
    ("widened enum", lambda d: d["components"]["schemas"]["Size"]["enum"].append("huge")),
    (
        "added optional parameter",
        lambda d: d["paths"]["/api/v1/widgets"]["get"]["parameters"].append(
            {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"}}
        ),
    ),
    (
        "maxLength raised and minimum lowered",
        _widen_bounds,
    ),
    (
        "request field made nullable",
        lambda d: _set(
            d["components"]["schemas"]["Create"]["properties"],
            "name",
            {"anyOf": [{"type": "string", "maxLength": 63, "minLength": 1}, {"type": "null"}]},
        ),
    ),
    (
        "path parameter renamed",
        _rename_path_parameter,
    ),
    (
        "error response dropped",
        lambda d: d["paths"]["/api/v1/widgets"]["post"]["responses"].pop("404"),
    ),
    (
        "request integer widened to number",
        lambda d: _set(
            d["paths"]["/api/v1/widgets"]["get"]["parameters"][0]["schema"], "type", "number"
        ),
    ),
    ("description added", lambda d: d["info"].update(description="more words")),
]


@pytest.mark.parametrize(
    ("change", "expected"),
    [pytest.param(change, expected, id=name) for name, change, expected in BREAKING],
)
def test_a_breaking_change_is_detected_and_named(change: Change, expected: str) -> None:
    old = released()
    new = copy.deepcopy(old)
    change(new)
    assert expected in compat.breaking_changes(old, new)


@pytest.mark.parametrize("change", [pytest.param(c, id=name) for name, c in SAFE])
def test_a_safe_change_is_not_reported(change: Change) -> None:
    old = released()
    new = copy.deepcopy(old)
    change(new)
    assert compat.breaking_changes(old, new) == []


def test_a_component_used_twice_is_reported_where_each_operation_uses_it() -> None:
    old = released()
    new = copy.deepcopy(old)
    new["components"]["schemas"]["Widget"]["properties"].pop("size")
    assert compat.breaking_changes(old, new) == [
        "GET /api/v1/widgets: response 200 field items[].size: removed",
        "POST /api/v1/widgets: response 201 field size: removed",
        "GET /api/v1/widgets/{name}: response 200 field size: removed",
    ]


# -- released documents --------------------------------------------------------------------


def test_the_last_release_is_the_newest_by_semantic_version(tmp_path: Path) -> None:
    for name in ("openapi-1.9.0.yaml", "openapi-1.10.0.yaml", "openapi-1.2.3.yaml", "notes.md"):
        (tmp_path / name).write_text("openapi: 3.1.0\n")
    release = releases.last_release(tmp_path)
    assert release is not None
    assert release.path.name == "openapi-1.10.0.yaml"
    assert releases.last_release(tmp_path / "missing") is None


def test_release_never_overwrites_nor_goes_back(tmp_path: Path) -> None:
    text = yaml.safe_dump(released())
    assert releases.release(text, tmp_path) == tmp_path / "openapi-1.0.0.yaml"
    with pytest.raises(releases.ReleaseError, match="exists"):
        releases.release(text, tmp_path)
    (tmp_path / "openapi-2.0.0.yaml").write_text(text)
    with pytest.raises(releases.ReleaseError, match=r"older than openapi-2\.0\.0\.yaml"):
        releases.release(text.replace("version: 1.0.0", "version: 1.5.0"), tmp_path)


# -- the command ---------------------------------------------------------------------------


def _code_document() -> Document:
    return dict(yaml.safe_load(openapi.render_yaml(app.registry().operations)))


def _release_dir(tmp_path: Path, document: Document) -> Path:
    directory = tmp_path / "released"
    directory.mkdir()
    version = document["info"]["version"]
    (directory / f"openapi-{version}.yaml").write_text(yaml.safe_dump(document))
    return directory


def _with_a_path_the_code_lacks(document: Document) -> Document:
    """A release that served one more path than the code does: the code removed it."""
    document = copy.deepcopy(document)
    document["paths"]["/api/v1/widgets"] = {"get": {"responses": {"200": {"description": "OK"}}}}
    return document


def _check(spec: Path, released_dir: Path) -> int:
    return cli.main(["openapi", "--check", "--out", str(spec), "--released", str(released_dir)])


def test_check_passes_against_the_committed_release(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "openapi.yaml"
    assert cli.main(["openapi", "--out", str(spec)]) == 0
    assert _check(spec, ROOT / "specs" / "released") == 0
    assert "no breaking change against" in capsys.readouterr().out


def test_check_fails_on_drift(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "openapi.yaml"
    assert cli.main(["openapi", "--out", str(spec)]) == 0
    spec.write_text(spec.read_text().replace("getReadiness", "getReady"))
    assert _check(spec, _release_dir(tmp_path, _code_document())) == 1
    assert "differs from the code" in capsys.readouterr().err


def test_check_fails_on_a_breaking_change_with_one_line_each_and_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "openapi.yaml"
    assert cli.main(["openapi", "--out", str(spec)]) == 0
    old = _with_a_path_the_code_lacks(_code_document())
    old["components"]["schemas"]["Liveness"]["properties"]["uptime"] = {"type": "number"}
    capsys.readouterr()
    assert _check(spec, _release_dir(tmp_path, old)) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == [
        "breaking: removed path /api/v1/widgets",
        "breaking: GET /healthz: response 200 field uptime: removed",
    ]
    assert err[2].startswith("hint: ")
    assert len(err) == 3


def test_check_passes_after_a_major_bump_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old = _with_a_path_the_code_lacks(_code_document())
    released_dir = _release_dir(tmp_path, old)  # released as 1.0.0
    monkeypatch.setattr(openapi, "API_VERSION", "2.0.0")
    spec = tmp_path / "openapi.yaml"
    assert cli.main(["openapi", "--out", str(spec)]) == 0
    capsys.readouterr()
    assert _check(spec, released_dir) == 0
    err = capsys.readouterr().err
    assert "warning: removed path /api/v1/widgets" in err
    assert "the previous major (v1," in err
    assert "must still be served for two majors" in err


def test_release_copies_the_spec_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "openapi.yaml"
    released_dir = tmp_path / "released"
    assert cli.main(["openapi", "--out", str(spec)]) == 0
    argv = ["openapi", "--release", "--out", str(spec), "--released", str(released_dir)]
    assert cli.main(argv) == 0
    version = _code_document()["info"]["version"]
    assert (released_dir / f"openapi-{version}.yaml").read_text() == spec.read_text()
    capsys.readouterr()
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "exists" in err
    assert err.count("\n") == 1
