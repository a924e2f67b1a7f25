"""The app factory: routes, middlewares and the resources held for the app's lifetime.

Pools and clients are ``cleanup_ctx`` generators, so they are created when the app
starts on its event loop and closed when it stops, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from aiohttp import web

from dockyard.api import keys
from dockyard.api.openapi import OperationRegistry, build_document
from dockyard.api.routes import health, meta
from dockyard.core import db
from dockyard.core.kube import KubeClient, load_config
from dockyard.core.settings import Settings


def registry() -> OperationRegistry:
    """Every operation of the API, in a stable order."""
    ops = OperationRegistry()
    for module in (health, meta):
        module.register(ops)
    return ops


async def _database(app: web.Application) -> AsyncIterator[None]:
    async with db.pool_context(app[keys.SETTINGS]) as pool:
        app[keys.DB_POOL] = pool
        yield


async def _kubernetes(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    client = KubeClient.connect(load_config(settings.kubeconfig, os.environ))
    app[keys.KUBE] = client
    yield
    await client.close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(client_max_size=1024 * 1024)
    app[keys.SETTINGS] = settings
    ops = registry()
    ops.install(app)
    app[keys.OPENAPI_DOCUMENT] = build_document(ops.operations)
    app.cleanup_ctx.extend([_database, _kubernetes])
    return app
