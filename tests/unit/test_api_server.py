"""Serving the API: TLS 1.2+ from the configured files, and no plaintext start in production."""

from __future__ import annotations

import ssl
from ipaddress import ip_network
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import ValidationError

from dockyard import cli
from dockyard.api import server
from dockyard.core import logs
from dockyard.core.settings import Mode, Settings
from dockyard.testbed.pki import CertificateAuthority, KeyPair


@pytest.fixture
def serving_pair(tmp_path: Path) -> KeyPair:
    ca = CertificateAuthority(tmp_path)
    return ca.issue(tmp_path, "api", common_name="dockyard-api", server=True)


def settings(**values: object) -> Settings:
    return Settings.model_validate(values)


def test_no_tls_files_means_plaintext() -> None:
    assert server.ssl_context(settings()) is None


def test_tls_files_give_a_tls_1_2_or_newer_context(serving_pair: KeyPair) -> None:
    context = server.ssl_context(
        settings(tls_cert_file=serving_pair.cert, tls_key_file=serving_pair.key)
    )
    assert context is not None
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_a_certificate_without_its_key_is_refused(serving_pair: KeyPair) -> None:
    with pytest.raises(server.ConfigurationError, match="DOCKYARD_TLS_KEY_FILE"):
        server.ssl_context(settings(tls_cert_file=serving_pair.cert))


def test_an_unreadable_certificate_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(server.ConfigurationError, match="cannot load DOCKYARD_TLS_CERT_FILE"):
        server.ssl_context(
            settings(tls_cert_file=tmp_path / "missing.crt", tls_key_file=tmp_path / "x.key")
        )


def test_production_without_tls_or_a_trusted_proxy_is_refused() -> None:
    with pytest.raises(server.ConfigurationError) as refused:
        server.check_transport(settings(mode=Mode.PRODUCTION), None)
    assert "\n" not in str(refused.value)
    assert "DOCKYARD_TLS_CERT_FILE" in str(refused.value)
    assert "DOCKYARD_TRUSTED_PROXIES" in str(refused.value)


def test_production_may_run_plaintext_behind_a_trusted_proxy() -> None:
    proxied = settings(mode=Mode.PRODUCTION, trusted_proxies=[ip_network("10.0.0.0/8")])
    server.check_transport(proxied, None)


def test_development_may_run_plaintext() -> None:
    server.check_transport(settings(), None)


def test_production_without_a_cursor_key_is_refused() -> None:
    with pytest.raises(server.ConfigurationError, match="needs DOCKYARD_CURSOR_KEY"):
        server.check_cursor_key(settings(mode=Mode.PRODUCTION))
    server.check_cursor_key(settings(mode=Mode.PRODUCTION, cursor_key="c" * 32))
    server.check_cursor_key(settings())


def test_a_cursor_key_shorter_than_32_characters_is_refused() -> None:
    with pytest.raises(ValidationError, match="cursor_key"):
        settings(cursor_key="short")


def test_dockyard_api_refuses_to_start_in_production_without_tls(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("DOCKYARD_TLS_CERT_FILE", "DOCKYARD_TLS_KEY_FILE", "DOCKYARD_TRUSTED_PROXIES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKYARD_MODE", "production")
    monkeypatch.setattr(logs, "configure", lambda *args: None)

    def must_not_serve(*args: object, **kwargs: object) -> None:
        raise AssertionError("the server started")

    monkeypatch.setattr(web, "run_app", must_not_serve)
    assert cli.main(["api", "--port", "8443"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("dockyard api: production refuses plaintext")
    assert err.count("\n") == 1
