"""An operator-side run's S3 storage: the Backup's own credentials, behind the endpoint guard.

A Job runner gets the keys of ``storage.s3.credentialsSecretRef`` as its environment;
an inline run must not do with less, nor with more: it uses those keys, read from the
Secret at the moment of use, and never the operator's own identity (its workload
identity or instance profile may reach buckets of every tenant). A Backup that names
no Secret uses the ambient chain only for its BackupStore's storage, which an
administrator chose (``stores.chosen_by_a_store``); any other bucket is refused. The
endpoint is checked by
:class:`~dockyard.runner.endpoints.EndpointPolicy` first, and every
connection's address again by its resolver.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

from dockyard.core.breakers import Breakers
from dockyard.core.kube import KubeClient
from dockyard.core.models.references import SecretKeyReference, SecretReference
from dockyard.core.models.storage import S3Storage as S3Spec
from dockyard.core.resources import resource_type
from dockyard.core.settings import Settings
from dockyard.operator.apply import get
from dockyard.runner import BackupError, Store
from dockyard.runner.endpoints import EndpointPolicy, GuardedResolver

if TYPE_CHECKING:
    from dockyard.runner.s3 import S3Credentials

SECRETS: Final = resource_type("v1", "Secret")
# The key names in the Secret (the same a runner Job maps into its environment).
ACCESS_KEY: Final = "AWS_ACCESS_KEY_ID"
SECRET_KEY: Final = "AWS_SECRET_ACCESS_KEY"  # noqa: S105  # nosec B105  # a key name
SESSION_TOKEN: Final = "AWS_SESSION_TOKEN"  # noqa: S105  # nosec B105  # a key name


class CredentialsUnavailable(BackupError):
    """The S3 credentials Secret, or one of its keys, is missing or unreadable."""

    reason = "CredentialsUnavailable"


def endpoint_policy(settings: Settings) -> EndpointPolicy:
    """The endpoints ``settings`` allow (DOCKYARD_S3_ALLOW_HTTP, ..._ALLOWED_NETWORKS)."""
    return EndpointPolicy.of(settings.s3_allow_http, settings.s3_allowed_networks)


async def s3_credentials(kube: KubeClient, namespace: str, ref: SecretReference) -> S3Credentials:
    """The keys the Secret ``ref`` holds, as ``S3Credentials``; errors name keys only."""
    from dockyard.runner.s3 import S3Credentials

    secret = await get(kube, SECRETS.path(namespace, ref.name))
    if secret is None:
        raise CredentialsUnavailable(f"S3 credentials Secret {ref.name} does not exist")
    data = secret.get("data") or {}
    values: dict[str, str | None] = {}
    for key in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN):
        encoded = data.get(key)
        try:
            values[key] = base64.b64decode(encoded, validate=True).decode() if encoded else None
        except (binascii.Error, UnicodeDecodeError, TypeError):
            raise CredentialsUnavailable(
                f"key {key} of S3 credentials Secret {ref.name} is not text"
            ) from None
    access, secret_key = values[ACCESS_KEY], values[SECRET_KEY]
    if not access or not secret_key:
        raise CredentialsUnavailable(
            f"S3 credentials Secret {ref.name} needs the keys {ACCESS_KEY} and {SECRET_KEY}"
        )
    return S3Credentials(access, secret_key, values[SESSION_TOKEN] or None)


@asynccontextmanager
async def open_s3(
    spec: S3Spec,
    *,
    credentials: S3Credentials | None,
    policy: EndpointPolicy,
    part_timeout: float,
    breakers: Breakers | None = None,
    concurrency: int = 4,
    ca_bundle: str | None = None,
) -> AsyncIterator[Store]:
    """The bucket ``spec`` names, with ``credentials`` (None: the ambient chain). The
    caller has checked the endpoint with ``policy`` (a refusal before any client
    exists); the client's resolver checks every connection's address again.
    ``ca_bundle`` is the path of the PEM file :func:`ca_bundle_file` wrote."""
    from dockyard.runner.s3 import S3Store

    async with S3Store(
        spec.bucket,
        prefix=spec.prefix or "",
        endpoint_url=spec.endpoint,
        region=spec.region,
        credentials=credentials,
        resolver=GuardedResolver(policy) if spec.endpoint else None,
        part_timeout=part_timeout,
        breakers=breakers,
        concurrency=concurrency,
        ca_bundle=ca_bundle,
    ) as store:
        yield store


@asynccontextmanager
async def ca_bundle_file(
    kube: KubeClient, namespace: str, ref: SecretKeyReference | None
) -> AsyncIterator[str | None]:
    """The PEM certificates of the Secret key ``ref`` in a private file for the run's
    lifetime (botocore reads a bundle from a path); None without a reference."""
    if ref is None:
        yield None
        return
    secret = await get(kube, SECRETS.path(namespace, ref.name))
    encoded = ((secret or {}).get("data") or {}).get(ref.key)
    where = f"key {ref.key} of Secret {ref.name}"
    if secret is None or not encoded:
        raise CredentialsUnavailable(f"the S3 endpoint's CA bundle ({where}) does not exist")
    try:
        pem = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise CredentialsUnavailable(
            f"the S3 endpoint's CA bundle ({where}) is not base64"
        ) from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise CredentialsUnavailable(
            f"the S3 endpoint's CA bundle ({where}) holds no PEM certificate"
        )
    with tempfile.TemporaryDirectory(prefix="dockyard-s3-ca-") as directory:
        path = Path(directory) / "ca.crt"
        await asyncio.to_thread(path.write_bytes, pem)
        yield str(path)
