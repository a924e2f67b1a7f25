"""``/api/docs``: Swagger UI for ``/api/v1/openapi.json``, served from the installed bundle.

The page and its assets come from the swagger-ui-bundle-v2 package through this app
(no CDN), and the page's content security policy allows scripts, styles and requests
from this origin only, so the UI works on an air-gapped cluster and cannot be made to
load someone else's code.

These are plain routes, not ``Operation``s: the OpenAPI document is the contract with
API clients, and an HTML page and a vendored JavaScript bundle are not part of it
(declaring them would put HTML responses in the contract and make a Swagger UI upgrade
look like an API change to the compatibility check). Routes without an ``Operation``
need no token; the UI then calls the API with whatever token the person authorizes.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle  # type: ignore[import-untyped]  # ships no type information
from aiohttp import web

PAGE_PATH = "/api/docs"
ASSETS_PATH = "/api/docs/assets"
SPEC_URL = "/api/v1/openapi.json"

# 'self' everywhere; images may also be data: URIs because swagger-ui.css embeds its
# icons that way (an image cannot run code). No inline script or style is needed: the
# start-up code is a file of its own.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

# Only the files the page loads are served, not the bundle's whole directory (its own
# index.html and initializer point at the public petstore).
BUNDLED_ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
INITIALIZER = "dockyard-docs.js"

PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Dockyard API</title>
  <link rel="stylesheet" href="{ASSETS_PATH}/swagger-ui.css">
  <link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui" data-spec-url="{SPEC_URL}"></div>
  <script src="{ASSETS_PATH}/swagger-ui-bundle.js"></script>
  <script src="{ASSETS_PATH}/{INITIALIZER}"></script>
</body>
</html>
"""

# validatorUrl null: by default Swagger UI sends the document to validator.swagger.io.
INITIALIZER_JS = """window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.specUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "BaseLayout"
  });
});
"""


def bundle_directory() -> Path:
    """Where the installed package keeps the Swagger UI distribution."""
    return Path(str(swagger_ui_bundle.swagger_ui_path))


class DocsUI:
    """The page and its assets, read from one bundle directory."""

    def __init__(self, directory: Path) -> None:
        missing = [name for name in BUNDLED_ASSETS if not (directory / name).is_file()]
        if missing:
            raise RuntimeError(f"the Swagger UI bundle in {directory} lacks {missing}")
        self.directory = directory

    async def page(self, _: web.Request) -> web.Response:
        return web.Response(
            text=PAGE,
            content_type="text/html",
            charset="utf-8",
            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
        )

    async def asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        headers = {**SECURITY_HEADERS, "Cache-Control": "public, max-age=3600"}
        if name == INITIALIZER:
            return web.Response(
                text=INITIALIZER_JS, content_type="text/javascript", headers=headers
            )
        content_type = BUNDLED_ASSETS.get(name)
        if content_type is None:
            raise web.HTTPNotFound()
        # FileResponse reads and sends in a thread pool, off the event loop.
        return web.FileResponse(
            self.directory / name, headers={**headers, "Content-Type": content_type}
        )


def install(app: web.Application, directory: Path | None = None) -> None:
    """Add the docs routes (public, outside the OpenAPI document) to ``app``."""
    ui = DocsUI(directory or bundle_directory())
    app.router.add_get(PAGE_PATH, ui.page, name="docs.page")
    app.router.add_get(ASSETS_PATH + "/{name}", ui.asset, name="docs.asset")
