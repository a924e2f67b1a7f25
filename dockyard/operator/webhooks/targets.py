"""The Webhooks the dispatcher delivers to, each checked once per change.

A Webhook is checked when it is created, changed or seen at start-up: its URL's
scheme and literal address (the SSRF guard; names are checked again at every
connection), its event types, and its signing secret, read from the Secret it names.
A Webhook that fails a check gets ``Ready=False`` with the reason, and nothing is
delivered to it until it is fixed.

A signing secret is ``whsec_`` and the base64 of its key, of ``MIN_SECRET_BYTES`` bytes
at least (Standard Webhooks recommends 24 to 64 random bytes): a shorter key, an empty
one included, is ``InvalidSecret``, as is anything that does not decode.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from standardwebhooks.webhooks import Webhook as Signer

from dockyard.core.events import EventType
from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.models.webhook import EVERY_EVENT, WebhookSpec
from dockyard.core.resources import SECRETS
from dockyard.runner.endpoints import EndpointPolicy, EndpointRefused

# The Standard Webhooks form of a signing secret (a prefix, not a secret).
SECRET_PREFIX = "whsec_"  # noqa: S105  # nosec B105
MIN_SECRET_BYTES: Final = 24


class TargetRefused(Exception):
    """The Webhook cannot be delivered to: ``reason`` (a condition reason) and why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Target:
    """A checked Webhook: where, what, and the signer of its secret."""

    uid: str
    namespace: str
    name: str
    generation: int
    spec: WebhookSpec
    signer: Signer
    everywhere: bool
    """In the platform namespace: every namespace's events, not only its own."""
    created: datetime | None = None
    """When the Webhook was made (its ``creationTimestamp``)."""

    def wants(self, event_type: str, namespace: str, occurred_at: datetime | None = None) -> bool:
        """Whether an event of ``event_type`` in ``namespace``, which happened at
        ``occurred_at``, is delivered here. A namespace's own Webhook takes none that
        happened before it was made: the start of its cursor leaves those out, but one
        logged late (held through an outage of the platform database) comes after it,
        and may be an earlier namespace's of the same name, another team's."""
        if not (self.everywhere or namespace == self.namespace) or not self.spec.wants(event_type):
            return False
        if self.everywhere or self.created is None or occurred_at is None:
            return True
        return occurred_at >= self.created


def check_events(spec: WebhookSpec) -> None:
    known = {t.value for t in EventType} | {EVERY_EVENT}
    unknown = sorted(set(spec.events) - known)
    if unknown:
        raise TargetRefused(
            "UnknownEventType",
            f"spec.events names {', '.join(unknown)}, which Dockyard does not emit "
            "(see specs/events/)",
        )


async def read_signer(kube: KubeClient, namespace: str, spec: WebhookSpec) -> Signer:
    """The signer of the secret ``spec.secretRef`` names, in the Standard Webhooks form."""
    ref = spec.secret_ref
    try:
        secret = await kube.get(SECRETS.path(namespace, ref.name))
    except KubeError as exc:
        if exc.status in (403, 404):
            raise TargetRefused(
                "SecretNotFound", f"Secret {ref.name} is not readable in {namespace}"
            ) from None
        raise
    encoded = (secret.get("data") or {}).get(ref.key)
    if not encoded:
        raise TargetRefused("SecretNotFound", f"Secret {ref.name} has no key {ref.key}")
    try:
        return signer_of(base64.b64decode(encoded).decode())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        # Never the value itself: it is a secret.
        raise TargetRefused(
            "InvalidSecret",
            f"Secret {ref.name} key {ref.key} is not a signing secret of the form "
            f"whsec_<base64 of at least {MIN_SECRET_BYTES} random bytes>",
        ) from None


def signer_of(value: str) -> Signer:
    """The signer of a ``whsec_<base64>`` secret; ``ValueError`` for anything else, or a
    key shorter than ``MIN_SECRET_BYTES``.

    The key is decoded as the Standard Webhooks libraries decode it (padding optional),
    so that receivers verifying with them agree on it, and handed to the signer as
    bytes: the library's own errors, such as its ``EmptyWebhookSecretError`` for a bare
    ``whsec_``, are not ``ValueError``s.
    """
    if not value.startswith(SECRET_PREFIX):
        raise ValueError("not a whsec_ secret")
    key = base64.b64decode(value.removeprefix(SECRET_PREFIX) + "==")
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError("the key is too short")
    return Signer(key)


def check_url(policy: EndpointPolicy, url: str) -> None:
    """The scheme, and a literal address (names are checked at each connection)."""
    try:
        host, _ = policy.check_scheme(url)
        with contextlib.suppress(ValueError):  # a name, not an address
            policy.check_address(host, host.strip("[]"))
    except EndpointRefused as exc:
        raise TargetRefused("URLRefused", exc.message) from None
