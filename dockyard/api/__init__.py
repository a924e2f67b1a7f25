"""The REST API (aiohttp): app factory, routes by resource, middlewares and the OpenAPI document."""
