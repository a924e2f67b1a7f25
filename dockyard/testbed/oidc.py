"""A minimal OpenID Connect issuer on loopback, so tests can mint tokens for any user.

kube-apiserver reads a static token file only at start, but it verifies JWTs from a
configured issuer at any time, the way production clusters authenticate people. The
issuer serves its discovery document and JWKS over HTTPS; ``mint_token`` signs a
short-lived ES256 token with the issuer's key for any name and groups.

``start`` runs it as one of the test bed's processes:
``python -m dockyard.testbed.oidc --dir DIR --port PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import ssl
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization

from dockyard.testbed.pki import CertificateAuthority, write_signing_key
from dockyard.testbed.processes import Launcher, http_ok

AUDIENCE = "dockyard-testbed"
SIGNING_KEY = "oidc-signing.key"
SIGNING_PUB = "oidc-signing.pub"


def key_id(public_pem: bytes) -> str:
    return hashlib.sha256(public_pem).hexdigest()[:16]


def jwks(public_pem: bytes) -> dict[str, Any]:
    public_key = serialization.load_pem_public_key(public_pem)
    jwk: dict[str, Any] = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(public_key))  # type: ignore[arg-type]
    jwk.update({"kid": key_id(public_pem), "use": "sig", "alg": "ES256"})
    return {"keys": [jwk]}


def discovery(issuer: str) -> dict[str, Any]:
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/jwks",
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["ES256"],
    }


def mint_token(
    directory: Path,
    issuer: str,
    name: str,
    groups: Sequence[str] = (),
    *,
    ttl_seconds: int = 3600,
) -> str:
    """Sign an ID token that the test bed's apiserver authenticates as ``name`` + ``groups``."""
    private_pem = (directory / SIGNING_KEY).read_bytes()
    public_pem = (directory / SIGNING_PUB).read_bytes()
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": name,
        "groups": list(groups),
        "iat": now,
        "nbf": now - 5,
        "exp": now + ttl_seconds,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(claims, private_pem, algorithm="ES256", headers={"kid": key_id(public_pem)})


def build_app(directory: Path, issuer: str) -> web.Application:
    public_pem = (directory / SIGNING_PUB).read_bytes()
    doc, keys = discovery(issuer), jwks(public_pem)

    async def well_known(_: web.Request) -> web.Response:
        return web.json_response(doc)

    async def jwks_handler(_: web.Request) -> web.Response:
        return web.json_response(keys)

    app = web.Application()
    app.router.add_get("/.well-known/openid-configuration", well_known)
    app.router.add_get("/jwks", jwks_handler)
    return app


async def serve(directory: Path, port: int) -> None:
    issuer = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(directory / "oidc.crt", directory / "oidc.key")
    runner = web.AppRunner(build_app(directory, issuer), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def start(launcher: Launcher, ca: CertificateAuthority, port: int) -> str:
    """Issue the issuer's certificate and signing key, start it; its URL."""
    ca.issue(launcher.pki, "oidc", common_name="dockyard-testbed-oidc", server=True)
    write_signing_key(launcher.pki, SIGNING_KEY.removesuffix(".key"))
    launcher.spawn(
        "oidc",
        [
            sys.executable,
            "-m",
            "dockyard.testbed.oidc",
            "--dir",
            str(launcher.pki),
            "--port",
            str(port),
        ],
    )
    issuer = f"https://127.0.0.1:{port}"
    context = ssl.create_default_context(cafile=str(ca.pair.cert))
    launcher.wait_until(
        "oidc",
        lambda: http_ok(f"{issuer}/.well-known/openid-configuration", context),
        "serving discovery",
    )
    return issuer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.dir, args.port))


if __name__ == "__main__":
    main()
