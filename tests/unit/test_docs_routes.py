"""Every route the docs name, as ``METHOD /path``, is one the API serves.

The route tables in docs/*.md are written by hand, for the context they give (which fields
a patch may change, what a 202 means). This test holds each ``GET /api/v1/...`` they
mention to the operation registry, so a renamed or removed route cannot linger in them.
The full list, with each operation's permission, is generated: docs/api-operations.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dockyard.api import app
from dockyard.api.routes import docs
from dockyard.api.transport import PROBE_PATHS

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

METHOD = r"(?:GET|POST|PUT|PATCH|DELETE)"
# One or more methods (`GET`, `POST ...), then what they are applied to.
MENTION = re.compile(rf"((?:\b{METHOD}\b`?,?\s*`?)+)(\S+)")


def mentions(text: str) -> list[tuple[str, str]]:
    """``(method, path)`` for each route named in ``text``, its query and ``[?...]`` cut."""
    found = []
    for methods, target in MENTION.findall(text):
        # This API's routes (or an abbreviation), not the apiserver's (/apis/...).
        if not target.startswith(("/api/", "...", *PROBE_PATHS)):
            continue
        path = re.split(r"[`\[?|)]", target, maxsplit=1)[0]
        found += [(method, path) for method in re.findall(METHOD, methods)]
    return found


def served(method: str, path: str) -> bool:
    routes = [(op.method.upper(), op.path) for op in app.registry().operations]
    # Swagger UI: plain aiohttp routes, not operations of the API.
    routes += [("GET", docs.PAGE_PATH), ("GET", docs.ASSETS_PATH + "/{name}")]
    for route_method, route in routes:
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(route))
        if route_method == method and re.fullmatch(pattern, path):
            return True
    return False


def test_the_parser_reads_table_cells_and_prose() -> None:
    cell = "| `GET`, `PATCH`, `DELETE /api/v1/backupstores/{name}` | get |"
    assert mentions(cell) == [
        ("GET", "/api/v1/backupstores/{name}"),
        ("PATCH", "/api/v1/backupstores/{name}"),
        ("DELETE", "/api/v1/backupstores/{name}"),
    ]
    assert mentions("follow `GET /api/v1/events[?namespace=ns]` (SSE)") == [
        ("GET", "/api/v1/events")
    ]
    assert mentions("`GET /api/v1/me?namespace=NS`") == [("GET", "/api/v1/me")]
    assert mentions("curl -X POST https://example/api/v1/backupstores") == []
    assert mentions("`POST /apis/authentication.k8s.io/v1/tokenreviews`") == []


def test_served_matches_parameters_by_segment() -> None:
    assert served("GET", "/api/v1/namespaces/{ns}/environments/{name}")
    assert served("GET", "/api/v1/namespaces/shop/environments")
    assert not served("PUT", "/api/v1/namespaces/shop/environments")
    assert not served("GET", "/api/v1/namespaces/shop/environments/web/logs")


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_route_a_doc_names_is_served(doc: Path) -> None:
    named = mentions(doc.read_text())
    abbreviated = [f"{method} {path}" for method, path in named if path.startswith("...")]
    assert not abbreviated, f"{doc.name}: spell the whole path: {abbreviated}"
    unknown = [f"{method} {path}" for method, path in named if not served(method, path)]
    assert not unknown, f"{doc.name} names routes the API does not serve: {unknown}"


def test_the_docs_name_routes_at_all() -> None:
    """A parser that found nothing would pass every doc: the API guide names dozens."""
    assert len(mentions((ROOT / "docs" / "api.md").read_text())) >= 20
