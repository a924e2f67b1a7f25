"""Serve the app: plaintext on loopback for development, TLS when configured.

In production the process refuses to start unless it speaks TLS itself or sits behind
a trusted proxy that terminates TLS (``transport.transport_security`` then refuses any
plaintext request that did not come through it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl

from aiohttp import web

from dockyard.api.app import create_app
from dockyard.api.protocol import ProblemAppRunner
from dockyard.core.kubeconfig import KubeconfigError, load_config
from dockyard.core.settings import Mode, Settings


class ConfigurationError(Exception):
    """The settings cannot be served as they are; the message says what to set."""


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """A server context (TLS 1.2 or newer) when a certificate and key are set, else None."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ConfigurationError(
            "set both DOCKYARD_TLS_CERT_FILE and DOCKYARD_TLS_KEY_FILE, or neither"
        )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror or str(exc)
        raise ConfigurationError(
            f"cannot load DOCKYARD_TLS_CERT_FILE={cert} with DOCKYARD_TLS_KEY_FILE={key}: {reason}"
        ) from None
    return context


def check_transport(settings: Settings, context: ssl.SSLContext | None) -> None:
    """Production needs HTTPS: TLS here, or a trusted proxy that terminates it."""
    if settings.mode is Mode.PRODUCTION and context is None and not settings.trusted_proxies:
        raise ConfigurationError(
            "production refuses plaintext: set DOCKYARD_TLS_CERT_FILE and "
            "DOCKYARD_TLS_KEY_FILE, or DOCKYARD_TRUSTED_PROXIES for a TLS-terminating proxy"
        )


def check_cursor_key(settings: Settings) -> None:
    """Production runs several replicas, and a list's next page may reach any of them: each
    must open the cursors the others sealed (``dockyard.api.cursors.Sealer``)."""
    if settings.mode is Mode.PRODUCTION and settings.cursor_key is None:
        raise ConfigurationError(
            "production needs DOCKYARD_CURSOR_KEY: the same secret of at least 32 "
            "characters on every API replica, which seals the list cursors"
        )


def check_kubeconfig(settings: Settings) -> None:
    """The API reads and writes through the apiserver: it needs a way there."""
    try:
        load_config(settings.kubeconfig, os.environ)
    except KubeconfigError as exc:
        raise ConfigurationError(str(exc)) from None


def run(settings: Settings, *, host: str, port: int) -> None:
    context = ssl_context(settings)
    check_transport(settings, context)
    check_cursor_key(settings)
    check_kubeconfig(settings)
    asyncio.run(_serve(create_app(settings, metrics_host=host), settings, host, port, context))


async def _serve(
    app: web.Application,
    settings: Settings,
    host: str,
    port: int,
    context: ssl.SSLContext | None,
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully (as ``web.run_app`` does)."""
    runner = ProblemAppRunner(app, settings)
    try:
        # Inside: start-up that fails part way (the database does not answer) still
        # closes what it had opened (the metrics port, Redis, the tracer).
        await runner.setup()
        await web.TCPSite(runner, host, port, ssl_context=context).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
