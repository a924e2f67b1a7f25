"""What a Webhook may be: its events, its URL (the SSRF guard), its scope; and the
dispatcher's retry delays."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from standardwebhooks.webhooks import Webhook as Signer

from dockyard.core.models.references import SecretKeyReference
from dockyard.core.models.webhook import Webhook, WebhookSpec
from dockyard.operator.webhooks.failures import backoff
from dockyard.operator.webhooks.targets import Target, TargetRefused, check_events, check_url
from dockyard.runner.endpoints import EndpointPolicy

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
STRICT = EndpointPolicy.of(False, [], label="webhook URL", settings="DOCKYARD_WEBHOOK")
LOOPBACK = EndpointPolicy.of(
    True, ["127.0.0.0/8"], label="webhook URL", settings="DOCKYARD_WEBHOOK"
)


def _spec(url: str = "https://hooks.example.com/x", events: list[str] | None = None):
    return WebhookSpec(
        url=url,
        events=events or ["*"],
        secret_ref=SecretKeyReference(name="s", key="k"),
    )


def _target(namespace: str, events: list[str], everywhere: bool = False) -> Target:
    return Target("u", namespace, "w", 1, _spec(events=events), Signer(SECRET), everywhere)


def test_a_webhook_outside_the_platform_namespace_gets_its_own_namespaces_events_only() -> None:
    mine = _target("shop", ["backup.completed"])
    assert mine.wants("backup.completed", "shop")
    assert not mine.wants("backup.completed", "other")
    assert not mine.wants("backup.failed", "shop")
    platform = _target("dockyard-system", ["*"], everywhere=True)
    assert platform.wants("drill.failed", "any-namespace")


def test_unknown_event_types_are_refused_by_name() -> None:
    check_events(_spec(events=["backup.completed", "*"]))
    with pytest.raises(TargetRefused) as refused:
        check_events(_spec(events=["backup.done", "restore.failed"]))
    assert refused.value.reason == "UnknownEventType"
    assert "backup.done" in refused.value.message


@pytest.mark.parametrize(
    ("url", "policy", "says"),
    [
        ("http://hooks.example.com/x", STRICT, "only https endpoints are allowed"),
        ("https://169.254.169.254/", STRICT, "a link-local address"),
        ("https://10.0.0.8/x", STRICT, "a private address"),
        ("https://127.0.0.1:8443/x", STRICT, "a loopback address"),
        ("https://[::1]/x", STRICT, "a loopback address"),
        ("http://10.0.0.8/x", LOOPBACK, "a private address"),
        ("https://\uff11\uff16\uff19.254.169.254/", STRICT, "not plain ASCII"),
        ("https://127\u30020\u30020\u30021/", LOOPBACK, "not plain ASCII"),
    ],
)
def test_urls_aimed_inside_are_refused(url: str, policy: EndpointPolicy, says: str) -> None:
    with pytest.raises(TargetRefused) as refused:
        check_url(policy, url)
    assert refused.value.reason == "URLRefused"
    assert says in refused.value.message


def test_allowed_urls_pass() -> None:
    check_url(STRICT, "https://hooks.example.com/x")  # a name: checked at each connection
    check_url(STRICT, "https://93.184.216.34/x")
    check_url(LOOPBACK, "http://127.0.0.1:9000/hook")


def test_retries_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    for attempt, ceiling in ((1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)):
        delays = [backoff(attempt, 2.0, 60.0) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 100  # jittered, not one value


def test_the_documented_example_is_a_valid_webhook() -> None:
    example = Path(__file__).resolve().parents[2] / "docs" / "examples" / "webhook.yaml"
    webhook = Webhook.model_validate(yaml.safe_load(example.read_text()))
    check_events(webhook.spec)
    check_url(STRICT, webhook.spec.url)
