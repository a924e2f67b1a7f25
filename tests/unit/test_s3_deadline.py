"""An S3 store's requests run under DOCKYARD_S3_PART_TIMEOUT."""

from __future__ import annotations

from dockyard.core.settings import Settings
from dockyard.runner.s3 import CONNECT_TIMEOUT, S3Credentials, S3Store


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
