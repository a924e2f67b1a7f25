"""What the generated OpenAPI document promises a client, beyond the models: links from
a create to what can follow, the statuses every operation may answer, and the bodies
of merge patches (what schemathesis checks against the live API)."""

from __future__ import annotations

from typing import Any

import pytest

from dockyard.api.app import registry
from dockyard.api.openapi import build_document


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document(registry().operations)


def _operations(document: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        op["operationId"]: (path, op)
        for path, methods in document["paths"].items()
        for op in methods.values()
    }


def test_a_created_restore_links_to_its_plan_approval_and_the_rest(
    document: dict[str, Any],
) -> None:
    _, create = _operations(document)["createRestore"]
    links = create["responses"]["201"]["links"]
    assert sorted(links) == [
        "approveRestore", "deleteRestore", "getRestore", "getRestorePlan", "patchRestore",
        "rejectRestore",
    ]  # fmt: skip
    assert links["getRestorePlan"]["parameters"] == {
        "namespace": "$request.path.namespace",
        "name": "$response.body#/metadata/name",
    }


def test_every_link_names_an_operation_with_those_parameters(document: dict[str, Any]) -> None:
    operations = _operations(document)
    linked = 0
    for _, op in operations.values():
        for link in op["responses"].get("201", {}).get("links", {}).values():
            path, _ = operations[link["operationId"]]
            assert {f"{{{name}}}" for name in link["parameters"]} <= set(path.split("/"))
            linked += 1
    assert linked >= 8 * 3  # every kind: get, patch, delete at least


def test_every_operation_but_the_probes_documents_429(document: dict[str, Any]) -> None:
    for operation_id, (path, op) in _operations(document).items():
        if path in ("/healthz", "/readyz"):
            assert "429" not in op["responses"], operation_id
        else:
            assert "429" in op["responses"], operation_id


def test_a_query_string_documents_414_and_fits_the_request_line(
    document: dict[str, Any],
) -> None:
    _, listing = _operations(document)["listNamespacedBackups"]
    assert "414" in listing["responses"]
    schemas = {p["name"]: p["schema"] for p in listing["parameters"] if p["in"] == "query"}
    assert schemas["cursor"]["pattern"] == "^[A-Za-z0-9_-]*$"
    assert schemas["labelSelector"]["pattern"] == "^[ -~]*$"
    # Percent-encoded, the longest valid query stays under aiohttp's 8190 bytes.
    longest = sum(3 * s.get("maxLength", 20) for s in schemas.values() if "maxLength" in s)
    assert longest < 8190 - 200


def test_a_patch_documents_its_merge_patch_body(document: dict[str, Any]) -> None:
    _, patch = _operations(document)["patchEnvironment"]
    body = patch["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"application/merge-patch+json", "application/json"}
    schema = body["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"metadata", "spec"}
    assert schema["additionalProperties"] is False
    assert {"413", "415"} <= set(patch["responses"])


def test_the_audit_source_filter_is_an_inline_enum(document: dict[str, Any]) -> None:
    _, listing = _operations(document)["listAuditEvents"]
    source = next(p for p in listing["parameters"] if p["name"] == "source")
    assert source["schema"]["enum"] == ["rest", "kubectl", "operator"]
