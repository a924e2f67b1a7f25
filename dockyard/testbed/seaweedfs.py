"""The test bed's object store: SeaweedFS, its S3 gateway over TLS on loopback.

One ``weed server`` process runs a master, a volume server, a filer and the S3 gateway,
each on a free port of 127.0.0.1 (the gRPC ports too: SeaweedFS would otherwise take
port + 10000, which may fall in the kernel's ephemeral range). The gateway serves
https only, with a certificate the test bed's CA signs for 127.0.0.1 and localhost, and
accepts one identity: an access key generated at ``up``, recorded in the state file.

What it is set to, for tests: buckets are never created by an upload
(``-s3.autoCreateBucket=false``, so a bucket deleted mid-upload stays deleted), and a
bucket with uploads in progress may be deleted (``-s3.allowDeleteBucketNotEmpty``).
Telemetry, the Iceberg and Lance catalogs, WebDAV and the message queue are off.
"""

from __future__ import annotations

import json
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from dockyard.testbed.pki import CertificateAuthority
from dockyard.testbed.processes import Launcher, free_port, http_ok

ACCESS_KEY_PREFIX = "DOCKYARDTESTBED"
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Endpoint:
    """Where the gateway listens and how to sign requests to it."""

    url: str
    access_key_id: str
    secret_access_key: str
    ca_bundle: str


def start(launcher: Launcher, ca: CertificateAuthority, weed: Path) -> S3Endpoint:
    """Start SeaweedFS; its S3 endpoint once it answers."""
    home = launcher.dir / "seaweedfs"
    (home / "data").mkdir(parents=True)
    serving = ca.issue(launcher.pki, "seaweedfs-s3", common_name="dockyard-testbed-s3", server=True)
    access = ACCESS_KEY_PREFIX + secrets.token_hex(4).upper()
    secret = secrets.token_urlsafe(30)
    config = home / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "dockyard-testbed",
                        "credentials": [{"accessKey": access, "secretKey": secret}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    config.chmod(0o600)
    ports = {
        name: free_port()
        for name in (
            "master",
            "master.grpc",
            "volume",
            "volume.grpc",
            "filer",
            "filer.grpc",
            "s3",
            "s3.grpc",
        )
    }
    flags = {f"-{name}.port": str(port) for name, port in ports.items() if "." not in name}
    flags |= {
        f"-{name.split('.')[0]}.port.grpc": str(port)
        for name, port in ports.items()
        if name.endswith(".grpc")
    }
    launcher.spawn(
        "seaweedfs",
        [
            str(weed),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={home / 'data'}",
            "-filer",
            "-s3",
            *(f"{flag}={value}" for flag, value in flags.items()),
            f"-s3.config={config}",
            f"-s3.cert.file={serving.cert}",
            f"-s3.key.file={serving.key}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",
            "-s3.allowDeleteBucketNotEmpty=true",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=256",
            "-volume.max=0",
            f"-filer.localSocket={home / 'filer.sock'}",
            f"-s3.localSocket={home / 's3.sock'}",
        ],
    )
    url = f"https://127.0.0.1:{ports['s3']}"
    context = ssl.create_default_context(cafile=str(ca.pair.cert))
    # The gateway's health path answers 200 once it serves, over TLS signed by our CA.
    launcher.wait_until("seaweedfs", lambda: http_ok(f"{url}/healthz", context), "serving S3")
    return S3Endpoint(url, access, secret, str(ca.pair.cert))
