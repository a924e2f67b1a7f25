"""S3 upload throughput: parts sent in parallel against a single stream, same artifact.

The test bed's SeaweedFS (its S3 gateway over TLS on loopback) takes the same
``--mib`` MiB of random bytes (incompressible, like an encrypted artifact), fed in
1 MiB writes as the runner feeds a dump, through ``S3Store.create``:

- Dockyard: the default, ``DOCKYARD_S3_UPLOAD_CONCURRENCY`` parts (4) in flight while
  the next part fills;
- peer: one part at a time (``concurrency=1``), a single stream, which is what every
  upload did before.

Both use 8 MiB parts, the same client, bucket and key layout, and alternate over
``--rounds`` rounds; each object is deleted after its round. The figures are the
throughput ratios (parallel over single stream), in two settings:

- ``loopback``: straight to the gateway. There is no network latency to hide, so the
  gain is only the overlap of hashing, TLS and the store's own work on two cores;
- ``latency``: through a TCP relay in this process that delivers every byte
  ``--latency-ms`` (10 ms) late in each direction (a 20 ms round trip, as to a store in
  another zone), without limiting bandwidth. TLS goes through it untouched.

Run: ``.venv/bin/python -m bench.s3_upload [--mib 256] [--rounds 3]`` with the test bed
up. Writes ``bench/results/s3_upload.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from bench.common import RESULTS, Spread, ratio_figure
from dockyard.core.settings import Settings
from dockyard.runner.s3 import S3Credentials, S3Store
from dockyard.testbed.cluster import Testbed

CHUNK = 1024 * 1024


class _LateRelay:
    """A TCP relay on 127.0.0.1 to ``target`` that delays every chunk by ``delay`` seconds
    in each direction: latency without a bandwidth limit (chunks are queued, not slept on)."""

    def __init__(self, target: tuple[str, int], delay: float) -> None:
        self.target, self.delay = target, delay
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        await asyncio.gather(
            self._pipe(reader, upstream_writer),
            self._pipe(upstream_reader, writer),
            return_exceptions=True,
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))
                if not chunk:
                    writer.close()
                    return
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            while chunk := await reader.read(256 * 1024):
                queue.put_nowait((loop.time() + self.delay, chunk))
        finally:
            queue.put_nowait((loop.time() + self.delay, b""))
            await sender


async def _upload(
    state: Any, bucket: str, data: bytes, concurrency: int, endpoint: str | None = None
) -> float:
    """Seconds to upload ``data`` as one artifact with ``concurrency`` parts in flight."""
    async with S3Store(
        bucket,
        endpoint_url=endpoint or state.s3_endpoint,
        region="us-east-1",
        credentials=S3Credentials(state.s3_access_key_id, state.s3_secret_access_key),
        ca_bundle=state.s3_ca_bundle,
        concurrency=concurrency,
    ) as store:
        name = f"bench/{uuid.uuid4().hex}.dkbk"
        started = time.perf_counter()
        async with store.create(name) as writer:
            view = memoryview(data)
            for offset in range(0, len(data), CHUNK):
                await writer.write(bytes(view[offset : offset + CHUNK]))
            stored = await writer.commit()
        elapsed = time.perf_counter() - started
        assert stored.size == len(data)
        await store.delete(name)
        return elapsed


async def _bucket(state: Any, bucket: str, *, create: bool) -> None:
    async with S3Store(
        bucket,
        endpoint_url=state.s3_endpoint,
        region="us-east-1",
        credentials=S3Credentials(state.s3_access_key_id, state.s3_secret_access_key),
        ca_bundle=state.s3_ca_bundle,
    ) as store:
        if create:
            await store.client.create_bucket(Bucket=bucket)
        else:
            await store.client.delete_bucket(Bucket=bucket)


async def _rounds(
    state: Any, bucket: str, data: bytes, rounds: int, concurrency: int, endpoint: str
) -> tuple[Spread, Spread]:
    """MB/s with ``concurrency`` parts in flight and with one, alternating."""
    parallel: list[float] = []
    single: list[float] = []
    await _upload(state, bucket, data[: 16 * CHUNK], concurrency, endpoint)  # warm up
    for round_ in range(rounds):
        # Alternate which goes first, so neither always meets a warmer store.
        order = [(concurrency, parallel), (1, single)]
        for width, samples in order if round_ % 2 == 0 else reversed(order):
            seconds = await _upload(state, bucket, data, width, endpoint)
            samples.append(len(data) / seconds / 1e6)
            print(f"{endpoint} round {round_ + 1}: {width} in flight: {samples[-1]:.1f} MB/s")
    return Spread(tuple(parallel)), Spread(tuple(single))


async def main(mib: int, rounds: int, latency_ms: float) -> dict[str, Any]:
    state = Testbed().require()
    concurrency = Settings().s3_upload_concurrency
    data = os.urandom(mib * CHUNK)
    bucket = f"bench-{uuid.uuid4().hex[:12]}"
    target = urlsplit(state.s3_endpoint)
    relay = _LateRelay((str(target.hostname), int(target.port or 443)), latency_ms / 1000)
    endpoints = {
        "loopback": state.s3_endpoint,
        "latency": f"https://127.0.0.1:{await relay.start()}",
    }
    await _bucket(state, bucket, create=True)
    cases: dict[str, Any] = {}
    figures = []
    try:
        for case, endpoint in endpoints.items():
            dockyard, peer = await _rounds(state, bucket, data, rounds, concurrency, endpoint)
            where = "loopback" if case == "loopback" else f"{2 * latency_ms:g} ms round trip"
            figure = ratio_figure(
                f"S3 upload throughput, {concurrency} parts in flight vs a single stream "
                f"({mib} MiB, {where})",
                dockyard,
                peer,
                at_least=1.0 if case == "loopback" else 1.5,
                unit="MB/s",
            )
            cases[case] = {
                "parallel_mb_per_s": dockyard.as_dict(),
                "single_stream_mb_per_s": peer.as_dict(),
            }
            figures.append(figure.as_dict())
    finally:
        await _bucket(state, bucket, create=False)
        await relay.close()
    return {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "artifact_mib": mib,
        "part_mib": 8,
        "concurrency": concurrency,
        "latency_ms_each_way": latency_ms,
        "cases": cases,
        "figures": figures,
    }


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=10.0)
    args = parser.parse_args()
    document = asyncio.run(main(args.mib, args.rounds, args.latency_ms))
    path = RESULTS / "s3_upload.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document["figures"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    run()
