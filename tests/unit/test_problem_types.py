"""Every kind of problem the API answers with is declared once (``api/errors.py``), and
docs/api.md and the OpenAPI document list exactly those: a client that switches on
``type`` can know every value it may meet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from dockyard.api import errors
from dockyard.api.app import registry
from dockyard.api.middlewares import _from_http_exception, from_kube_error
from dockyard.api.openapi import build_document
from dockyard.core.kube import KubeError

ROOT = Path(__file__).resolve().parents[2]
_ROW = re.compile(r"^\| (\d{3}|4xx) \| `([a-z0-9-]+)` \|", re.MULTILINE)


def _documented() -> dict[str, str]:
    text = (ROOT / "docs" / "api.md").read_text()
    table = text[text.index("| status | type (after `https://dockyard.io/problems/`)") :]
    table = table[: table.index("\n\n")]
    return {slug: status for status, slug in _ROW.findall(table)}


def test_docs_list_every_problem_type_with_its_status() -> None:
    expected = {
        kind.slug: "4xx" if kind.passthrough else str(kind.status)
        for kind in errors.PROBLEM_TYPES.values()
    }
    assert _documented() == expected


def test_problem_types_are_declared_only_in_the_catalogue() -> None:
    elsewhere = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "dockyard").rglob("*.py")
        if path.name != "errors.py" and re.search(r"\bProblemType\(", path.read_text())
    ]
    assert elsewhere == []
    assert len(errors.PROBLEM_TYPES) == len(
        re.findall(r"^[A-Z_]+ = ProblemType\(", (ROOT / "dockyard/api/errors.py").read_text(), re.M)
    )


def test_the_openapi_document_names_every_type() -> None:
    document = build_document(registry().operations)
    described = document["components"]["schemas"]["ProblemDetail"]["properties"]["type"]
    named = set(re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)+|\b[a-z]+\b", described["description"]))
    assert set(errors.PROBLEM_TYPES) <= named


def test_a_problem_carries_its_types_uri_status_and_title() -> None:
    problem = errors.PLAN_NOT_READY("Restore a/b has no plan yet.")
    body = problem.document(instance="/x", request_id="r1").model_dump(exclude_none=True)
    assert body["type"] == "https://dockyard.io/problems/plan-not-ready"
    assert (body["status"], body["title"]) == (409, "Plan Not Ready")
    assert body["detail"] == "Restore a/b has no plan yet."


def test_only_a_passthrough_type_takes_the_upstreams_status() -> None:
    with pytest.raises(ValueError, match="fixed status"):
        errors.CONFLICT("changed", status=400)
    problem = errors.KUBERNETES_ERROR("gone", status=410, title="Gone")
    assert (problem.status, problem.slug, problem.title) == (410, "kubernetes-error", "Gone")


def test_an_apiserver_refusal_without_a_type_of_its_own_keeps_its_status() -> None:
    refused = KubeError(410, {"reason": "Expired", "message": "too old resource version"})
    problem = from_kube_error(refused)
    assert (problem.slug, problem.status, problem.title) == ("kubernetes-error", 410, "Expired")
    assert problem.detail == "too old resource version"


def test_an_http_error_without_a_type_of_its_own_is_http_error() -> None:
    request = make_mocked_request("GET", "/api/v1/me")
    problem = _from_http_exception(web.HTTPLengthRequired(), request)
    assert (problem.slug, problem.status, problem.title) == ("http-error", 411, "Length Required")
    assert problem.slug in errors.PROBLEM_TYPES


def test_every_error_response_is_documented_as_a_problem_document() -> None:
    document = build_document(registry().operations)
    problem = {"schema": {"$ref": "#/components/schemas/ProblemDetail"}}
    checked = 0
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            for status, response in operation["responses"].items():
                if int(status) < 400:
                    continue
                checked += 1
                if (method, path, status) == ("get", "/readyz", "503"):
                    assert list(response["content"]) == ["application/json"]
                else:
                    assert response["content"] == {errors.PROBLEM_JSON: problem}, (path, status)
            if operation.get("security") != []:
                assert "503" in operation["responses"], path
    assert checked > 400
