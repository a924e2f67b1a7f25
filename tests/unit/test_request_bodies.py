"""What ``bodies.read_json`` makes of a body's bytes: UTF-8 JSON only (RFC 8259 8.1).

``json.loads`` would also take UTF-16 and UTF-32, whose bytes the depth check misreads:
a quote byte inside a wider character hides the brackets after it, so a deep body got
past the check and later made a 500 (hashing it for an Idempotency-Key recursed)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

from dockyard.api import bodies, errors, keys
from dockyard.api.bodies import read_json
from dockyard.core import db
from dockyard.core.settings import Settings

LEVELS = 600  # far past MAX_DEPTH, inside what json.loads itself parses


def hidden_depth(levels: int) -> str:
    """Nested lists between two strings of ``Ģ`` (U+0122): in UTF-16 and UTF-32 its first
    byte is a quote, which a depth check reading bytes takes for the end of a string."""
    return '["\u0122", ' + "[" * levels + "]" * levels + ', "\u0122"]'


def post(raw: bytes) -> web.Request:
    app = web.Application()
    app[keys.SETTINGS] = Settings.model_validate({})
    payload = StreamReader(mock.Mock(), limit=1 << 24, loop=asyncio.get_running_loop())
    payload.feed_data(raw)
    payload.feed_eof()
    return make_mocked_request(
        "POST", "/", headers={"Content-Type": "application/json"}, app=app, payload=payload
    )


async def refusal(raw: bytes) -> dict[str, Any]:
    with pytest.raises(errors.Problem) as refused:
        await read_json(post(raw))
    return refused.value.document(instance="/", request_id=None).model_dump(exclude_none=True)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le"])
async def test_a_deep_body_in_utf16_or_utf32_is_refused_as_not_utf8(encoding: str) -> None:
    problem = await refusal(hidden_depth(LEVELS).encode(encoding))
    assert problem["status"] == 422
    [error] = problem["errors"]
    assert error["field"] == "(body)"
    assert "UTF-8" in error["message"]


async def test_a_utf8_body_with_a_byte_order_mark_is_refused() -> None:
    problem = await refusal('{"name": "w"}'.encode("utf-8-sig"))
    [error] = problem["errors"]
    assert (error["field"], problem["status"]) == ("(body)", 422)
    assert "byte order mark" in error["message"]


async def test_a_utf8_body_parses_with_brackets_and_quotes_inside_its_strings() -> None:
    body = {"name": '\u0122 [[[ "{{ ]', "spec": {"env": [{"name": "A", "value": "\u00e9"}]}}
    raw = '{"name": "\u0122 [[[ \\"{{ ]", "spec": {"env": [{"name": "A", "value": "\u00e9"}]}}'
    assert await read_json(post(raw.encode())) == body


async def test_a_deep_utf8_body_is_still_too_deep() -> None:
    problem = await refusal(hidden_depth(LEVELS).encode())
    assert (problem["status"], problem["type"]) == (400, errors.BODY_TOO_DEEP.uri)


_PARSE_A_MEGABYTE = """
import json
from dockyard.api import errors
from dockyard.api.bodies import parse
try:
    parse(('"' + '\\\\"' * ((1 << 20) // 2 - 1)).encode())
except errors.Problem as problem:
    print(json.dumps(problem.document(instance="/", request_id=None).model_dump(exclude_none=True)))
"""


def test_a_megabyte_of_escaped_quotes_is_refused_as_not_json_without_a_stall() -> None:
    """One quote, then ``\\"`` up to 1 MiB: an unterminated string. The depth check once
    stripped strings with a regular expression that started again at each escaped quote,
    quadratic here: minutes of one core with the event loop (and the GIL) held. In a
    process of its own, so that a parse that does not end fails the test, not hangs it."""
    try:
        done = subprocess.run(  # this interpreter, a fixed script
            [sys.executable, "-c", _PARSE_A_MEGABYTE],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail("the body was still being parsed after 60 s")
    problem = json.loads(done.stdout)
    [error] = problem["errors"]
    assert (problem["status"], error["field"]) == (422, "(body)")
    assert "not valid JSON" in error["message"]


@pytest.mark.parametrize(
    ("body", "deep"),
    [
        ("[" * 32 + "]" * 32, False),
        ("[" * 33 + "]" * 33, True),
        ('{"a": ' * 32 + "1" + "}" * 32, False),
        ('{"a": ' * 33 + "1" + "}" * 33, True),
        ('["[[[[", {"b": "]]]]"}]', False),
    ],
)
async def test_depth_counts_arrays_and_objects_not_brackets_inside_strings(
    body: str, deep: bool
) -> None:
    if deep:
        problem = await refusal(body.encode())
        assert (problem["status"], problem["type"]) == (400, errors.BODY_TOO_DEEP.uri)
    else:
        assert await read_json(post(body.encode())) is not None


def test_a_nul_is_found_where_it_is_and_only_there() -> None:
    assert bodies.nul_at({"a": ["x", {"b": "y\x00"}]}) == "a[1].b"
    assert bodies.nul_at({"a\x00": 1}) == "a\\u0000"
    assert bodies.nul_at("\x00") == "(body)"
    assert bodies.nul_at({"a": ["x", {"b": "y\\u0000"}]}) is None  # a backslash, then text


def test_a_body_with_a_nul_is_refused_unless_the_route_takes_it() -> None:
    raw = b'{"metadata": {"annotations": {"note": "a\\u0000b"}}}'
    with pytest.raises(errors.Problem) as refused:
        bodies.parse(raw)
    assert refused.value.status == 422
    assert [e.field for e in refused.value.errors or ()] == ["metadata.annotations.note"]
    assert bodies.parse(raw, nul_allowed=True) == {"metadata": {"annotations": {"note": "a\x00b"}}}


def test_json_for_jsonb_holds_no_nul_and_is_otherwise_json_dumps() -> None:
    value = {"k\x00": ["a\x00b", 1, None, {"x": "\\u0000"}]}
    assert json.loads(db.encode_json(value)) == {"k\ufffd": ["a\ufffdb", 1, None, {"x": "\\u0000"}]}
    plain = {"a": [1, "b", {"c": "\\u0000"}]}
    assert db.encode_json(plain) == json.dumps(plain)
