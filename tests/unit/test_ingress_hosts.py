"""Which hosts a namespace's domains cover, and which environment a host is (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from dockyard.core.settings import Settings
from dockyard.operator.environments.hosts import first_claim, within


@pytest.mark.parametrize(
    ("host", "domains", "inside"),
    [
        ("shop.example.com", ["*"], True),
        ("shop.example.com", ["shop.example.com"], True),
        ("shop.example.com", ["*.example.com"], True),
        ("a.b.example.com", ["*.example.com"], True),
        ("example.com", ["*.example.com"], False),
        ("evilexample.com", ["*.example.com"], False),
        ("shop.example.com.evil.io", ["*.example.com"], False),
        ("api.platform.example.com", ["*.team-a.example.com", "a.example.org"], False),
        ("shop.example.com", [], False),
        ("shop.example.com", [" Shop.Example.com "], True),
    ],
)
def test_a_host_is_within_a_domain_it_names_or_lies_under(
    host: str, domains: list[str], inside: bool
) -> None:
    assert within(host, domains) is inside


def _ingress(namespace: str, name: str, uid: str, created: str, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": namespace,
            "name": name,
            "creationTimestamp": created,
            "ownerReferences": [{"name": name, "uid": uid, "controller": True}],
            **meta,
        }
    }


FIRST = _ingress("team-a", "shop", "uid-a", "2026-01-01T00:00:00Z")
LATER = _ingress("team-b", "thief", "uid-b", "2026-01-01T00:00:05Z")


def test_the_first_claim_keeps_the_host() -> None:
    assert first_claim([FIRST, LATER], "uid-a") is None
    assert first_claim([FIRST, LATER], "uid-b") is FIRST
    # An environment with no Ingress yet finds the host taken by any other claim.
    assert first_claim([LATER], "uid-c") is LATER
    assert first_claim([], "uid-c") is None


def test_claims_made_in_the_same_second_go_by_namespace_and_name() -> None:
    twin = _ingress("team-0", "shop", "uid-0", "2026-01-01T00:00:00Z")
    assert first_claim([FIRST, twin], "uid-a") is twin
    assert first_claim([FIRST, twin], "uid-0") is None


def test_a_claim_being_deleted_lets_the_host_go() -> None:
    leaving = _ingress("team-a", "shop", "uid-a", "2026-01-01T00:00:00Z",
                       deletionTimestamp="2026-01-02T00:00:00Z")  # fmt: skip
    assert first_claim([leaving, LATER], "uid-b") is None


@pytest.mark.parametrize("domain", ["*", "*.example.com", "shop.example.com", "localhost"])
def test_the_default_domains_take_hosts_and_wildcards(domain: str) -> None:
    assert Settings(ingress_domains=[domain]).ingress_domains == [domain]


@pytest.mark.parametrize("domain", ["https://example.com", "*example.com", "a.*.com", "Shop.com"])
def test_a_default_domain_that_is_no_pattern_is_refused(domain: str) -> None:
    with pytest.raises(ValidationError, match="ingress_domains"):
        Settings(ingress_domains=[domain])
