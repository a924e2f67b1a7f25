"""An S3 store's requests run under DOCKYARD_S3_PART_TIMEOUT, and one cut short fails
the run as a storage error."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from dockyard.core.settings import Settings
from dockyard.runner.errors import StorageError
from dockyard.runner.s3 import CONNECT_TIMEOUT, S3Credentials, S3Store
from dockyard.runner.storage import verify_checksum


async def test_each_request_of_the_client_has_the_part_deadline() -> None:
    settings = Settings(s3_part_timeout=7.5)
    store = S3Store(
        "bucket",
        endpoint_url="http://127.0.0.1:9",
        region="us-east-1",
        credentials=S3Credentials("id", "secret"),
        part_timeout=settings.s3_part_timeout,
    )
    async with store:
        config = store.client.meta.config
        assert config.read_timeout == 7.5
        assert config.connect_timeout == min(7.5, CONNECT_TIMEOUT)


async def test_a_short_deadline_also_bounds_connecting() -> None:
    store = S3Store("bucket", region="us-east-1", part_timeout=2.0)
    async with store:
        assert store.client.meta.config.connect_timeout == 2.0


class _CutBody:
    """An object's body whose connection drops after the first chunk."""

    def __init__(self) -> None:
        self.reads = 0

    async def read(self, _size: int) -> bytes:
        self.reads += 1
        if self.reads > 1:
            raise aiohttp.ClientPayloadError("Response payload is not completed")
        return b"first chunk"

    def close(self) -> None:
        pass


class _OneObject:
    """The S3 client, as far as reading one object goes."""

    async def get_object(self, **_request: Any) -> dict[str, Any]:
        return {"Body": _CutBody()}


async def test_a_body_cut_short_fails_as_a_storage_error_naming_the_object() -> None:
    store = S3Store("bucket", region="us-east-1")
    store._client = _OneObject()  # what entering the store would have made
    with pytest.raises(StorageError, match=r"cannot read shop/a\.dkbk: ClientPayloadError"):
        await verify_checksum(store, "shop/a.dkbk", expected_sha256="0" * 64)
