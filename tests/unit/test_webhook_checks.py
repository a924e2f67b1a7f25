"""A Webhook's check replaces what is delivered to: a secret that makes no signer (empty,
too short, not base64) is Ready=False with the reason and stops the previous target, and
a check that fails unexpectedly delivers nothing with the spec it last passed with."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, cast

import asyncpg
import pytest

from dockyard.core.kube import KubeClient, KubeError
from dockyard.core.settings import Settings
from dockyard.operator.webhooks.dispatcher import Dispatcher
from dockyard.operator.webhooks.targets import MIN_SECRET_BYTES, signer_of

UID = "uid-1"
GOOD = "whsec_" + base64.b64encode(b"k" * MIN_SECRET_BYTES).decode()


class _Kube:
    """The apiserver: the signing Secret as the test sets it, or an error."""

    def __init__(self) -> None:
        self.secret = GOOD
        self.error: KubeError | None = None

    async def get(self, _path: str, **_: Any) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        return {"data": {"secret": base64.b64encode(self.secret.encode()).decode()}}


class _Deliveries:
    async def execute(self, *_args: Any) -> str:
        return "UPDATE 1"


def _dispatcher() -> tuple[Dispatcher, _Kube, list[Mapping[str, Any]]]:
    kube = _Kube()
    dispatcher = Dispatcher(
        cast(KubeClient, kube), cast(asyncpg.Pool, _Deliveries()), Settings(namespace="platform")
    )
    written: list[Mapping[str, Any]] = []

    async def write_status(_ns: str, _name: str, status: Mapping[str, Any], **_: Any) -> bool:
        written.append(status)
        return True

    dispatcher.webhooks.write_status = write_status  # type: ignore[method-assign]
    return dispatcher, kube, written


def _body(generation: int, url: str = "https://hooks.example/in", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dockyard.io/v1alpha1",
        "kind": "Webhook",
        "metadata": {"name": "hook", "namespace": "team", "uid": UID, "generation": generation,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"url": url, "events": ["*"],
                 "secretRef": {"name": "hook", "key": "secret"}, **spec},
    }  # fmt: skip


def _ready(status: Mapping[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


@pytest.mark.parametrize(
    "secret",
    [
        "whsec_",
        "whsec_!!!!",
        "whsec_a",
        "whsec_" + base64.b64encode(b"s" * (MIN_SECRET_BYTES - 1)).decode(),
        base64.b64encode(b"s" * 32).decode(),
    ],
)
async def test_a_secret_that_makes_no_signer_is_refused_and_stops_the_old_target(
    secret: str,
) -> None:
    dispatcher, kube, written = _dispatcher()
    await dispatcher.check(_body(1))
    assert UID in dispatcher.targets

    kube.secret = secret
    await dispatcher.check(_body(2, url="https://new.example/in"))

    assert UID not in dispatcher.targets
    ready = _ready(written[-1])
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSecret")
    assert ready["message"] == (  # what to fix, and nothing of the value itself
        "Secret hook key secret is not a signing secret of the form "
        f"whsec_<base64 of at least {MIN_SECRET_BYTES} random bytes>"
    )


@pytest.mark.parametrize("size", [MIN_SECRET_BYTES, 64, 100])
def test_a_key_of_the_minimum_length_or_more_signs(size: int) -> None:
    signer_of("whsec_" + base64.b64encode(b"k" * size).decode().rstrip("="))


async def test_a_check_that_fails_unexpectedly_stops_delivering_with_the_old_spec() -> None:
    """The spec just set ``suspend: true``, but the apiserver fails the Secret's read:
    Kopf retries the check, and meanwhile nothing goes to the old URL."""
    dispatcher, kube, _ = _dispatcher()
    await dispatcher.check(_body(1))
    kube.error = KubeError(500, {"message": "etcdserver: request timed out"})

    with pytest.raises(KubeError):
        await dispatcher.check(_body(2, suspend=True))

    assert UID not in dispatcher.targets
    assert UID in dispatcher._refused  # its deliveries are parked as they come up


async def test_a_spec_the_apiserver_let_by_but_the_models_refuse_stops_the_old_target() -> None:
    """Go's regexp reads the CRD's ``\\s`` as ASCII whitespace only, so the apiserver
    stores a URL ending in a no-break space, which the model refuses: the Webhook is
    refused (Ready False, InvalidSpec), not left delivering to its old URL though the
    new spec says ``suspend``."""
    dispatcher, _, written = _dispatcher()
    await dispatcher.check(_body(1, url="https://old.example/in"))
    assert UID in dispatcher.targets

    await dispatcher.check(_body(2, url="https://new.example/in\u00a0", suspend=True))

    assert UID not in dispatcher.targets
    assert UID in dispatcher._refused  # its deliveries are parked as they come up
    ready = _ready(written[-1])
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("spec.url")
    assert written[-1]["observedGeneration"] == 2


async def test_a_check_that_passed_keeps_its_target_when_only_the_status_write_fails() -> None:
    dispatcher, _, _ = _dispatcher()

    async def write_status(*_args: Any, **_kwargs: Any) -> bool:
        raise KubeError(500, {})

    dispatcher.webhooks.write_status = write_status  # type: ignore[method-assign]
    with pytest.raises(KubeError):
        await dispatcher.check(_body(2, suspend=True))

    assert dispatcher.targets[UID].spec.suspend
