"""The S3 endpoint guard's decisions on literal addresses (no resolution, no network)."""

from __future__ import annotations

import asyncio

import pytest

from dockyard.runner.endpoints import EndpointPolicy, EndpointRefused, shown_url

STRICT = EndpointPolicy()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104
        "::1",
        "fe80::1",
        "fd00::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "224.0.0.1",
        # IPv6 addresses that carry a private IPv4 one: NAT64, 6to4, IPv4-compatible
        "64:ff9b::a9fe:a9fe",
        "64:ff9b::10.0.0.1",
        "2002:a9fe:a9fe::1",
        "2002:7f00:1::",
        "::10.0.0.1",
        # local-use NAT64 (RFC 8215) reaches whatever the site routes it to
        "64:ff9b:1::3408:801",
        # SIIT's IPv4-translated form (RFC 2765) of 169.254.169.254; IPv6 site-local
        # (deprecated, still routed inside some networks); IPv6 reserved space
        "::ffff:0:a9fe:a9fe",
        "fec0::1",
        "400::1",
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str) -> None:
    with pytest.raises(EndpointRefused, match="DOCKYARD_S3_ALLOWED_NETWORKS"):
        STRICT.check_address("store", address)


@pytest.mark.parametrize(
    "address", ["52.216.8.1", "2600:1f18::1", "64:ff9b::3408:801", "2002:3408:801::1"]
)
def test_public_addresses_pass(address: str) -> None:
    STRICT.check_address("store", address)


def test_a_refusal_names_the_ipv4_address_a_nat64_address_reaches() -> None:
    with pytest.raises(EndpointRefused, match=r"resolves to 169\.254\.169\.254, a link-local"):
        STRICT.check_address("store", "64:ff9b::a9fe:a9fe")


def test_an_allowed_network_admits_its_addresses_only() -> None:
    policy = EndpointPolicy.of(False, ["10.20.0.0/16"])
    policy.check_address("minio", "10.20.3.4")
    with pytest.raises(EndpointRefused):
        policy.check_address("minio", "10.21.3.4")


def test_http_needs_the_setting() -> None:
    with pytest.raises(EndpointRefused, match="DOCKYARD_S3_ALLOW_HTTP"):
        STRICT.check_scheme("http://s3.example.com")
    assert EndpointPolicy(allow_http=True).check_scheme("http://s3.example.com") == (
        "s3.example.com",
        80,
    )
    with pytest.raises(EndpointRefused):
        STRICT.check_scheme("ftp://s3.example.com")


def test_a_literal_address_endpoint_is_checked_without_resolving() -> None:
    with pytest.raises(EndpointRefused, match=r"169\.254\.169\.254"):
        asyncio.run(STRICT.check("https://169.254.169.254/latest"))


@pytest.mark.parametrize(
    "url",
    [
        # aiohttp's parser (yarl) folds these into 169.254.169.254 and then connects to
        # the literal without asking the resolver; urlsplit sees a "name".
        "https://\uff11\uff16\uff19.254.169.254/",
        "https://169\u3002254\u3002169\u3002254/",
        "https://b\u00fccher.example/",
    ],
)
def test_a_host_that_is_not_plain_ascii_is_refused(url: str) -> None:
    with pytest.raises(EndpointRefused, match="not plain ASCII"):
        STRICT.check_scheme(url)


def test_the_host_is_judged_as_aiohttp_connects_to_it() -> None:
    assert STRICT.check_scheme("https://S3.Example.COM:8443/b") == ("s3.example.com", 8443)
    assert STRICT.check_scheme("https://[::1]/") == ("::1", 443)
    assert STRICT.check_scheme("https://xn--bcher-kva.example/") == ("xn--bcher-kva.example", 443)


@pytest.mark.parametrize(
    "url",
    [
        "http://AKIAEXAMPLE:SECRETKEY@minio.example:9000/bucket",
        "http://minio.example:9000/?X-Amz-Signature=SECRETKEY#SECRETKEY",
    ],
)
def test_a_refusal_shows_the_endpoint_without_its_credentials(url: str) -> None:
    with pytest.raises(EndpointRefused) as refused:
        STRICT.check_scheme(url)

    assert "SECRETKEY" not in refused.value.message
    assert "AKIAEXAMPLE" not in refused.value.message
    assert "http://minio.example:9000/" in refused.value.message
    assert shown_url(url).startswith("http://minio.example:9000/")
