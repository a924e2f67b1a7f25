"""The app factory: routes, middlewares and the resources held for the app's lifetime.

Pools and clients are ``cleanup_ctx`` generators, so they are created when the app
starts on its event loop and closed when it stops, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

from aiohttp import web

from dockyard.api import keys, middlewares
from dockyard.api.auth import Authenticator, Authorizer
from dockyard.api.openapi import OperationRegistry, build_document
from dockyard.api.routes import health, me, meta
from dockyard.core import db
from dockyard.core.kube import KubeClient, load_config
from dockyard.core.settings import Settings


def registry() -> OperationRegistry:
    """Every operation of the API, in a stable order."""
    ops = OperationRegistry()
    for module in (health, meta, me):
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
    app[keys.AUTHENTICATOR] = Authenticator(client, ttl=settings.auth_cache_ttl)
    app[keys.AUTHORIZER] = Authorizer(client, ttl=settings.authz_cache_ttl)
    yield
    await client.close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            middlewares.request_context,
            middlewares.problems,
            middlewares.authenticate_and_authorize,
        ],
    )
    app[keys.SETTINGS] = settings
    ops = registry()
    ops.install(app)
    app[keys.OPERATIONS] = {op.operation_id: op for op in ops.operations}
    app[keys.OPENAPI_DOCUMENT] = build_document(ops.operations)
    app.on_response_prepare.append(middlewares.add_request_id_header)
    app.cleanup_ctx.extend([_database, _kubernetes])
    return app
