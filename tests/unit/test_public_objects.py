"""What a client sees of an object, and which If-Match values can ever match."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from dockyard.api import errors
from dockyard.api.routes.objects import if_match, public


def test_the_operators_bookkeeping_is_not_shown_but_users_annotations_are() -> None:
    obj = {
        "metadata": {
            "name": "shop",
            "managedFields": [{"manager": "kubectl"}],
            "annotations": {
                "operator.dockyard.io/last-handled-configuration": "{...}",
                "operator.dockyard.io/reconcile": '{"started": "..."}',
                "dockyard.io/requested-by": "alice",
                "team.example.com/owner": "shop",
            },
        },
        "spec": {"image": "a:1"},
    }
    shown = public(obj)
    assert shown["metadata"] == {
        "name": "shop",
        "annotations": {"dockyard.io/requested-by": "alice", "team.example.com/owner": "shop"},
    }
    assert shown["spec"] == obj["spec"]
    assert "operator.dockyard.io/reconcile" in obj["metadata"]["annotations"]  # not mutated


@pytest.mark.parametrize("header", ['"0"', '"00"', '"abc"', '"-1"', 'W/"0"'])
def test_an_if_match_no_resource_version_can_have_is_a_412(header: str) -> None:
    request = make_mocked_request("PATCH", "/", headers={"If-Match": header})
    with pytest.raises(errors.Problem) as refused:
        if_match(request)
    assert refused.value.status == 412


@pytest.mark.parametrize(("header", "version"), [('"42"', "42"), ('W/"7", "8"', "7"), ("*", None)])
def test_issued_etags_name_their_resource_version(header: str, version: str | None) -> None:
    assert if_match(make_mocked_request("PATCH", "/", headers={"If-Match": header})) == version


@pytest.mark.parametrize(
    "header",
    ['"²"', '"١٢"', f'"{"9" * 5000}"', '"18446744073709551616"', f'"{"1" * 21}"'],
)
def test_an_if_match_of_no_ascii_uint64_is_a_412_not_a_crash(header: str) -> None:
    """``str.isdigit`` takes "²" and "١٢", and ``int`` refuses past 4,300 digits: each
    must be the 412 of any other ETag this API never issued, not a 500."""
    request = make_mocked_request("PATCH", "/", headers={"If-Match": header})
    with pytest.raises(errors.Problem) as refused:
        if_match(request)
    assert refused.value.status == 412


def test_the_largest_resource_version_is_an_etag() -> None:
    header = '"18446744073709551615"'
    assert if_match(make_mocked_request("PATCH", "/", headers={"If-Match": header})) == header[1:-1]
