"""A URL in an audit diff keeps where it points and loses what may be a credential: its
user info, its fragment and its query parameters' values (a Webhook's receiver often
takes its token there)."""

from __future__ import annotations

import pytest

from dockyard.api.audit.diff import REDACTED, redact_url, spec_diff


def test_a_webhook_urls_query_token_is_redacted_when_it_is_created() -> None:
    spec = {"url": "https://hooks.example.com/in?token=s3cret&team=ops", "events": ["*"]}

    assert spec_diff(None, spec)["/url"] == {
        "to": f"https://hooks.example.com/in?token={REDACTED}&team={REDACTED}"
    }


def test_a_changed_token_is_recorded_as_a_change_without_either_value() -> None:
    before = {"url": "https://hooks.example.com/in?token=old-s3cret"}
    after = {"url": "https://hooks.example.com/in?token=new-s3cret"}

    change = spec_diff(before, after)["/url"]

    assert "s3cret" not in str(change)
    assert change["from"] == change["to"] == f"https://hooks.example.com/in?token={REDACTED}"


def test_a_change_of_receiver_still_shows() -> None:
    change = spec_diff({"url": "https://a.example/in"}, {"url": "https://b.example:8443/hook"})

    assert change == {"/url": {"from": "https://a.example/in", "to": "https://b.example:8443/hook"}}


def test_urls_inside_an_added_object_and_under_url_named_keys_are_redacted() -> None:
    diff = spec_diff({}, {"receiver": {"callbackUrl": "https://u:pw@h.example/x?key=k#tok"}})

    assert diff == {
        "/receiver": {
            "to": {"callbackUrl": f"https://{REDACTED}@h.example/x?key={REDACTED}#{REDACTED}"}
        }
    }


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://h.example/in", "https://h.example/in"),
        ("https://h.example/in?s3cret", f"https://h.example/in?{REDACTED}"),
        ("http://[::1]:8080/in?a=s3cret", f"http://[::1]:8080/in?a={REDACTED}"),
        ("user:s3cret@h.example/in", REDACTED),
        ("https://[not-closed/in?t=s3cret", REDACTED),
        # A password holding / ? or #: urlsplit reads part of it as the host.
        ("https://user:pa/ss@h.example/in", REDACTED),
        ("https://user:pa?ss@h.example/in", REDACTED),
        ("https://user:pa#ss@h.example/in", REDACTED),
        # Receivers that take their secret in the path: its segment goes, ids stay.
        (
            "https://hooks.slack.com/services/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",
            f"https://hooks.slack.com/services/T0123ABCD/B0456EFGH/{REDACTED}",
        ),
        (
            "https://discord.com/api/webhooks/1234567/Ab-Cd_Ef1234567890GhIjKlMnOp",
            f"https://discord.com/api/webhooks/1234567/{REDACTED}",
        ),
        ("https://h.example/hooks/dockyard-events", "https://h.example/hooks/dockyard-events"),
        ("https://h.example/v2/in", "https://h.example/v2/in"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
