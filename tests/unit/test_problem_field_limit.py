"""A problem lists at most ``MAX_FIELD_ERRORS`` invalid fields, then how many more there
were: a body of thousands of unknown keys is answered briefly, not with megabytes built
on the event loop (a security review's finding)."""

from __future__ import annotations

import asyncio
import json
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request
from pydantic import BaseModel, ConfigDict, ValidationError

from dockyard.api import errors, keys
from dockyard.api.routes.objects import read_merge_patch
from dockyard.core.settings import Settings


class Widget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str


def problem_body(problem: errors.Problem) -> bytes:
    document = problem.document(instance="/widgets", request_id="r")
    return json.dumps(document.model_dump(mode="json", exclude_none=True)).encode()


def validation_error(unknown_keys: int) -> ValidationError:
    with pytest.raises(ValidationError) as failed:
        Widget.model_validate({"name": "w", **{f"colour{i}": i for i in range(unknown_keys)}})
    return failed.value


def test_a_problem_from_thousands_of_validation_errors_lists_fifty_and_counts_the_rest() -> None:
    problem = errors.from_validation_error(validation_error(5000), prefix="spec")
    assert problem.errors is not None
    *listed, more = problem.errors
    assert len(listed) == 50
    assert listed[0].field == "spec.colour0"
    assert more.field == "(more)"
    assert "4950 more" in more.message


def test_the_problem_from_thousands_of_validation_errors_is_a_few_kilobytes() -> None:
    assert len(problem_body(errors.from_validation_error(validation_error(20_000)))) < 8_000


def test_a_problem_with_a_few_invalid_fields_lists_them_all() -> None:
    problem = errors.from_validation_error(validation_error(3))
    assert problem.errors is not None
    assert [e.field for e in problem.errors] == ["colour0", "colour1", "colour2"]


def test_exactly_fifty_invalid_fields_are_listed_with_no_count() -> None:
    problem = errors.validation_failed(
        [errors.FieldError(field=f"f{i}", message="bad") for i in range(50)]
    )
    assert problem.errors is not None
    assert [e.field for e in problem.errors] == [f"f{i}" for i in range(50)]


async def test_a_patch_of_a_hundred_thousand_unknown_keys_is_refused_briefly() -> None:
    app = web.Application()
    app[keys.SETTINGS] = Settings.model_validate({})
    raw = json.dumps({f"k{i}": 0 for i in range(100_000)}).encode()
    payload = StreamReader(mock.Mock(), limit=1 << 24, loop=asyncio.get_running_loop())
    payload.feed_data(raw)
    payload.feed_eof()
    request = make_mocked_request(
        "PATCH",
        "/",
        headers={"Content-Type": "application/merge-patch+json"},
        app=app,
        payload=payload,
        client_max_size=len(raw),
    )
    with pytest.raises(errors.Problem) as refused:
        await read_merge_patch(request)
    assert refused.value.status == 422
    assert refused.value.errors is not None
    *listed, more = refused.value.errors
    assert [e.field for e in listed] == [f"k{i}" for i in range(50)]
    assert (more.field, "99950 more" in more.message) == ("(more)", True)
    assert len(problem_body(refused.value)) < 8_000
