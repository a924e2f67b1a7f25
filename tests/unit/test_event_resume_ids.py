"""Which ``Last-Event-ID`` (or ``?lastEventId=``) a stream resumes after: an event id is
a log seq in ASCII digits; anything else is the 422 of a malformed id, never a 500."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from aiohttp.test_utils import make_mocked_request

from dockyard.api import errors
from dockyard.api.routes.events import _resume_point


@pytest.mark.parametrize("value", ["²", "١٢", "12ab", "", "9" * 19, "9" * 5000])
def test_a_malformed_last_event_id_header_is_a_422(value: str) -> None:
    request = make_mocked_request("GET", "/api/v1/events", headers={"Last-Event-ID": value})
    with pytest.raises(errors.Problem) as refused:
        _resume_point(request)
    assert refused.value.status == 422


@pytest.mark.parametrize("value", ["²", "١٢"])
def test_a_malformed_last_event_id_query_is_a_422(value: str) -> None:
    request = make_mocked_request("GET", f"/api/v1/events?lastEventId={quote(value)}")
    with pytest.raises(errors.Problem) as refused:
        _resume_point(request)
    assert refused.value.status == 422


def test_an_event_id_is_resumed_after() -> None:
    request = make_mocked_request("GET", "/api/v1/events", headers={"Last-Event-ID": "4711"})
    assert _resume_point(request) == 4711
