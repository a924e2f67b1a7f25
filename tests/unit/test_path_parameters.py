"""Path parameters that are no Kubernetes names are refused, and the refusal is logged as
a security event: such a request reaches neither the limiter nor the audit trail."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from dockyard.api import errors, keys, paths
from dockyard.core.settings import Settings

TRAVERSAL = "/api/v1/namespaces/shop/restores/x%2F..%2F..%2Fbank%2Frestores%2Fvault/approve"


def _request(name: str, remote: str) -> web.Request:
    app = web.Application()
    app[keys.SETTINGS] = Settings()
    mocked = make_mocked_request(
        "POST", TRAVERSAL, match_info={"namespace": "shop", "name": name}, app=app
    )
    return mocked.clone(remote=remote)


async def _never(_: web.Request) -> web.StreamResponse:  # pragma: no cover - never called
    raise AssertionError("a refused request reached its handler")


async def test_an_encoded_slash_in_a_name_is_refused_and_logged_once_per_client(
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = "x/../../bank/restores/vault"
    with caplog.at_level("WARNING", logger="dockyard.api.paths"):
        for _ in range(20):
            with pytest.raises(errors.Problem) as refused:
                await paths.validate_path_parameters(_request(name, "198.51.100.20"), _never)
        with pytest.raises(errors.Problem):
            await paths.validate_path_parameters(_request(name, "198.51.100.21"), _never)

    assert refused.value.status == 400
    lines = [r for r in caplog.records if r.getMessage() == "paths.name_refused"]
    assert [r.__dict__["source_ip"] for r in lines] == ["198.51.100.20", "198.51.100.21"]
    assert lines[0].__dict__["security_event"] == "paths.name_refused"
    assert (lines[0].__dict__["method"], lines[0].__dict__["parameter"]) == ("POST", "name")


async def test_a_valid_name_goes_through_unlogged(caplog: pytest.LogCaptureFixture) -> None:
    async def handled(_: web.Request) -> web.StreamResponse:
        return web.Response(text="ok")

    with caplog.at_level("WARNING", logger="dockyard.api.paths"):
        response = await paths.validate_path_parameters(_request("vault", "198.51.100.22"), handled)
    assert response.status == 200
    assert not [r for r in caplog.records if r.getMessage() == "paths.name_refused"]
